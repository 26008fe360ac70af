//! The `tls` checker: handshakes with `host:port` (through selfmon, which verifies the chain against the system's
//! roots and the check's `ca_file`) and judges the server's certificate: trusted for the name asked, covering every
//! name expected, and how many days it has left.
//!
//! ```toml
//! [[check]]
//! name = "website-certificate"
//! plugin = "tls"
//! target = "example.com:443"       # or https://example.com
//! interval = "1h"
//! [check.config]
//! days_degraded = 21
//! days_unhealthy = 7
//! names = ["example.com", "www.example.com"]
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use selfmon_sdk::prelude::*;
use selfmon_sdk::tls::{self, Certificate, Handshake};

const DAY: f64 = 86_400.0;

#[derive(Debug, Deserialize)]
pub struct Config {
    server_name: Option<String>,
    names: Vec<String>,
    days_degraded: f64,
    days_unhealthy: f64,
    verify: bool,
    #[serde(with = "selfmon_sdk::duration")]
    degraded_after: Duration,
}

pub struct Tls;

impl Checker for Tls {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "tls",
            env!("CARGO_PKG_VERSION"),
            "Checks a server's TLS certificate: trusted, covering its names, and days to expiry",
        )
        .config(Setting::text("server_name", "The name asked for (SNI) and verified [default: the target's host]"))
        .config(
            Setting::list("names", "Names the certificate must cover [default: the server name]")
                .default(Vec::<String>::new()),
        )
        .config(Setting::number("days_degraded", "Report degraded with fewer days than this left").default(21))
        .config(Setting::number("days_unhealthy", "Report unhealthy with fewer days than this left").default(7))
        .config(Setting::boolean("verify", "An untrusted chain is unhealthy (false: report it only)").default(true))
        .config(Setting::duration("degraded_after", "Report degraded when the handshake takes longer").default("2s"))
    }

    fn validate(config: &Config, ctx: &Context) -> Result<(), Error> {
        address(ctx)?;
        if config.days_unhealthy < 0.0 || config.days_degraded < config.days_unhealthy {
            return Err("`days_degraded` must be at least `days_unhealthy`, and both 0 or more".into());
        }
        if config.names.iter().any(|n| n.is_empty()) {
            return Err("`names` holds an empty name".into());
        }
        if config.server_name.as_deref().is_some_and(|name| name.trim().is_empty()) {
            return Err("`server_name` is empty: leave it out to ask for the target's host".into());
        }
        Ok(())
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        let (address, host) = address(ctx)?;
        let server_name = config.server_name.clone().unwrap_or(host);
        let handshake = match tls::inspect(&address, &server_name, ctx.time_left()) {
            Ok(handshake) => handshake,
            Err(why) => return Ok(CheckResult::unhealthy(why).detail("address", &address)),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(judge(&config, &server_name, &handshake, i64::try_from(now).unwrap_or(i64::MAX)).detail("address", &address))
    }
}

fn judge(config: &Config, server_name: &str, handshake: &Handshake, now: i64) -> CheckResult {
    let Some(leaf) = handshake.chain.first() else {
        return CheckResult::unhealthy(format!("{server_name}: the server presented no certificate"));
    };
    if leaf.subject.starts_with("(unreadable") {
        return CheckResult::unhealthy(format!(
            "{server_name}: the server's certificate cannot be read {}",
            leaf.subject
        ))
        .detail("protocol", &handshake.protocol);
    }
    let days_left = (leaf.not_after - now) as f64 / DAY;
    let until = date(leaf.not_after);
    let issuer = common_name(&leaf.issuer);
    let head = format!("{} certificate for {server_name}", handshake.protocol);
    let expected: Vec<&str> =
        if config.names.is_empty() { vec![server_name] } else { config.names.iter().map(String::as_str).collect() };
    let uncovered: Vec<&str> = expected.iter().copied().filter(|name| !covered(leaf, name)).collect();
    let result = if days_left < 0.0 {
        CheckResult::unhealthy(format!("{head} expired {:.0} days ago ({until})", -days_left))
    } else if let (Some(why), true) = (&handshake.untrusted, config.verify) {
        CheckResult::unhealthy(format!("{head} is not trusted: {why}"))
    } else if !uncovered.is_empty() {
        CheckResult::unhealthy(format!("{head} does not cover {}", quoted(&uncovered)))
    } else if days_left < config.days_unhealthy {
        CheckResult::unhealthy(format!(
            "{head} expires in {:.1} days ({until}), fewer than `days_unhealthy` ({})",
            days_left, config.days_unhealthy
        ))
    } else if days_left < config.days_degraded {
        CheckResult::degraded(format!(
            "{head} expires in {:.1} days ({until}), fewer than `days_degraded` ({})",
            days_left, config.days_degraded
        ))
    } else if u64::from(handshake.handshake_ms) > config.degraded_after.as_millis() as u64 {
        CheckResult::degraded(format!(
            "{head} valid {:.0} more days, handshake slower than {} ms",
            days_left,
            config.degraded_after.as_millis()
        ))
    } else {
        CheckResult::healthy(format!("{head} valid {:.0} more days (until {until}), issued by {issuer}", days_left))
    };
    let mut result = result
        .detail("subject", &leaf.subject)
        .detail("issuer", &leaf.issuer)
        .detail("not_after", &until)
        .detail("names", leaf.dns_names.iter().chain(&leaf.ip_addresses).cloned().collect::<Vec<_>>().join(", "))
        .detail("protocol", &handshake.protocol)
        .detail("cipher", &handshake.cipher)
        .metric("days_to_expiry", days_left)
        .metric("certificate_expiry_timestamp_seconds", leaf.not_after as f64)
        .metric("handshake_seconds", f64::from(handshake.handshake_ms) / 1000.0)
        .metric("chain_length", handshake.chain.len() as f64)
        .metric("trusted", if handshake.untrusted.is_none() { 1.0 } else { 0.0 })
        .metric("response_time_seconds", f64::from(handshake.handshake_ms) / 1000.0);
    if let Some(why) = &handshake.untrusted {
        result = result.detail("untrusted", why);
    }
    result
}

/// Whether the certificate names `name`: a DNS name (wildcards as browsers read them) or an IP address.
fn covered(leaf: &Certificate, name: &str) -> bool {
    leaf.dns_names.iter().any(|pattern| tls::covers(pattern, name)) || leaf.ip_addresses.iter().any(|ip| ip == name)
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// `CN=R3, O=Let's Encrypt, C=US` -> `R3`; the whole name when it has no common name.
fn common_name(name: &str) -> String {
    name.split(", ").find_map(|part| part.strip_prefix("CN=")).map_or_else(|| name.to_string(), str::to_string)
}

/// A Unix time as a UTC date, `2027-02-10`.
fn date(unix: i64) -> String {
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `host:port` to connect to and the host: from `host:port`, or an `https://` URL (port 443 unless given).
fn address(ctx: &Context) -> Result<(String, String), Error> {
    let target = ctx.target().ok_or("set `target` to host:port or an https:// URL")?;
    address_of(target).ok_or_else(|| {
        // A URL is not quoted: it may carry a password.
        let shown = if target.contains("://") { String::new() } else { format!(" `{target}`") };
        format!("`target`{shown} is not host:port or an https:// URL").into()
    })
}

/// `host:port` (`[v6]:port`) and the host without brackets, from `host:port` or an `https://` URL with or without a
/// port (another scheme's URL would be granted another port than the one asked).
fn address_of(target: &str) -> Option<(String, String)> {
    let (rest, default_port) = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (rest, Some(443)),
        Some(_) => return None,
        None => (target, None),
    };
    split_authority(rest, default_port)
}

/// The authority `rest` starts with, as `host:port` and the host, the port `default_port` unless given.
fn split_authority(rest: &str, default_port: Option<u16>) -> Option<(String, String)> {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, after) = bracketed.split_once(']')?;
            (ip, if after.is_empty() { None } else { Some(after.strip_prefix(':')?) })
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(port) => port.parse::<u16>().ok()?,
        None => default_port?,
    };
    if host.is_empty() || (host.contains([':', '[', ']', '@']) && !authority.starts_with('[')) {
        return None;
    }
    let shown = if authority.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    Some((shown, host.to_string()))
}

selfmon_sdk::export_checker!(Tls);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_names_read_as_people_write_them() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_800_000_000), "2027-01-15");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(common_name("CN=R3, O=Let's Encrypt, C=US"), "R3");
        assert_eq!(common_name("O=Example"), "O=Example");
    }

    #[test]
    fn targets_are_host_port_or_urls_with_ipv6_in_brackets() {
        let of = |t: &str| address_of(t).map(|(address, host)| format!("{address} {host}"));
        assert_eq!(of("example.com:8443").as_deref(), Some("example.com:8443 example.com"));
        assert_eq!(of("https://example.com/health").as_deref(), Some("example.com:443 example.com"));
        assert_eq!(of("https://example.com:8443?x").as_deref(), Some("example.com:8443 example.com"));
        assert_eq!(of("https://[2001:db8::1]").as_deref(), Some("[2001:db8::1]:443 2001:db8::1"));
        assert_eq!(of("[::1]:8443").as_deref(), Some("[::1]:8443 ::1"));
        for wrong in [
            "example.com",
            "example.com:https",
            "2001:db8::1:443",
            "[::1]8443",
            "https://:443",
            "[::1",
            "http://example.com",
            "ftp://example.com:21",
        ] {
            assert_eq!(of(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn an_unreadable_certificate_is_unhealthy() {
        let leaf = Certificate {
            subject: "(unreadable: not DER)".into(),
            issuer: String::new(),
            not_before: 0,
            not_after: 0,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            der: vec![1, 2, 3],
        };
        let handshake = Handshake {
            chain: vec![leaf],
            untrusted: None,
            protocol: "TLSv1.3".into(),
            cipher: String::new(),
            handshake_ms: 1,
        };
        let config = Config {
            names: Vec::new(),
            server_name: None,
            days_degraded: 21.0,
            days_unhealthy: 7.0,
            verify: false,
            degraded_after: std::time::Duration::from_secs(2),
        };
        let result = judge(&config, "example.com", &handshake, 0);
        assert_eq!(result.summary, "example.com: the server's certificate cannot be read (unreadable: not DER)");
    }
}
