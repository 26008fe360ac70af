//! The `dns` checker: looks up the target's records of one type (selfmon makes the lookup, through the contract's
//! `dns` import) through the system's resolver or a named server, and judges the answers: present, and holding
//! every expected value.
//!
//! ```toml
//! [[check]]
//! name = "mail-exchanger"
//! plugin = "dns"
//! target = "example.com"
//! allow = ["1.1.1.1:53"]            # the named server must be granted too
//! [check.config]
//! record = "MX"
//! expect = ["10 mail.example.com."]
//! server = "1.1.1.1"
//! ```

use std::time::Duration;

use selfmon_sdk::dns::{self, Lookup};
use selfmon_sdk::prelude::*;

/// The record types selfmon looks up.
const TYPES: [&str; 10] = ["A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "CAA", "PTR"];

#[derive(Debug, Deserialize)]
pub struct Config {
    record: String,
    expect: Vec<String>,
    server: Option<String>,
    #[serde(with = "selfmon_sdk::duration")]
    degraded_after: Duration,
}

pub struct Dns;

impl Checker for Dns {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "dns",
            env!("CARGO_PKG_VERSION"),
            "Looks up a name's records of one type and checks the answers hold what is expected",
        )
        .config(
            Setting::text("record", "The record type: A, AAAA, CNAME, MX, TXT, NS, SOA, SRV, CAA or PTR").default("A"),
        )
        .config(
            Setting::list("expect", "Values every one of which must be among the answers, as a zone file writes them")
                .default(Vec::<String>::new()),
        )
        .config(Setting::text(
            "server",
            "A DNS server to ask (address or address:port; grant it with `allow`) [default: the system's resolver]",
        ))
        .config(Setting::duration("degraded_after", "Report degraded when the answer takes longer").default("1s"))
    }

    fn validate(config: &Config, ctx: &Context) -> Result<(), Error> {
        name(ctx)?;
        if !TYPES.contains(&config.record.to_ascii_uppercase().as_str()) {
            return Err(format!("`record` `{}` is not one of {}", config.record, TYPES.join(", ")).into());
        }
        if config.expect.iter().any(|e| e.trim().is_empty()) {
            return Err("`expect` holds an empty value".into());
        }
        Ok(())
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        let name = name(ctx)?;
        let record = config.record.to_ascii_uppercase();
        let lookup = match dns::query(&name, &record, config.server.as_deref(), ctx.time_left()) {
            Ok(lookup) => lookup,
            Err(why) => return Ok(CheckResult::unhealthy(format!("{record} {name}: {why}"))),
        };
        Ok(judge(&config, &name, &record, &lookup))
    }
}

fn judge(config: &Config, name: &str, record: &str, lookup: &Lookup) -> CheckResult {
    let values: Vec<&str> =
        lookup.answers.iter().filter(|a| a.record_type == record).map(|a| a.data.as_str()).collect();
    let head = format!("{record} {name} from {} in {} ms", lookup.server, lookup.took_ms);
    let missing: Vec<&str> =
        config.expect.iter().map(String::as_str).filter(|want| !values.iter().any(|v| same(record, v, want))).collect();
    let shown = if values.is_empty() { "nothing".to_string() } else { values.join(", ") };
    let result = if lookup.code != "NOERROR" {
        CheckResult::unhealthy(format!("{head}: {}", lookup.code))
    } else if values.is_empty() {
        CheckResult::unhealthy(format!("{head}: no {record} records"))
    } else if !missing.is_empty() {
        let missing: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
        CheckResult::unhealthy(format!("{head}: {shown}; missing {}", missing.join(", ")))
    } else if u128::from(lookup.took_ms) > config.degraded_after.as_millis() {
        CheckResult::degraded(format!("{head}: {shown} (slower than {} ms)", config.degraded_after.as_millis()))
    } else {
        CheckResult::healthy(format!("{head}: {shown}"))
    };
    let ttl = lookup.answers.iter().filter(|a| a.record_type == record).map(|a| a.ttl).min();
    let mut result = result
        .detail("server", &lookup.server)
        .detail("code", &lookup.code)
        .metric("response_time_seconds", f64::from(lookup.took_ms) / 1000.0)
        .metric("answers", values.len() as f64);
    if let Some(ttl) = ttl {
        result = result.metric("ttl_seconds", f64::from(ttl));
    }
    result
}

/// Equal as DNS data: text (TXT, CAA) exactly, inside any quotes; names and addresses ignoring case and a final dot.
fn same(record: &str, answer: &str, expected: &str) -> bool {
    let text = |s: &str| s.trim().trim_matches('"').to_string();
    if matches!(record, "TXT" | "CAA") {
        return text(answer) == text(expected);
    }
    let name = |s: &str| text(s).trim_end_matches('.').to_ascii_lowercase();
    name(answer) == name(expected)
}

/// The name looked up: the check's target, a host name (a port, if any, is left out).
fn name(ctx: &Context) -> Result<String, Error> {
    let target = ctx.target().ok_or("set `target` to the name to look up")?;
    name_of(target).ok_or_else(|| {
        format!("`target` `{target}` is not a name to look up (for a PTR record, the in-addr.arpa or ip6.arpa name)")
            .into()
    })
}

fn name_of(target: &str) -> Option<String> {
    // An address (IPv6 ones have colons of their own) is not a name.
    if target.starts_with('[') || target.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let name = match target.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        Some(_) => return None,
        None => target,
    };
    let address = name.parse::<std::net::IpAddr>().is_ok();
    (!address && !name.is_empty() && !name.contains(['/', ':', ' '])).then(|| name.to_string())
}

selfmon_sdk::export_checker!(Dns);

#[cfg(test)]
mod tests {
    use super::{name_of, same};

    #[test]
    fn answers_compare_as_dns_data() {
        assert!(same("MX", "10 mail.example.com.", "10 MAIL.example.com"));
        assert!(same("CNAME", "\"x.example.\"", "x.example"));
        assert!(same("TXT", "v=spf1 -all", "\"v=spf1 -all\""));
        // Text is compared as written: a verification token's case matters, and so does a final dot.
        assert!(!same("TXT", "token=AbC", "token=abc"));
        assert!(!same("TXT", "ends.", "ends"));
        assert!(!same("MX", "10 mail.example.com.", "20 mail.example.com."));
    }

    #[test]
    fn the_target_is_a_name_with_or_without_a_port() {
        assert_eq!(name_of("example.com").as_deref(), Some("example.com"));
        assert_eq!(name_of("example.com:53").as_deref(), Some("example.com"));
        assert_eq!(name_of("_sip._tcp.example.com").as_deref(), Some("_sip._tcp.example.com"));
        for address in
            ["::1", "[::1]", "2001:db8::53", "192.0.2.1", "192.0.2.1:53", "[::1]:53", "example.com:x", "", "https://x/"]
        {
            assert_eq!(name_of(address), None, "{address}");
        }
    }
}
