//! Network grants: which hosts and ports one configured check may reach.
//!
//! A check may reach its own `target` and the entries of its `allow` list, nothing else. HTTP(S) requests are
//! matched by host name in the `wasi:http` send hook (the host resolves and connects, so wildcards work); raw TCP
//! connections arrive as IP addresses at the socket check, so named grants are resolved then and compared by
//! address (wildcard names cannot be resolved and grant nothing over raw TCP).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The network a check may reach. Empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    entries: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    host: HostPattern,
    port: Ports,
}

/// What a grant lets a check do with its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    One(u16),
    /// `host:*`.
    Every,
    /// A bare host as a check's target (`target = "example.com"`): name lookups, no connections.
    Lookups,
}

impl Ports {
    fn connect(self, port: u16) -> bool {
        match self {
            Self::One(granted) => granted == port,
            Self::Every => true,
            Self::Lookups => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Name(String),
    /// `*.example.com`: any subdomain, stored as `.example.com`.
    Subdomains(String),
    Ip(IpAddr),
}

impl Grants {
    /// The grants of a check: its target (a URL, `host:port`, or a bare host, which grants its name lookups only)
    /// and its `allow` entries (`host:port`, `host:*`, `*.example.com:443`).
    pub fn for_check(target: Option<&str>, allow: &[String]) -> Result<Self, String> {
        let mut entries = Vec::new();
        if let Some(target) = target {
            entries.push(Grant::target(target).map_err(|e| format!("`target` {e}"))?);
        }
        for entry in allow {
            entries.push(Grant::allow(entry).map_err(|e| format!("`allow` entry {e}"))?);
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a name lookup of `name` is granted: a host name a grant names exactly (or an IP address literal).
    pub fn names(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|grant| match &grant.host {
            HostPattern::Name(granted) => *granted == name,
            HostPattern::Ip(ip) => name.parse::<IpAddr>().is_ok_and(|n| n == *ip),
            HostPattern::Subdomains(_) => false,
        })
    }

    /// Whether an HTTP request to `host:port` is granted.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        self.entries.iter().any(|grant| {
            grant.port.connect(port)
                && match &grant.host {
                    HostPattern::Name(name) => *name == host,
                    HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()),
                    HostPattern::Ip(granted) => ip == Some(*granted),
                }
        })
    }

    /// Whether a TCP connection to `address` is granted, resolving named grants as needed.
    pub async fn allows_socket(&self, address: SocketAddr) -> bool {
        for grant in &self.entries {
            if !grant.port.connect(address.port()) {
                continue;
            }
            match &grant.host {
                HostPattern::Ip(ip) if *ip == address.ip() => return true,
                HostPattern::Name(name) => {
                    if let Ok(mut resolved) = tokio::net::lookup_host((name.as_str(), address.port())).await
                        && resolved.any(|a| a.ip() == address.ip())
                    {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
    }
}

impl Grant {
    fn target(target: &str) -> Result<Self, String> {
        if let Some((scheme, _)) = target.split_once("://") {
            let uri: http::Uri = target.parse().map_err(|e| format!("`{target}` is not a valid URL: {e}"))?;
            let authority = uri.authority().ok_or_else(|| format!("`{target}` has no host"))?;
            let port = match authority.port_u16() {
                Some(port) => port,
                None => default_port(scheme)
                    .ok_or_else(|| format!("`{target}` has no port and `{scheme}` has no default port"))?,
            };
            return Ok(Self { host: HostPattern::parse(authority.host())?, port: Ports::One(port) });
        }
        // A bare host (a name to look up, as a `dns` check's target) grants lookups of it, and no connection. An IPv6
        // address is bare only in brackets: `2001:db8::1:443` is host `2001:db8::1`, port 443, as it always was.
        let bracketed = target.starts_with('[') && target.ends_with(']');
        if !target.contains(':') || bracketed {
            return Ok(Self { host: HostPattern::parse(target)?, port: Ports::Lookups });
        }
        let grant = Self::allow(target)?;
        if grant.port == Ports::Every {
            return Err(format!("`{target}` must be a URL, host:port or a host"));
        }
        Ok(grant)
    }

    fn allow(entry: &str) -> Result<Self, String> {
        let (host, port) = entry
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .ok_or_else(|| format!("`{entry}` must be host:port or host:*"))?;
        let port = match port {
            "*" => Ports::Every,
            port => Ports::One(port.parse().map_err(|_| format!("`{entry}`: `{port}` is not a port"))?),
        };
        Ok(Self { host: HostPattern::parse(host)?, port })
    }
}

impl HostPattern {
    fn parse(host: &str) -> Result<Self, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if let Ok(ip) = host.parse() {
            return Ok(Self::Ip(ip));
        }
        let (pattern, name) = match host.strip_prefix("*.") {
            Some(rest) => (Self::Subdomains(format!(".{rest}")), rest.to_string()),
            None => (Self::Name(host.clone()), host.clone()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if valid { Ok(pattern) } else { Err(format!("`{host}` is not a host name or IP address")) }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        "postgres" | "postgresql" => Some(5432),
        "redis" => Some(6379),
        _ => None,
    }
}

impl Grants {
    /// Each grant as an operator writes it: `db.internal:5432`, `*.example.com:443`, `[::1]:*`.
    pub fn entries(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|grant| {
                let host = match &grant.host {
                    HostPattern::Name(name) => name.clone(),
                    HostPattern::Subdomains(suffix) => format!("*{suffix}"),
                    HostPattern::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
                    HostPattern::Ip(ip) => ip.to_string(),
                };
                match grant.port {
                    Ports::One(port) => format!("{host}:{port}"),
                    Ports::Every => format!("{host}:*"),
                    Ports::Lookups => format!("{host} (lookups)"),
                }
            })
            .collect()
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("no network");
        }
        f.write_str(&self.entries().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(target: Option<&str>, allow: &[&str]) -> Grants {
        Grants::for_check(target, &allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_target_grants_its_own_host_and_port_only() {
        let g = grants(Some("https://API.example.com/v1/models"), &[]);
        assert!(g.allows("api.example.com", 443));
        assert!(!g.allows("api.example.com", 80));
        assert!(!g.allows("example.com", 443));
        assert!(grants(Some("http://127.0.0.1:8080/health"), &[]).allows("127.0.0.1", 8080));
        assert!(grants(Some("postgres://u@db:6543/x"), &[]).allows("db", 6543));
        assert!(grants(Some("db.internal:5432"), &[]).allows("db.internal", 5432));
        assert!(grants(Some("http://[::1]:9000/"), &[]).allows("[::1]", 9000));
    }

    #[test]
    fn allow_entries_support_any_port_and_subdomains() {
        let g = grants(None, &["cdn.example.com:*", "*.internal:443"]);
        assert!(g.allows("cdn.example.com", 8443));
        assert!(g.allows("a.b.internal", 443));
        assert!(!g.allows("internal", 443));
        assert!(!g.allows("a.internal", 80));
        assert_eq!(g.to_string(), "cdn.example.com:*, *.internal:443");
        assert!(Grants::default().is_empty());
        assert!(!Grants::default().allows("localhost", 80));
    }

    #[test]
    fn bad_grants_say_what_is_wrong() {
        let err = |t: Option<&str>, a: &[&str]| {
            Grants::for_check(t, &a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err()
        };
        assert_eq!(err(Some("example.com:*"), &[]), "`target` `example.com:*` must be a URL, host:port or a host");
        assert_eq!(err(Some("example.com:abc"), &[]), "`target` `example.com:abc`: `abc` is not a port");
        // A bare host grants its name lookups, and no connection at all.
        let bare = grants(Some("example.com"), &[]);
        assert!(bare.names("example.com") && !bare.names("other.example.com"));
        assert!(!bare.allows("example.com", 53) && !bare.allows("example.com", 443));
        assert_eq!(bare.to_string(), "example.com (lookups)");
        assert!(grants(Some("[::1]"), &[]).names("::1") && !grants(Some("[::1]"), &[]).allows("::1", 80));
        // Without brackets the last colon still starts the port.
        let v6 = grants(Some("2001:db8::1:443"), &[]);
        assert!(v6.allows("2001:db8::1", 443) && !v6.allows("2001:db8::1", 80));
        assert_eq!(err(Some("ftp://x.org/"), &[]), "`target` `ftp://x.org/` has no port and `ftp` has no default port");
        assert_eq!(err(None, &["db:abc"]), "`allow` entry `db:abc`: `abc` is not a port");
        assert_eq!(err(None, &["bad host:1"]), "`allow` entry `bad host` is not a host name or IP address");
    }

    #[test]
    fn only_granted_names_may_be_looked_up() {
        let g = grants(Some("https://api.example.com/"), &["db.internal:5432", "*.cdn.net:443", "10.0.0.7:*"]);
        assert!(g.names("api.example.com") && g.names("DB.internal.") && g.names("10.0.0.7"));
        assert!(!g.names("secret.attacker.example") && !g.names("x.cdn.net") && !g.names("example.com"));
    }

    #[tokio::test]
    async fn sockets_match_by_address_with_names_resolved() {
        let g = grants(Some("localhost:5432"), &["10.0.0.7:*"]);
        assert!(g.allows_socket("127.0.0.1:5432".parse().unwrap()).await);
        assert!(!g.allows_socket("127.0.0.1:5433".parse().unwrap()).await);
        assert!(g.allows_socket("10.0.0.7:22".parse().unwrap()).await);
        assert!(!g.allows_socket("10.0.0.8:22".parse().unwrap()).await);
    }
}
