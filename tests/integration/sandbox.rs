//! The sandbox: a check reaches only what it was granted, and hostile plugins (an endless loop, a blocking wait,
//! a memory bomb, a panic, a log flood) are stopped while the host keeps serving and other checks keep their
//! schedule.

use selfmon_plugin_artifacts::guests;

use crate::support::{Selfmon, Target, Workdir, get_json};

#[tokio::test(flavor = "multi_thread")]
async fn a_check_reaches_only_the_hosts_it_was_granted() {
    let granted = Target::start().await;
    let forbidden = Target::start().await;
    let extra = Target::start().await;
    let config = format!(
        r#"
[[check]]
name = "sneaky"
plugin = "escape"
interval = "1s"
target = "{granted}"
[check.config]
url = "{forbidden_url}"
address = "{forbidden}"

[[check]]
name = "allowed"
plugin = "escape"
interval = "1s"
target = "{granted}"
allow = ["{extra}"]
[check.config]
url = "{extra_url}"
address = "{extra}"
"#,
        granted = granted.url("/ok"),
        forbidden_url = forbidden.url("/ok"),
        forbidden = forbidden.addr,
        extra_url = extra.url("/ok"),
        extra = extra.addr,
    );
    let workdir = Workdir::new(&config, &[("escape", guests::ESCAPE)]);
    let selfmon = Selfmon::start(&workdir).await;

    let sneaky = selfmon.first_result("sneaky").await;
    let summary = sneaky["summary"].as_str().unwrap();
    let address = forbidden.addr.to_string();
    assert!(
        summary.contains(&format!("http: request to {address} refused by selfmon")),
        "the HTTP request must be refused by name: {summary}"
    );
    assert!(
        summary.contains(&format!("tcp: connection to {address} refused by selfmon")),
        "the TCP connection must be refused by name: {summary}"
    );

    let allowed = selfmon.first_result("allowed").await;
    let summary = allowed["summary"].as_str().unwrap();
    assert!(
        summary.contains("http: got 200") && summary.contains("tcp: connected"),
        "an `allow` entry grants: {summary}"
    );
    selfmon.stop().await;
    assert_eq!(forbidden.hits(), 0, "a refused request must never reach the server");
    assert!(extra.hits() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_plugins_are_stopped_and_everything_else_keeps_going() {
    let config = r#"
[[check]]
name = "spin"
plugin = "loop"
interval = "2s"
timeout = "1s"

[[check]]
name = "sleep"
plugin = "loop"
interval = "2s"
timeout = "1s"
[check.config]
mode = "sleep"

[[check]]
name = "bomb"
plugin = "membomb"
interval = "2s"
timeout = "2s"
memory_limit = "32 MiB"

[[check]]
name = "trap"
plugin = "trap"
interval = "1s"

[[check]]
name = "flood"
plugin = "flood"
interval = "2s"

[[check]]
name = "steady"
plugin = "noop"
interval = "1s"
"#;
    let workdir = Workdir::new(
        config,
        &[
            ("loop", guests::LOOP),
            ("membomb", guests::MEMBOMB),
            ("trap", guests::TRAP),
            ("flood", guests::FLOOD),
            ("noop", guests::NOOP),
        ],
    );
    let selfmon = Selfmon::start(&workdir).await;

    // Each hostile check must have run (and been stopped) at least twice: the first failure does not poison the
    // next call.
    for name in ["spin", "sleep", "bomb", "trap", "flood"] {
        selfmon.first_result(name).await;
    }
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while ["spin", "sleep", "bomb", "trap"].iter().any(|name| workdir_runs(&workdir, name) < 2) {
        assert!(tokio::time::Instant::now() < deadline, "hostile checks were not run again");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let spin = selfmon.check("spin").await;
    assert_eq!(spin["status"], "unknown");
    assert_eq!(spin["error"], "deadline of 1s exceeded: the plugin was stopped", "{spin:#}");
    let sleep = selfmon.check("sleep").await;
    assert_eq!(sleep["error"], "deadline of 1s exceeded: the plugin was stopped", "{sleep:#}");
    let bomb = selfmon.check("bomb").await;
    assert!(bomb["error"].as_str().unwrap().starts_with("memory cap of 32 MiB exceeded"), "{bomb:#}");
    let trap = selfmon.check("trap").await;
    let crash = trap["error"].as_str().unwrap();
    assert!(crash.starts_with("the plugin crashed: ") && crash.contains("deliberate panic in check `trap`"), "{crash}");
    let flood = selfmon.check("flood").await;
    assert_eq!(flood["status"], "healthy", "a noisy plugin still gets its answer through: {flood:#}");

    // The host kept serving and the well-behaved check kept its one-second schedule throughout.
    let (status, body) = get_json(&format!("{}/health", selfmon.url)).await;
    assert_eq!(status, 200, "{body}");
    let steady = selfmon.check("steady").await;
    assert_eq!(steady["status"], "healthy");
    let uptime = body["uptime_seconds"].as_f64().unwrap();
    let steady_runs = workdir_runs(&workdir, "steady") as f64;
    assert!(
        steady_runs >= (uptime - 3.0).floor(),
        "the steady check ran {steady_runs} times in {uptime:.1}s with a 1s interval"
    );
    selfmon.stop().await;
}

fn workdir_runs(workdir: &Workdir, check: &str) -> usize {
    workdir.stored_runs(check).len()
}
