//! Log ingestion and search.
//!
//! 1. One million JSON lines from a file through the built-in `json` parser plugin (in its sandbox) into SQLite
//!    with the full-text index, next to the ceiling: inserting the very same records, already parsed, into a fresh
//!    store with no parsing at all. Lines per second for both, their ratio, and peak memory. Both again into a store
//!    encrypted at rest (`[storage] key`, SQLCipher): what encryption costs.
//! 2. One million nginx access log lines through the built-in `combined` parser into a store, next to GoAccess
//!    (Debian's `goaccess`) parsing the same file into its report.
//! 3. Search latency on the million-line access log store, a word query and a filtered one, next to lnav (Debian's
//!    `lnav`, headless) answering the same question over the raw file.
//!
//! `cargo bench -p selfmon --bench log_ingest` (part of `scripts/bench`, which installs goaccess and lnav).
//! `SELFMON_BENCH_LINES` sets the number of lines (default 1 000 000).

use std::io::{BufRead, BufWriter, Write};
use std::time::{Duration, Instant, SystemTime};

use selfmon::config::Secret;
use selfmon::logs::parsing::{self as logs, Parsing};
use selfmon::logs::search::Search;
use selfmon::logs::{NewRecord, Origin};
use selfmon::runtime::plugins::Plugins;
use selfmon::runtime::{CompiledCache, Runtime};
use selfmon::storage::Storage;

mod support;

/// Lines parsed and committed together, about what the tailer reads at once (4 MiB).
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

/// Realistic nginx access log lines: a storefront's API behind nginx, with varied clients, paths and statuses.
fn write_access(path: &std::path::Path, count: usize) -> u64 {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    let paths = [
        "/api/v1/products/{}",
        "/api/v1/cart/{}",
        "/shop/checkout/{}",
        "/static/app.{}.js",
        "/api/v1/users/{}/orders",
        "/health",
    ];
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "python-httpx/0.27.2",
        "kube-probe/1.31",
    ];
    for i in 0..count {
        let status = match i % 50 {
            0 => 502,
            1..=3 => 404,
            4 => 401,
            5..=9 => 304,
            _ => 200,
        };
        let method = if i % 9 == 0 { "POST" } else { "GET" };
        let path = paths[i % paths.len()].replace("{}", &((i * 7919) % 100_000).to_string());
        writeln!(
            out,
            "10.{}.{}.{} - - [26/Nov/2026:{:02}:{:02}:{:02} +0000] \"{method} {path}?page={} HTTP/1.1\" {status} {} \"https://shop.example.com/\" \"{}\"",
            (i / 65_536) % 256,
            (i / 256) % 256,
            i % 256,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            i % 7,
            200 + (i * 31) % 40_000,
            agents[i % agents.len()],
        )
        .unwrap();
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// Parse and store a file in chunks as the tailer does, each chunk committing while the next is parsed; the time
/// taken and the records stored.
async fn ingest(
    runtime: &Runtime,
    parsing: &Parsing,
    origin: &Origin,
    input: &std::path::Path,
    store: &Storage,
) -> (Duration, usize) {
    let started = Instant::now();
    let mut stored = 0;
    let mut pending: Option<tokio::task::JoinHandle<usize>> = None;
    for chunk in chunks(input) {
        let (records, _) = logs::parse(runtime, parsing, origin, chunk, SystemTime::now()).await;
        if let Some(write) = pending.take() {
            stored += write.await.unwrap();
        }
        let store = store.clone();
        pending = Some(tokio::spawn(async move { store.write_logs(records, None).await.unwrap() }));
    }
    if let Some(write) = pending {
        stored += write.await.unwrap();
    }
    (started.elapsed(), stored)
}

/// Store the records of `input`, parsed beforehand (not timed), in a fresh store at `path`: the time spent storing.
async fn ceiling(
    runtime: &Runtime,
    parsing: &Parsing,
    origin: &Origin,
    input: &std::path::Path,
    store: Storage,
) -> Duration {
    let mut time = Duration::ZERO;
    for chunk in chunks(input) {
        let (records, _): (Vec<NewRecord>, _) = logs::parse(runtime, parsing, origin, chunk, SystemTime::now()).await;
        let started = Instant::now();
        store.write_logs(records, None).await.unwrap();
        time += started.elapsed();
    }
    store.close().await.unwrap();
    time
}

/// How long a program takes to run to its end, its output discarded.
fn timed(program: &str, args: &[&str]) -> Duration {
    let started = Instant::now();
    let status = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/setup --bench installs it): {e}"));
    assert!(status.success(), "{program} {args:?} failed");
    started.elapsed()
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
    let (pipeline_time, stored) = ingest(&runtime, &parser, &origin, &input, &pipeline).await;
    let pipeline_memory = peak_memory_mib();
    pipeline.close().await.unwrap();
    assert_eq!(stored, count, "every line stored");

    // The ceiling: the same records, parsed beforehand (not timed), only inserted.
    let store = Storage::open(&dir.path().join("ceiling.sqlite")).unwrap();
    let ceiling_time = ceiling(&runtime, &parser, &origin, &input, store).await;

    // Both again, encrypted at rest.
    let key = || Some(Secret::new("correct horse battery staple".into()));
    let encrypted = Storage::open_with_key(&dir.path().join("pipeline-encrypted.sqlite"), key()).unwrap();
    let (encrypted_time, stored) = ingest(&runtime, &parser, &origin, &input, &encrypted).await;
    encrypted.close().await.unwrap();
    assert_eq!(stored, count, "every line stored");
    let store = Storage::open_with_key(&dir.path().join("ceiling-encrypted.sqlite"), key()).unwrap();
    let encrypted_ceiling_time = ceiling(&runtime, &parser, &origin, &input, store).await;

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
    for (name, plain, encrypted) in
        [("pipeline", pipeline_time, encrypted_time), ("ceiling", ceiling_time, encrypted_ceiling_time)]
    {
        println!(
            "{:<45}{:>9.0} lines/s  ({:.1} s): {:.0}% of plain",
            format!("{name}, encrypted at rest:"),
            rate(encrypted),
            encrypted.as_secs_f64(),
            100.0 * rate(encrypted) / rate(plain)
        );
    }
    println!(
        "peak memory: {:.0} MiB at start, {:.0} MiB after the pipeline (the plugin pool's reserved address space is not resident)",
        memory_before, pipeline_memory
    );
    std::fs::remove_file(&input).unwrap();

    // An nginx access log, stored and indexed by selfmon, and reported on by GoAccess.
    let access = dir.path().join("access.log");
    let bytes = write_access(&access, count);
    println!("\naccess log: {count} lines, {:.0} MiB", bytes as f64 / (1 << 20) as f64);
    let combined = Parsing::resolve("combined", Vec::new(), &plugins).expect("the built-in combined parser");
    let origin = Origin { source: "nginx".into(), service: Some("shop".into()) };
    let store = Storage::open(&dir.path().join("access.sqlite")).unwrap();
    let (selfmon_time, stored) = ingest(&runtime, &combined, &origin, &access, &store).await;
    assert_eq!(stored, count, "every line stored");
    let report = dir.path().join("report.json");
    let path = |p: &std::path::Path| p.display().to_string();
    let goaccess_time = timed(
        "goaccess",
        &[&path(&access), "--log-format=COMBINED", "--no-global-config", "--no-progress", "-o", &path(&report)],
    );
    println!(
        "selfmon (parse in WASM, store, index):  {:>9.0} lines/s  ({:.1} s)",
        rate(selfmon_time),
        selfmon_time.as_secs_f64()
    );
    println!(
        "goaccess (parse, aggregate, report):    {:>9.0} lines/s  ({:.1} s)",
        rate(goaccess_time),
        goaccess_time.as_secs_f64()
    );
    println!("selfmon / goaccess: {:.2}x", rate(selfmon_time) / rate(goaccess_time));
    // Where selfmon's time goes: parsing alone, and storing already parsed records alone.
    let (mut parse_time, mut store_time) = (Duration::ZERO, Duration::ZERO);
    let parts = Storage::open(&dir.path().join("access-parts.sqlite")).unwrap();
    for chunk in chunks(&access) {
        let started = Instant::now();
        let (records, _) = logs::parse(&runtime, &combined, &origin, chunk, SystemTime::now()).await;
        parse_time += started.elapsed();
        let started = Instant::now();
        parts.write_logs(records, None).await.unwrap();
        store_time += started.elapsed();
    }
    parts.close().await.unwrap();
    println!("  of which parsing alone {:.0} lines/s, storing alone {:.0} lines/s", rate(parse_time), rate(store_time));

    // The same questions of the million-line store and of the raw file.
    let word = Search { text: Some("checkout".into()), limit: 100, ..Search::default() };
    let filtered = Search { levels: vec!["error".into()], service: Some("shop".into()), ..word.clone() };
    let lnav_word = ";SELECT log_time, cs_method, cs_uri_stem, sc_status FROM access_log \
                     WHERE cs_uri_stem LIKE '%checkout%' ORDER BY log_line DESC LIMIT 100";
    let lnav_filtered = ";SELECT log_time, cs_method, cs_uri_stem, sc_status FROM access_log \
                         WHERE sc_status >= 500 AND cs_uri_stem LIKE '%checkout%' ORDER BY log_line DESC LIMIT 100";
    for (name, search, sql) in
        [("word \"checkout\"", &word, lnav_word), ("\"checkout\", level error, service shop", &filtered, lnav_filtered)]
    {
        let (median, slowest, found) = support::search_latency(&store, search, 21).await;
        let lnav = timed("lnav", &["-n", "-c", sql, &path(&access)]);
        println!(
            "search {name}: selfmon {:.2} ms median, {:.2} ms slowest ({found} records); lnav {:.0} ms; {:.0}x",
            median.as_secs_f64() * 1000.0,
            slowest.as_secs_f64() * 1000.0,
            lnav.as_secs_f64() * 1000.0,
            lnav.as_secs_f64() / median.as_secs_f64()
        );
    }
    store.close().await.unwrap();
}
