//! Nodes sharing one PostgreSQL store (started from initdb, as every PostgreSQL test here): checks shared out by
//! leases and moving when a node leaves or is killed, one leader for alerting across a kill, notifications sent
//! once (one cut short by the leader's death goes out from the next leader), logs and live updates seen from every
//! node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use nix::sys::signal::Signal;
use selfmon::checks::board::Board;
use selfmon::cluster::{Cluster, ROUND, TTL};
use selfmon::config::Secret;
use selfmon::storage::Storage;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::receiver::AlertReceiver;
use crate::support::{
    PATIENCE, Target, Workdir, free_port, postgres, serve_binary, signal, switchable_service, within,
};

fn no_file(_: &str) -> std::io::Result<Vec<u8>> {
    Err(std::io::ErrorKind::NotFound.into())
}

/// What each of `clusters` holds, by node name.
fn holdings(clusters: &[&Arc<Cluster>], checks: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    clusters
        .iter()
        .map(|cluster| {
            let held = checks.iter().filter(|check| cluster.holds(check)).cloned().collect();
            (cluster.node().to_string(), held)
        })
        .collect()
}

/// Every check held by exactly one of `holdings`' nodes.
fn shared_out(holdings: &BTreeMap<String, BTreeSet<String>>, checks: &[String]) -> bool {
    checks.iter().all(|check| holdings.values().filter(|held| held.contains(check)).count() == 1)
}

/// Two nodes in one process on one database: every check is held by exactly one, both hold some; a node that
/// leaves hands its checks over at once; a node with a live node's name is refused; one leader at a time.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_share_checks_by_lease_and_hand_them_over_when_one_leaves() {
    let url = Secret::new(postgres::shared().database());
    let storage = Storage::connect(&url, no_file).await.unwrap();
    let board = Arc::new(Board::default());
    let checks: Vec<String> = (0..30).map(|i| format!("check-{i:02}")).collect();
    for check in &checks {
        board.register(check, "http", true, Duration::from_secs(5), &[]);
    }
    board.register("switched-off", "http", false, Duration::from_secs(5), &[]);
    let tasks = TaskTracker::new();
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = Cluster::join(&storage, "a".into(), "127.0.0.1:1".into(), board.clone()).await.unwrap();
    a.spawn(&tasks, stop_a.clone());
    let b = Cluster::join(&storage, "b".into(), "127.0.0.1:2".into(), board.clone()).await.unwrap();
    b.spawn(&tasks, stop_b.clone());

    let both = within(4 * TTL, "the checks shared out between two nodes", async || {
        let held = holdings(&[&a, &b], &checks);
        (shared_out(&held, &checks) && held.values().all(|h| !h.is_empty())).then_some(held)
    })
    .await;
    assert!(both.values().all(|held| held.len() < checks.len()), "{both:?}");
    assert_eq!([a.leads(), b.leads()].iter().filter(|leads| **leads).count(), 1, "one leader");
    assert!(!a.holds("switched-off") && !b.holds("switched-off"), "a disabled check is nobody's");
    let nodes = a.nodes().await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    for node in &nodes {
        assert!(node.live, "{node:?}");
        assert_eq!(node.checks.iter().cloned().collect::<BTreeSet<_>>(), both[&node.name], "the store agrees");
    }

    let refused = Cluster::join(&storage, "b".into(), "127.0.0.1:3".into(), board.clone()).await.err().unwrap();
    assert!(refused.to_string().contains("a node named \"b\" is already running"), "{refused}");

    stop_b.cancel();
    within(3 * ROUND, "the leaving node's checks taken over", async || {
        shared_out(&holdings(&[&a], &checks), &checks).then_some(())
    })
    .await;
    within(3 * ROUND, "the lead taken over", async || a.leads().then_some(())).await;
    let nodes = a.nodes().await.unwrap();
    let gone = nodes.iter().find(|n| n.name == "b").unwrap();
    assert!(!gone.live && gone.checks.is_empty() && !gone.leader, "{gone:?}");
    stop_a.cancel();
    tasks.close();
    tasks.wait().await;
    storage.close().await.unwrap();
}

/// Nodes started at the same moment on a new database all open it: one applies the migrations and makes the
/// partitions, the others wait for it rather than fail on what it made.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_starting_together_on_a_new_database_all_open_it() {
    let url = Secret::new(postgres::shared().database());
    let opening: Vec<_> = (0..6).map(|_| Storage::connect(&url, no_file)).collect();
    for opened in futures_util::future::join_all(opening).await {
        opened.unwrap().close().await.unwrap();
    }
}

/// A selfmon process, its API and (for one) its dashboard.
struct Node {
    name: String,
    child: std::process::Child,
    api: String,
    dashboard: Option<String>,
    _workdir: Workdir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const INTERVAL: Duration = Duration::from_secs(10);
const CHECKS: usize = 60;

async fn start_node(name: &str, url: &str, shared: &str, dashboard: bool) -> Node {
    let port = free_port();
    let dashboard_port = free_port();
    let dashboard_section = if dashboard {
        format!("[dashboard]\nenabled = true\nlisten = \"127.0.0.1:{dashboard_port}\"\n")
    } else {
        String::new()
    };
    let config = format!(
        "[storage]\nurl = {url:?}\n\n[privacy]\nkey = \"test-privacy-key-0123456789\"\n\n[cluster]\nnode = \"{name}\"\n\n\
         [server]\napi_listen = \"127.0.0.1:{port}\"\n\n{dashboard_section}\n{shared}"
    );
    let workdir = Workdir::new(&config, &[]);
    let (child, api) = serve_binary(&workdir, port, "warn", std::process::Stdio::inherit()).await;
    let dashboard = dashboard.then(|| format!("http://127.0.0.1:{dashboard_port}"));
    Node { name: name.into(), child, api, dashboard, _workdir: workdir }
}

async fn status(node: &Node) -> Value {
    reqwest::get(format!("{}/v1/status", node.api)).await.unwrap().json().await.unwrap()
}

/// The live node that leads, from `node`'s `/v1/status`, once there is one.
async fn leader(node: &Node) -> String {
    within(PATIENCE, "a leader", async || {
        let status = status(node).await;
        status["nodes"].as_array()?.iter().find(|n| n["leader"] == true && n["live"] == true)?["name"]
            .as_str()
            .map(String::from)
    })
    .await
}

/// Which live node runs each check, from `node`'s `/v1/status`.
async fn runners(node: &Node) -> BTreeMap<String, Vec<String>> {
    let status = status(node).await;
    let mut runners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for peer in status["nodes"].as_array().unwrap().iter().filter(|n| n["live"] == true) {
        for check in peer["checks"].as_array().unwrap() {
            runners.entry(check.as_str().unwrap().to_string()).or_default().push(peer["name"].as_str().unwrap().into());
        }
    }
    runners
}

/// Three processes on one database: 60 checks spread over all three, none run twice; a node killed with SIGKILL
/// hands its checks over with no gap longer than two intervals; an alert fires once and resolves once though the
/// leader is killed between; logs posted to one node are found from another; the dashboard on one node shows runs
/// another makes and alerts the leader raises, and its API the rules' states as the leader evaluated them.
#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_share_the_work_and_survive_a_kill() {
    let url = postgres::shared().database();
    let target = Target::start().await;
    let (up, service) = switchable_service().await;
    let (received, hook) = AlertReceiver::start(0).await;
    let mut shared = format!(
        "[scheduler]\njitter = 0.0\n\n[alerting]\ninterval = \"1s\"\ngroup_wait = \"0s\"\ngroup_interval = \"1s\"\n\
         default_channels = [\"receiver\"]\n\n[[channel]]\nname = \"receiver\"\nkind = \"webhook\"\nurl = \"{hook}\"\n\n\
         [[check]]\nname = \"flappy\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{service}\"\n\n"
    );
    let checks: Vec<String> = (0..CHECKS).map(|i| format!("service-{i:02}")).collect();
    for check in &checks {
        shared.push_str(&format!(
            "[[check]]\nname = \"{check}\"\nplugin = \"http\"\ninterval = \"{}s\"\ntarget = \"{}\"\n\n",
            INTERVAL.as_secs(),
            target.url("/ok")
        ));
    }
    let mut nodes = vec![
        start_node("a", &url, &shared, false).await,
        start_node("b", &url, &shared, true).await,
        start_node("c", &url, &shared, false).await,
    ];

    // Every check runs on exactly one node, and every node runs some.
    let spread = within(PATIENCE, "60 checks spread over three nodes", async || {
        let runners = runners(&nodes[2]).await;
        let once = checks.iter().all(|c| runners.get(c).is_some_and(|r| r.len() == 1));
        let per_node: BTreeMap<String, usize> = runners.values().flatten().fold(BTreeMap::new(), |mut counts, node| {
            *counts.entry(node.clone()).or_default() += 1;
            counts
        });
        (once && per_node.len() == 3).then_some(per_node)
    })
    .await;
    eprintln!("checks per node: {spread:?}");

    // Logs posted to a are found from c.
    let posted = reqwest::Client::new()
        .post(format!("{}/v1/logs?service=bot", nodes[0].api))
        .json(&json!([{"level": "error", "msg": "payment gateway unreachable from node a"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 202);
    let found = within(PATIENCE, "the record found from node c", async || {
        let (_, found) = crate::support::get_json(&format!("{}/v1/logs?q=gateway", nodes[2].api)).await;
        (found["records"].as_array()?.len() == 1).then_some(found)
    })
    .await;
    assert_eq!(found["records"][0]["message"], "payment gateway unreachable from node a");

    // The dashboard socket on b shows runs that a makes.
    let on_a: BTreeSet<String> =
        runners(&nodes[1]).await.into_iter().filter(|(_, r)| r == &["a"]).map(|(c, _)| c).collect();
    let socket_url = format!("{}/ws", nodes[1].dashboard.as_deref().unwrap().replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(socket_url).await.unwrap();
    let seen = within(INTERVAL * 3, "a run of node a's shown on node b's dashboard", async || {
        let frame = tokio::time::timeout(Duration::from_secs(1), socket.next()).await.ok()??.ok()?;
        let frame: Value = serde_json::from_str(frame.to_text().ok()?).ok()?;
        let check = frame["data"]["check"].as_str()?.to_string();
        (frame["event"] == "check.ran" && on_a.contains(&check)).then_some(check)
    })
    .await;
    eprintln!("node b's dashboard showed {seen}, run by node a");

    // An alert fires once; the dashboard of a node that does not lead shows it as it fires.
    let leader = leader(&nodes[0]).await;
    assert_ne!(leader, "b", "a, started first, leads");
    up.store(false, Ordering::SeqCst);
    received.wait_for("flappy", &["firing"]).await;
    within(Duration::from_secs(10), "the alert shown on node b's dashboard", async || {
        // Every frame waiting is read (runs keep coming), up to a bound per look.
        for _ in 0..1000 {
            let frame = tokio::time::timeout(Duration::from_secs(1), socket.next()).await.ok()??.ok()?;
            let frame: Value = serde_json::from_str(frame.to_text().ok()?).ok()?;
            if frame["event"] == "alert.fired" && frame["data"]["labels"]["check"] == "flappy" {
                return Some(());
            }
        }
        None
    })
    .await;
    drop(socket);
    // Node b, which does not lead, answers with the rules as the leader evaluated them.
    within(PATIENCE, "the rule firing in node b's rule states", async || {
        let (_, states) = crate::support::get_json(&format!("{}/v1/alerts/rule-states", nodes[1].api)).await;
        let rule = states.as_array()?.iter().find(|r| r["name"] == "service_down")?.clone();
        (rule["state"] == "firing" && rule["last_evaluation"].is_string()).then_some(())
    })
    .await;

    // The leader is killed (with whatever checks it runs); the check comes back while no node leads.
    let killed = nodes.iter().position(|n| n.name == leader).unwrap();
    let killed_at = std::time::SystemTime::now();
    signal(&nodes[killed].child, Signal::SIGKILL);
    nodes[killed].child.wait().unwrap();
    let dead = nodes.remove(killed);
    up.store(true, Ordering::SeqCst);
    eprintln!("killed {} (the leader)", dead.name);

    received.wait_for("flappy", &["firing", "resolved"]).await;
    // The survivors run every check between them; the killed node runs none.
    let survivors: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    within(PATIENCE, "the killed node's checks taken over", async || {
        let runners = runners(&nodes[0]).await;
        checks.iter().all(|c| runners.get(c).is_some_and(|r| r.len() == 1 && survivors.contains(&r[0]))).then_some(())
    })
    .await;
    let status = status(&nodes[0]).await;
    let gone = status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == dead.name.as_str()).unwrap().clone();
    assert_eq!((gone["live"].clone(), gone["checks"].clone()), (json!(false), json!([])), "{gone}");

    // Two more intervals of history after the kill, then every check's runs are read back: no gap longer than two
    // intervals, and no two runs closer than half of one (a check run twice at once).
    tokio::time::sleep(INTERVAL * 2).await;
    let storage = Storage::connect(&Secret::new(url.clone()), no_file).await.unwrap();
    let runs: Vec<(String, i64)> = storage
        .read(|db| {
            db.query_map(
                "SELECT check_name, started_at FROM check_runs WHERE check_name LIKE 'service-%'
                 ORDER BY check_name, started_at",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
        .unwrap();
    storage.close().await.unwrap();
    let killed_ms = selfmon::storage::to_millis(killed_at);
    let interval_ms = i64::try_from(INTERVAL.as_millis()).unwrap();
    for check in &checks {
        let times: Vec<i64> = runs.iter().filter(|(c, _)| c == check).map(|(_, t)| *t).collect();
        assert!(
            times.last().is_some_and(|last| *last > killed_ms + interval_ms),
            "{check} ran after the kill: {times:?}"
        );
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap <= 2 * interval_ms, "{check}: {gap} ms between runs at {pair:?} (killed at {killed_ms})");
            assert!(gap >= interval_ms / 2, "{check} ran twice at once: {gap} ms apart at {pair:?}");
        }
    }
    // Nothing more about the alert, from any node.
    tokio::time::sleep(ROUND * 2).await;
    assert_eq!(received.statuses("flappy"), ["firing", "resolved"]);
}

/// A notification the leader was in the middle of sending when it was killed goes out from the next leader, and the
/// alert's resolution once after it: the receiver holds the first message unanswered while the leader is killed.
#[tokio::test(flavor = "multi_thread")]
async fn a_notification_cut_short_by_the_leaders_death_goes_out_from_the_next_leader() {
    let url = postgres::shared().database();
    let (up, service) = switchable_service().await;
    let (received, hook) = AlertReceiver::start(1).await;
    let shared = format!(
        "[alerting]\ninterval = \"1s\"\ngroup_wait = \"0s\"\ngroup_interval = \"1s\"\n\
         default_channels = [\"receiver\"]\n\n[[channel]]\nname = \"receiver\"\nkind = \"webhook\"\nurl = \"{hook}\"\n\n\
         [[check]]\nname = \"flappy\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{service}\"\n"
    );
    let mut nodes = vec![start_node("a", &url, &shared, false).await, start_node("b", &url, &shared, false).await];
    let leader = leader(&nodes[0]).await;

    up.store(false, Ordering::SeqCst);
    within(PATIENCE, "the firing notification at the receiver", async || (received.arrived() == 1).then_some(())).await;
    let killed = nodes.iter().position(|n| n.name == leader).unwrap();
    signal(&nodes[killed].child, Signal::SIGKILL);
    nodes[killed].child.wait().unwrap();
    let dead = nodes.remove(killed);
    eprintln!("killed {} (the leader) while its notification was unanswered", dead.name);
    assert!(received.statuses("flappy").is_empty(), "the first message was held unanswered");

    received.wait_for("flappy", &["firing"]).await;
    up.store(true, Ordering::SeqCst);
    received.wait_for("flappy", &["firing", "resolved"]).await;
    tokio::time::sleep(ROUND * 2).await;
    assert_eq!(received.statuses("flappy"), ["firing", "resolved"]);
    assert_eq!(received.arrived(), 3, "the message cut short, then each once");
}
