//! What more than one benchmark measures the same way.

use std::time::{Duration, Instant};

use selfmon::logs::search::Search;
use selfmon::storage::Storage;

/// `search` run `runs` times on `store`: the median and slowest time, and how many records it found.
pub async fn search_latency(store: &Storage, search: &Search, runs: usize) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut found = 0;
    for _ in 0..runs {
        let started = Instant::now();
        found = store.search_logs(search.clone()).await.unwrap().records.len();
        times.push(started.elapsed());
    }
    times.sort();
    (times[runs / 2], times[runs - 1], found)
}
