//! A parser that panics on a batch holding the word `boom`, takes three seconds over one holding `nap`, and
//! otherwise makes every line an info record; lines starting with two spaces continue the record before.

use selfmon_sdk::parse::{Batch, Level, Outcome, Parser, Record};
use selfmon_sdk::prelude::*;

pub struct Fragile;

impl Parser for Fragile {
    type Config = serde::de::IgnoredAny;

    fn info() -> PluginInfo {
        PluginInfo::new("fragile", "0.1.0", "Panics on `boom`")
    }

    fn parse(_: &Self::Config, batch: &Batch) -> Vec<Outcome> {
        if batch.lines.iter().any(|line| line.contains("boom")) {
            panic!("deliberate panic parsing a batch of {} lines", batch.lines.len());
        }
        if batch.lines.iter().any(|line| line.contains("nap")) {
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
        batch
            .lines
            .iter()
            .map(|line| {
                if line.starts_with("  ") {
                    Outcome::Continuation
                } else {
                    Outcome::Parsed(Record::new(Level::Info, line.clone()))
                }
            })
            .collect()
    }
}

selfmon_sdk::export_parser!(Fragile);
