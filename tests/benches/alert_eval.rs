//! Alert rule evaluation: the eight default rules, each a WebAssembly component called in its sandbox, over a store
//! holding a day of samples for 200 checks (check durations every 15 s, 1.15 million samples) and a day of AI cost
//! counters for 20 models, with 20 of the checks down. Reported: the time one evaluation of all rules takes (the
//! engine's whole step: rule calls, their queries against SQLite, lifecycle, storage of changes) and each rule's
//! own share.
//!
//! `cargo bench -p selfmon --bench alert_eval` (part of `scripts/bench`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use selfmon::alerting::engine::Engine;
use selfmon::checks::board::Board;
use selfmon::checks::health::{CheckRun, Health};
use selfmon::events::Events;
use selfmon::storage::{Sample, Storage};

const CHECKS: usize = 200;
const MODELS: usize = 20;
const DAY: u64 = 86_400;
const EVALUATIONS: u64 = 20;

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\npath = {:?}\n\n[plugins]\ncache_dir = {:?}\ndir = {:?}\n",
        dir.path().join("selfmon.db"),
        dir.path().join("cache"),
        dir.path().join("plugins")
    );
    let config = selfmon::config::Config::parse(&text, None).unwrap();
    let host = selfmon::app::host::Host::build(config).await.unwrap();
    let storage = Storage::open(&dir.path().join("selfmon.db")).unwrap();
    let now = SystemTime::now();

    let started = Instant::now();
    for check in 0..CHECKS {
        let labels = vec![("check".to_string(), format!("svc-{check:03}")), ("plugin".to_string(), "http".to_string())];
        let samples = (0..DAY / 15)
            .map(|n| Sample {
                name: "check_duration_seconds".into(),
                labels: labels.clone(),
                time: now - Duration::from_secs(DAY - n * 15),
                value: 0.05 + ((n as usize * 7 + check) % 100) as f64 / 1000.0,
            })
            .collect();
        storage.write_samples(samples).await.unwrap();
    }
    for model in 0..MODELS {
        let labels = vec![("model".to_string(), format!("model-{model:02}"))];
        let samples = (0..DAY / 60)
            .map(|n| Sample {
                name: "ai_cost_dollars_total".into(),
                labels: labels.clone(),
                time: now - Duration::from_secs(DAY - n * 60),
                value: n as f64 * 0.003,
            })
            .collect();
        storage.write_samples(samples).await.unwrap();
    }
    storage.flush().await.unwrap();
    let samples = CHECKS as u64 * DAY / 15 + MODELS as u64 * DAY / 60;
    println!("stored {samples} samples in {:.1} s", started.elapsed().as_secs_f64());

    let board = Arc::new(Board::default());
    for check in 0..CHECKS {
        let name = format!("svc-{check:03}");
        board.register(&name, "http", true, Duration::from_secs(30), &[]);
        let mut run = CheckRun::new(&name, "http", now, Duration::from_millis(50));
        run.health = if check % 10 == 0 { Health::Unhealthy } else { Health::Healthy };
        board.record(&run);
    }
    let telemetry = Arc::new(selfmon::ops::telemetry::Telemetry::new(&storage).unwrap());
    let mut engine =
        Engine::new(host.alerting.clone(), host.runtime.clone(), storage.clone(), board, Events::default(), telemetry)
            .await
            .unwrap();
    let status = engine.status();
    let interval = host.config.alerting.interval;

    let mut took = Vec::new();
    let mut per_rule: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for n in 0..=EVALUATIONS {
        let at = now + interval * u32::try_from(n).unwrap();
        let started = Instant::now();
        engine.tick(at, "bench").await;
        // The first evaluation raises the alerts; the rest find them standing.
        if n > 0 {
            took.push(started.elapsed().as_secs_f64() * 1000.0);
            for (rule, state) in status.lock().unwrap().iter() {
                per_rule.entry(rule.clone()).or_default().push(state.evaluation_ms.unwrap_or_default());
            }
        }
    }
    let firing: usize = status.lock().unwrap().values().filter(|s| s.state == "firing").count();
    println!(
        "one evaluation of {} rules ({firing} firing, {} checks down): median {:.1} ms, max {:.1} ms",
        per_rule.len(),
        CHECKS / 10,
        median(&mut took),
        took.iter().copied().fold(0.0, f64::max)
    );
    for (rule, mut times) in per_rule {
        println!("  {rule:<18} median {:.2} ms", median(&mut times));
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
