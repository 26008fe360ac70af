//! The `dns` import: a lookup the host makes for a checker, of any common record type, through the system's resolver
//! (its `/etc/resolv.conf` and hosts file) or a named server. The name must be granted to the check, and so must a
//! named server's address: a plugin cannot use lookups to reach, or tell anything to, a server it was not given.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::bindings::selfmon::plugin::dns::{Answer, Host, Lookup};
use super::state::{PluginState, truncate};

/// The record types the contract names.
const TYPES: [&str; 10] = ["A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "CAA", "PTR"];
/// Lookups one call may make.
pub const LOOKUPS_PER_CALL: usize = 16;
/// Records kept of one answer.
const ANSWERS: usize = 64;
/// The longest record data kept (a TXT record may be long).
const DATA_BYTES: usize = 1024;
/// The most of a plugin's argument repeated in selfmon's log and errors.
const SHOWN_BYTES: usize = 256;

impl Host for PluginState {
    async fn query(
        &mut self,
        name: String,
        record_type: String,
        server: Option<String>,
        timeout_ms: u32,
    ) -> Result<Lookup, String> {
        // Refused lookups count too: a plugin cannot fill selfmon's log with refusals.
        if !self.count_lookup() {
            return Err(format!("more than {LOOKUPS_PER_CALL} lookups in one call"));
        }
        let confinement = self.confinement();
        let labels = &confinement.labels;
        if !confinement.grants.names(&name) {
            let name = truncate(&name, SHOWN_BYTES);
            tracing::warn!(plugin = %labels.plugin, check = labels.check.as_deref(), name, "Refused a lookup the check is not granted");
            return Err(format!("lookup of `{name}` refused by selfmon: the check is not granted this name"));
        }
        let server = match server.as_deref().map(server_address).transpose()? {
            Some(address) if !confinement.grants.allows(&address.ip().to_string(), address.port()) => {
                tracing::warn!(plugin = %labels.plugin, check = labels.check.as_deref(), %address, "Refused a lookup through a server the check is not granted");
                return Err(format!(
                    "the DNS server {address} is refused by selfmon: the check is not granted it (add `{address}` to \
                     its `allow`)"
                ));
            }
            server => server,
        };
        let upper = record_type.to_ascii_uppercase();
        let kind =
            TYPES.contains(&upper.as_str()).then(|| upper.parse::<RecordType>().ok()).flatten().ok_or_else(|| {
                format!("`{}` is not a record type selfmon looks up", truncate(&record_type, SHOWN_BYTES))
            })?;
        let timeout = Duration::from_millis(u64::from(timeout_ms)).min(confinement.timeout);
        lookup(&name, kind, server, timeout).await
    }
}

/// `address` or `address:port` (`[v6]:port`), port 53 unless given.
fn server_address(server: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = server.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    server.parse().map_err(|_| {
        let server = truncate(server, SHOWN_BYTES);
        format!("`{server}` is not a DNS server's address (an IP address, with a port or not)")
    })
}

async fn lookup(name: &str, kind: RecordType, server: Option<SocketAddr>, timeout: Duration) -> Result<Lookup, String> {
    let (config, mut options, who) = match server {
        Some(address) => {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()].map(|mut connection| {
                connection.port = address.port();
                connection
            });
            let server = NameServerConfig::new(address.ip(), true, connections.into());
            let mut options = ResolverOpts::default();
            options.use_hosts_file = ResolveHosts::Never;
            (ResolverConfig::from_parts(None, Vec::new(), vec![server]), options, address.to_string())
        }
        None => {
            let (config, options) =
                hickory_resolver::system_conf::read_system_conf().map_err(|e| format!("the system's resolver: {e}"))?;
            (config, options, "system resolver".to_string())
        }
    };
    options.timeout = timeout;
    options.attempts = 1;
    options.cache_size = 0;
    let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .map_err(|e| format!("{}: {e}", said(&who)))?;
    // The name as given, never with the resolver's search domains appended (an answer for
    // `example.com.corp.internal` is not one for `example.com`).
    let absolute = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    let started = Instant::now();
    let found = tokio::time::timeout(timeout, resolver.lookup(absolute, kind)).await;
    let took_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    let answered =
        |answers: Vec<Answer>, code: &str| Lookup { answers, code: code.into(), server: who.clone(), took_ms };
    match found {
        Err(_) => Err(format!("no answer from {} within {} ms", said(&who), timeout.as_millis())),
        Ok(Ok(records)) => {
            let code = mnemonic(records.message().metadata.response_code);
            Ok(answered(
                records
                    .answers()
                    .iter()
                    .take(ANSWERS)
                    .map(|record| Answer {
                        record_type: record.record_type().to_string(),
                        ttl: record.ttl,
                        data: cut(zone_text(&record.data)),
                    })
                    .collect(),
                &code,
            ))
        }
        Ok(Err(error)) => match no_records(&error) {
            Some(code) => Ok(answered(Vec::new(), &code)),
            None => Err(format!("no answer from {}: {error}", said(&who))),
        },
    }
}

/// At most [`DATA_BYTES`] of a record's data, marked when cut (so that no expected value is judged against part of
/// a record without saying so).
fn cut(data: String) -> String {
    if data.len() <= DATA_BYTES { data } else { format!("{} (cut at {DATA_BYTES} bytes)", truncate(&data, DATA_BYTES)) }
}

/// A response code as DNS tools write it: `NOERROR`, `NXDOMAIN`, `SERVFAIL`.
fn mnemonic(code: ResponseCode) -> String {
    format!("{code:?}").to_ascii_uppercase()
}

/// Who answered, in a sentence: `the system resolver`, `the DNS server 192.0.2.53:53`.
fn said(who: &str) -> String {
    if who == "system resolver" { format!("the {who}") } else { format!("the DNS server {who}") }
}

/// A record's data as a zone file writes it: a TXT record's strings each in quotes (`"v=spf1 -all"`, `"a" "b"`),
/// with `"` and `\` escaped; other types as hickory writes them.
fn zone_text(data: &RData) -> String {
    match data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|part| {
                let text = String::from_utf8_lossy(part);
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// An answer without records, by its response code's mnemonic (RFC 6895 2.3): the name exists without such records
/// (`NOERROR`), does not exist (`NXDOMAIN`), or the server could not or would not answer (`SERVFAIL`, `REFUSED`, ...).
fn no_records(error: &NetError) -> Option<String> {
    if error.is_nx_domain() {
        Some("NXDOMAIN".into())
    } else if error.is_no_records_found() {
        Some("NOERROR".into())
    } else if let NetError::Dns(DnsError::ResponseCode(code)) = error {
        Some(mnemonic(*code))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use hickory_resolver::proto::rr::rdata::TXT;

    use super::*;

    #[test]
    fn text_records_are_written_as_a_zone_file_writes_them() {
        let txt = RData::TXT(TXT::new(vec!["hello world".into(), "say \"hi\" \\o/".into()]));
        assert_eq!(zone_text(&txt), r#""hello world" "say \"hi\" \\o/""#);
        assert_eq!(zone_text(&RData::A("192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap().into())), "192.0.2.1");
    }
}
