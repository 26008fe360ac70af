//! Drop-in plugins: a component in the plugins folder is loaded and runs like a built-in one; a file that is not
//! a usable plugin is refused with a reason while the rest of selfmon carries on.

use selfmon_plugin_artifacts::guests;

use crate::support::{Selfmon, Workdir};

#[tokio::test(flavor = "multi_thread")]
async fn dropped_in_plugins_run_and_bad_files_do_not_stop_the_host() {
    let config = r#"
[[check]]
name = "dropped-in"
plugin = "noop"
interval = "1s"
"#;
    let workdir = Workdir::new(config, &[("noop", guests::NOOP), ("broken", &guests::NOOP[..guests::NOOP.len() / 2])]);
    let selfmon = Selfmon::start(&workdir).await;
    let state = selfmon.first_result("dropped-in").await;
    assert_eq!(state["status"], "healthy", "{state:#}");
    assert_eq!(state["summary"], "dropped-in is fine");
    assert_eq!(state["plugin"], "noop");
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_name_already_taken_is_refused_and_the_first_one_kept() {
    let workdir = Workdir::new("", &[("a-noop", guests::NOOP), ("b-noop", guests::NOOP)]);
    let config = workdir.config();
    let host = selfmon::app::host::Host::build(config).await.unwrap();
    assert!(host.plugins.get("noop").is_some());
    let refused = host.plugins.refused();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].file.ends_with("b-noop.wasm"));
    assert!(refused[0].reason.starts_with("the name `noop` is already taken by "), "{}", refused[0].reason);
}
