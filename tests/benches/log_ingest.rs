//! Log ingestion: one million JSON lines from a file through the built-in `json` parser plugin (in its sandbox)
//! into SQLite with the full-text index, next to the ceiling: inserting the very same records, already parsed,
//! into a fresh store with no parsing at all. Reports lines per second for both, their ratio, and peak memory.
//!
//! `cargo bench -p selfmon --bench log_ingest` (part of `scripts/bench`). `SELFMON_BENCH_LINES` sets the number of
//! lines (default 1 000 000).

use std::io::{BufRead, BufWriter, Write};
use std::time::{Duration, Instant, SystemTime};

use selfmon::logs::{self, NewRecord, Origin, Parsing};
use selfmon::plugins::Plugins;
use selfmon::runtime::{CompiledCache, Runtime};
use selfmon::storage::Storage;

/// Lines parsed and committed together, as the tailer does with a 4 MiB read.
const CHUNK: usize = 10_000;

fn main() {
    let lines: usize = std::env::var("SELFMON_BENCH_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(run(lines));
}

/// Realistic lines of a Python service: a few shapes, varied values, an occasional traceback.
fn write_lines(path: &std::path::Path, count: usize) -> u64 {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    let levels = ["INFO", "INFO", "INFO", "DEBUG", "WARNING", "ERROR"];
    let actions = ["message_sent", "assessment_started", "reply_generated", "session_closed", "payment_checked"];
    for i in 0..count {
        let level = levels[i % levels.len()];
        let action = actions[i % actions.len()];
        let user = 1000 + (i * 7919) % 50_000;
        let mut line = serde_json::json!({
            "timestamp": format!("2026-11-26T{:02}:{:02}:{:02}.{:03}Z", (i / 3_600_000) % 24, (i / 60_000) % 60, (i / 1000) % 60, i % 1000),
            "levelname": level,
            "name": "bot.handlers",
            "message": format!("User {user} {action} in {} ms (conversation {})", (i * 31) % 2000, i / 13),
            "module": "handlers",
            "function": "handle_update",
            "line": 40 + i % 200,
            "trace_id": format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
            "user_id": user.to_string(),
            "service": "telegram-bot",
        });
        if level == "ERROR" && i % 12 == 5 {
            line["exception"] = serde_json::json!({
                "type": "httpx.ReadTimeout",
                "message": "timed out",
                "traceback": ["Traceback (most recent call last):", "  File \"/app/bot/handlers.py\", line 42, in reply", "    await client.send_message(chat_id, text)"],
            });
        }
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// Read the file a chunk of lines at a time.
fn chunks(path: &std::path::Path) -> impl Iterator<Item = Vec<String>> {
    let mut reader = std::io::BufReader::with_capacity(4 << 20, std::fs::File::open(path).unwrap()).lines();
    std::iter::from_fn(move || {
        let chunk: Vec<String> = reader.by_ref().take(CHUNK).map(Result::unwrap).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
}

/// The peak resident memory of this process so far.
fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn run(count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bot.log");
    let bytes = write_lines(&input, count);
    println!("input: {count} lines, {:.0} MiB", bytes as f64 / (1 << 20) as f64);

    let runtime = Runtime::new(CompiledCache::new(None), 8, 512 << 20).unwrap();
    let plugins = Plugins::load(&runtime, &dir.path().join("no-plugins"), u64::MAX).await;
    let parser = Parsing::resolve("json", Vec::new(), &plugins).expect("the built-in json parser");
    let origin = Origin { source: "bot".into(), service: Some("telegram-bot".into()) };
    let memory_before = peak_memory_mib();

    // The pipeline: read, parse in the sandbox, store with the index; one transaction per chunk.
    let pipeline = Storage::open(&dir.path().join("pipeline.sqlite")).unwrap();
    let started = Instant::now();
    let mut stored = 0;
    for chunk in chunks(&input) {
        let (records, _) = logs::parse(&runtime, &parser, &origin, chunk, SystemTime::now()).await;
        stored += pipeline.write_logs(records, None).await.unwrap();
    }
    let pipeline_time = started.elapsed();
    let pipeline_memory = peak_memory_mib();
    pipeline.close().await.unwrap();
    assert_eq!(stored, count, "every line stored");

    // The ceiling: the same records, parsed beforehand (not timed), only inserted.
    let ceiling = Storage::open(&dir.path().join("ceiling.sqlite")).unwrap();
    let mut ceiling_time = Duration::ZERO;
    for chunk in chunks(&input) {
        let (records, _): (Vec<NewRecord>, _) = logs::parse(&runtime, &parser, &origin, chunk, SystemTime::now()).await;
        let started = Instant::now();
        ceiling.write_logs(records, None).await.unwrap();
        ceiling_time += started.elapsed();
    }
    ceiling.close().await.unwrap();

    let rate = |time: Duration| count as f64 / time.as_secs_f64();
    println!(
        "pipeline (read, parse in WASM, store, index): {:>9.0} lines/s  ({:.1} s)",
        rate(pipeline_time),
        pipeline_time.as_secs_f64()
    );
    println!(
        "ceiling (store, index; parsed beforehand):    {:>9.0} lines/s  ({:.1} s)",
        rate(ceiling_time),
        ceiling_time.as_secs_f64()
    );
    println!("pipeline / ceiling: {:.0}%", 100.0 * rate(pipeline_time) / rate(ceiling_time));
    println!(
        "peak memory: {:.0} MiB at start, {:.0} MiB after the pipeline (the plugin pool's reserved address space is not resident)",
        memory_before, pipeline_memory
    );
}
