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

use std::net::IpAddr;
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
        if let Some(server) = &config.server {
            let address = server.parse::<IpAddr>().is_ok()
                || server.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
                || server.parse::<std::net::SocketAddr>().is_ok();
            if !address {
                return Err(format!(
                    "`server` `{server}` is not an IP address, with a port or not (a DNS server is given by address)"
                )
                .into());
            }
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

/// Equal as DNS data: addresses as addresses (`2001:db8:0::10` is `2001:db8::10`); TXT as a zone file writes it
/// (`"a" "b"`), or a one-string record's text without its quotes; CAA exactly; names ignoring case and a final dot.
fn same(record: &str, answer: &str, expected: &str) -> bool {
    let (answer, expected) = (answer.trim(), expected.trim());
    match record {
        "A" | "AAAA" => match (answer.parse::<IpAddr>(), expected.parse::<IpAddr>()) {
            (Ok(answer), Ok(expected)) => answer == expected,
            _ => answer == expected,
        },
        "TXT" => answer == expected || unquoted(answer).as_deref() == Some(expected),
        "CAA" => answer == expected,
        _ => {
            let name = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
            name(answer) == name(expected)
        }
    }
}

/// The text of a TXT answer of one string: `"say \"hi\""` is `say "hi"`.
fn unquoted(answer: &str) -> Option<String> {
    let mut chars = answer.strip_prefix('"')?.strip_suffix('"')?.chars();
    let mut text = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?),
            // Another string begins: a record of several.
            '"' => return None,
            c => text.push(c),
        }
    }
    Some(text)
}

/// The name whose PTR record holds `address`'s name: `192.0.2.1` -> `1.2.0.192.in-addr.arpa`.
fn reverse_name(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let nibbles: Vec<String> =
                v6.octets().iter().rev().flat_map(|byte| [byte & 0xf, byte >> 4]).map(|n| format!("{n:x}")).collect();
            format!("{}.ip6.arpa", nibbles.join("."))
        }
    }
}

/// The name looked up: the check's target, a host name (a port, if any, is left out).
fn name(ctx: &Context) -> Result<String, Error> {
    let target = ctx.target().ok_or("set `target` to the name to look up")?;
    if let Ok(address) = target.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Err(format!(
            "`target` `{target}` is an address: a DNS check looks up a name (for its PTR record, `{}`)",
            reverse_name(address)
        )
        .into());
    }
    name_of(target).ok_or_else(|| format!("`target` `{target}` is not a name to look up").into())
}

fn name_of(target: &str) -> Option<String> {
    // An address (IPv6 ones have colons of their own) is not a name.
    if target.starts_with('[') || target.parse::<IpAddr>().is_ok() {
        return None;
    }
    let name = match target.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        Some(_) => return None,
        None => target,
    };
    let address = name.parse::<IpAddr>().is_ok();
    (!address && !name.is_empty() && !name.contains(['/', ':', ' '])).then(|| name.to_string())
}

selfmon_sdk::export_checker!(Dns);

#[cfg(test)]
mod tests {
    use super::{name_of, reverse_name, same};

    #[test]
    fn answers_compare_as_dns_data() {
        assert!(same("MX", "10 mail.example.com.", "10 MAIL.example.com"));
        assert!(same("CNAME", "x.example.", "X.example"));
        assert!(same("AAAA", "2001:db8::10", "2001:db8:0::10"));
        assert!(!same("AAAA", "2001:db8::10", "2001:db8::11"));
        assert!(same("TXT", "\"v=spf1 -all\"", "v=spf1 -all"));
        assert!(same("TXT", "\"v=spf1 -all\"", "\"v=spf1 -all\""));
        assert!(same("TXT", "\"hello world\" \"second\"", "\"hello world\" \"second\""));
        assert!(!same("TXT", "\"hello world\" \"second\"", "hello worldsecond"));
        assert!(same("TXT", r#""say \"hi\"""#, "say \"hi\""));
        // Text is compared as written: a verification token's case matters, and so does a final dot.
        assert!(!same("TXT", "\"token=AbC\"", "token=abc"));
        assert!(!same("TXT", "\"ends.\"", "ends"));
        assert!(!same("MX", "10 mail.example.com.", "20 mail.example.com."));
    }

    #[test]
    fn addresses_have_reverse_names() {
        assert_eq!(reverse_name("192.0.2.1".parse().unwrap()), "1.2.0.192.in-addr.arpa");
        let v6 = reverse_name("2001:db8::567:89ab".parse().unwrap());
        assert_eq!(v6, "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
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
