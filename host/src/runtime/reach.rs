//! Which addresses an outgoing request may connect to.
//!
//! Requests the config file asks for (checks within their grant, alert channels, recovery actions) go anywhere:
//! the operator wrote them. Requests someone asked for through the API (webhook subscriptions) reach only public
//! addresses and the networks `[webhooks] allow_networks` names, so an API caller cannot use selfmon to reach the
//! machine's own services, the cloud metadata endpoint or the private network behind it. The check is made on
//! every address a name resolves to, when connecting, so a name that later resolves elsewhere gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

/// Where requests may connect.
#[derive(Debug, Clone, Default)]
pub enum Reach {
    /// Any address.
    #[default]
    Anywhere,
    /// Public addresses, and those within these networks.
    Public(Arc<[IpNet]>),
}

impl Reach {
    /// Why `ip` may not be reached, as the kind of address it is ("loopback", "private", ...); `None` if it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        match self {
            Self::Anywhere => None,
            Self::Public(allowed) => {
                let ip = ip.to_canonical();
                let kind = special(ip)?;
                (!allowed.iter().any(|network| network.contains(&ip))).then_some(kind)
            }
        }
    }

    /// Resolve the host of `url` and say why it may not be reached: every address it resolves to is refused, or
    /// it does not resolve. `None` when at least one address may be reached.
    pub async fn check_url(&self, url: &str) -> Option<String> {
        if matches!(self, Self::Anywhere) {
            return None;
        }
        let uri: http::Uri = url.parse().ok()?;
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 });
        let addresses: Vec<IpAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(addresses) => addresses.map(|a| a.ip()).collect(),
            Err(e) => return Some(format!("`url`: `{host}` does not resolve: {e}")),
        };
        let refused: Vec<String> =
            addresses.iter().filter_map(|ip| self.refusal(*ip).map(|kind| format!("{ip} ({kind})"))).collect();
        (refused.len() == addresses.len()).then(|| {
            format!(
                "`url`: `{host}` is {}, which a webhook may not reach unless `[webhooks] allow_networks` in the \
                 config includes it",
                refused.join(", ")
            )
        })
    }
}

/// The kind of a non-public address; `None` for a public one.
fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => special_v4(ip),
        IpAddr::V6(ip) => special_v6(ip),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        () if ip.is_unspecified() || a == 0 => "unspecified",
        () if ip.is_loopback() => "loopback",
        () if ip.is_private() => "private",
        () if ip.is_link_local() => "link-local",
        // Carrier-grade NAT, 100.64.0.0/10 (RFC 6598).
        () if a == 100 && (b & 0xc0) == 64 => "shared",
        () if ip.is_multicast() || ip.is_broadcast() || a >= 240 => "reserved",
        // IETF protocol assignments, 192.0.0.0/24 (RFC 6890), and benchmarking, 198.18.0.0/15 (RFC 2544).
        () if (a == 192 && b == 0 && ip.octets()[2] == 0) || (a == 198 && (b & 0xfe) == 18) => "reserved",
        () if ip.is_documentation() => "documentation",
        () => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        () if ip.is_unspecified() => "unspecified",
        () if ip.is_loopback() => "loopback",
        () if ip.is_unique_local() => "private",
        () if ip.is_unicast_link_local() => "link-local",
        () if ip.is_multicast() => "reserved",
        // IPv4-compatible and NAT64 (64:ff9b::/96) addresses are as private as the IPv4 address within.
        () if ip.segments()[..6] == [0; 6] || ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            let [.., a, b, c, d] = ip.octets();
            return special_v4(Ipv4Addr::new(a, b, c, d));
        }
        // 6to4 (2002::/16) carries an IPv4 address in its next 32 bits.
        () if first == 0x2002 => {
            let [_, high, low, ..] = ip.segments();
            return special_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
        }
        () if first == 0x2001 && ip.segments()[1] == 0x0db8 => "documentation",
        () => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_and_allowed_networks_are_reached() {
        let reach = Reach::Public(Arc::from(vec!["10.20.0.0/16".parse::<IpNet>().unwrap()]));
        let refused = |ip: &str| reach.refusal(ip.parse().unwrap());
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared"),
            ("224.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::10.0.0.1", "private"),
            ("2002:7f00:1::", "loopback"),
        ] {
            assert_eq!(refused(ip), Some(kind), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "10.20.3.4", "::ffff:10.20.0.1", "100.128.0.1"] {
            assert_eq!(refused(ip), None, "{ip}");
        }
        assert_eq!(Reach::Anywhere.refusal("127.0.0.1".parse().unwrap()), None);
    }
}
