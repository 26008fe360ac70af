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
tls = "{forbidden}"
dns = "secret-data.attacker.example"

[[check]]
name = "allowed"
plugin = "escape"
interval = "1s"
target = "{granted}"
allow = ["{extra}"]
[check.config]
url = "{extra_url}"
address = "{extra}"
tls = "{extra}"

[[check]]
name = "by-name"
plugin = "escape"
interval = "1s"
target = "{granted}"
[check.config]
address = "localhost:{forbidden_port}"

[[check]]
name = "no-grants"
plugin = "escape"
interval = "1s"
[check.config]
url = "{forbidden_url}"
address = "{forbidden}"

[[check]]
name = "granted-but-closed"
plugin = "escape"
interval = "1s"
allow = ["{closed}"]
[check.config]
address = "{closed}"
"#,
        granted = granted.url("/ok"),
        forbidden_url = forbidden.url("/ok"),
        forbidden = forbidden.addr,
        extra_url = extra.url("/ok"),
        extra = extra.addr,
        forbidden_port = forbidden.addr.port(),
        closed = crate::support::closed_port().await,
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
    assert!(
        summary.contains(&format!("tls: connection to {address} refused by selfmon")),
        "the host's TLS handshake must be refused by name: {summary}"
    );
    assert!(
        summary.contains("dns: lookup of `secret-data.attacker.example` refused by selfmon"),
        "a lookup of a name the check is not granted (a way to tell a resolver anything) must be refused: {summary}"
    );

    let allowed = selfmon.first_result("allowed").await;
    let summary = allowed["summary"].as_str().unwrap();
    assert!(
        summary.contains("http: got 200")
            && summary.contains("tcp: connected")
            && summary.contains("tls: TLS handshake"),
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

[[check]]
name = "gives-up"
plugin = "noop"
interval = "2s"
[check.config]
fail = "the service is not configured yet"
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
    while ["spin", "sleep", "bomb", "trap", "flood"].iter().any(|name| workdir_runs(&workdir, name) < 2)
        || workdir_runs(&workdir, "steady") < 5
    {
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
    let gives_up = selfmon.first_result("gives-up").await;
    assert_eq!(gives_up["status"], "unknown", "a check that cannot be carried out is unknown: {gives_up:#}");
    assert_eq!(gives_up["summary"], "check failed: the service is not configured yet");

    // The host kept serving and the well-behaved check kept its one-second schedule throughout.
    let (status, body) = get_json(&format!("{}/health", selfmon.url)).await;
    assert_eq!(status, 200, "{body}");
    let steady = selfmon.check("steady").await;
    assert_eq!(steady["status"], "healthy");
    selfmon.stop().await;
    let starts = workdir.stored_start_times("steady");
    let longest_gap = starts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(starts.len() >= 5, "{starts:?}");
    // One second plus up to 10% jitter; anything near two seconds would mean a missed run.
    assert!(longest_gap < 1800, "the steady check missed its schedule: a gap of {longest_gap} ms in {starts:?}");
}

fn workdir_runs(workdir: &Workdir, check: &str) -> usize {
    workdir.stored_runs(check).len()
}

/// Parsing cannot take the plugin instances checks need: with more slow parse calls at once than the whole pool
/// holds (32 instances for four checks at once), a check keeps running on its schedule and stays healthy.
#[tokio::test(flavor = "multi_thread")]
async fn checks_keep_their_instances_while_parsing_takes_all_it_may() {
    let config = "[scheduler]\nmax_concurrent = 4\n\n\
                  [[check]]\nname = \"steady\"\nplugin = \"noop\"\ninterval = \"1s\"\n";
    let workdir = Workdir::new(config, &[("noop", guests::NOOP), ("fragile", guests::FRAGILE_PARSER)]);
    let selfmon = Selfmon::start(&workdir).await;
    selfmon.first_result("steady").await;
    let runs_before = workdir_runs(&workdir, "steady");

    // 40 posts at once, each a parse call of three seconds (`nap`).
    let url = format!("{}/v1/logs?parser=fragile", selfmon.url);
    let client = reqwest::Client::new();
    let posts: Vec<_> = (0..40)
        .map(|n| {
            let (url, client) = (url.clone(), client.clone());
            tokio::spawn(async move { client.post(url).body(format!("a nap, {n}")).send().await.unwrap().status() })
        })
        .collect();
    for post in posts {
        let status = post.await.unwrap().as_u16();
        assert!(status == 202 || status == 503, "{status}");
    }
    let runs = workdir.stored_runs("steady");
    assert!(runs.len() >= runs_before + 2, "the check kept running while parsing: {runs:?}");
    for (status, summary, error) in &runs {
        assert_eq!(status, "healthy", "{summary} {error:?}");
    }
    selfmon.stop().await;
}
