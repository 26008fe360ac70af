//! A checker that tries to reach places it may not have been granted, over HTTP, raw TCP and the host's TLS
//! handshakes and lookups, and reports what happened to each attempt.

use std::time::Duration;

use selfmon_sdk::prelude::*;
use selfmon_sdk::tcp;

#[derive(Deserialize)]
pub struct Config {
    url: Option<String>,
    address: Option<String>,
    tls: Option<String>,
    dns: Option<String>,
}

pub struct Escape;

impl Checker for Escape {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new("escape", "0.1.0", "Tries an HTTP request and a TCP connection and reports the outcome")
            .config(Setting::text("url", "URL to GET"))
            .config(Setting::text("address", "host:port to connect to"))
            .config(Setting::text("tls", "host:port to handshake with"))
            .config(Setting::text("dns", "name to look up through the system's resolver"))
    }

    fn check(config: Config, _: &Context) -> Result<CheckResult, Error> {
        let mut outcomes = Vec::new();
        if let Some(url) = &config.url {
            outcomes.push(match http::get(url).timeout(Duration::from_secs(2)).send() {
                Ok(response) => format!("http: got {}", response.status()),
                Err(e) => format!("http: {e}"),
            });
        }
        if let Some(address) = &config.address {
            outcomes.push(match tcp::connect(address, Duration::from_secs(2)) {
                Ok(_) => "tcp: connected".to_string(),
                Err(e) => format!("tcp: {e}"),
            });
        }
        if let Some(address) = &config.tls {
            outcomes.push(match selfmon_sdk::tls::inspect(address, "localhost", Duration::from_secs(2)) {
                Ok(handshake) => format!("tls: {}", handshake.protocol),
                Err(e) => format!("tls: {e}"),
            });
        }
        if let Some(name) = &config.dns {
            outcomes.push(match selfmon_sdk::dns::query(name, "TXT", None, Duration::from_secs(2)) {
                Ok(lookup) => format!("dns: {}", lookup.code),
                Err(e) => format!("dns: {e}"),
            });
        }
        Ok(CheckResult::unhealthy(outcomes.join("; ")))
    }
}

selfmon_sdk::export_checker!(Escape);
