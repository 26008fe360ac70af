//! Logs over real HTTP into a real store (a SQLite file; a PostgreSQL database too where a test runs on both):
//! realistic lines of several shapes through the built-in `json` parser plugin (gzip and NDJSON included), full-text
//! and filtered search, and a parser that crashes costing only its batch's parsing.

use std::io::Write;

use selfmon_plugin_artifacts::guests;
use serde_json::{Value, json};

use crate::support::{ENGINES, Engine, Selfmon, Workdir, gzip};

async fn post(selfmon: &Selfmon, query: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("{}/v1/logs{query}", selfmon.url)).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn realistic_lines_are_stored_parsed_or_raw_and_found_again() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        realistic_lines_on(engine).await;
    }
}

async fn realistic_lines_on(engine: Engine) {
    let workdir = Workdir::on(engine, "[api]\nmax_body = \"8 MiB\"\n", &[]);
    let selfmon = Selfmon::start(&workdir).await;

    let traceback = json!({
        "timestamp": "2026-11-26T10:00:00.123+03:00", "levelname": "ERROR", "name": "bot.handlers",
        "message": "Reply to user failed", "module": "handlers", "function": "reply", "line": 42,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "user_id": "u-1001",
        "service": "telegram-bot",
        "exception": {"type": "httpx.ReadTimeout", "message": "timed out",
                      "traceback": ["Traceback (most recent call last):",
                                    "  File \"/app/bot/handlers.py\", line 42, in reply",
                                    "    await client.send_message(chat_id, text)"]}
    });
    let mut ndjson = Vec::new();
    for line in [
        traceback.to_string(),
        json!({"ts": 1795687200.5, "level": "warning", "msg": "Медленный ответ OpenAI 🐢", "latency_ms": 5300})
            .to_string(),
        json!({"time": "2026-11-26T07:00:01Z", "level": "SECURITY", "event": "login failed", "user_id": "u-66"})
            .to_string(),
        String::new(),
        "2026-11-26 10:00:00,123 - bot - ERROR - a plain Python logging line".into(),
        json!({"level": "info", "msg": format!("long {}", "x".repeat(300_000))}).to_string(),
        format!("toolong {}", "y".repeat(1_100_000)),
    ] {
        ndjson.extend_from_slice(line.as_bytes());
        ndjson.push(b'\n');
    }
    // Invalid UTF-8 and binary garbage on lines of their own.
    ndjson.extend_from_slice(b"{\"msg\": \"caf\xe9\"}\n\x00\x01\x02\xff\xfe garbage\n");

    let (status, answer) = post(
        &selfmon,
        "?source=bot-logs&service=telegram-bot",
        gzip(&ndjson),
        &[("content-encoding", "gzip"), ("content-type", "application/x-ndjson")],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["skipped"], 1, "the empty line: {answer}");
    assert_eq!(answer["records"], 8, "{answer}");
    assert_eq!(answer["unparsed"], 3, "the plain line, the line over 1 MiB and the garbage: {answer}");
    assert_eq!(answer["accepted"], 8);

    // Found by a word of the traceback, with every field normalized.
    let (_, found) = selfmon.get("/v1/logs?q=ReadTimeout").await;
    let record = &found["records"][0];
    assert_eq!(found["records"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(record["timestamp"], "2026-11-26T07:00:00.123Z", "converted to UTC");
    assert_eq!(record["level"], "error");
    assert_eq!((record["service"].as_str(), record["logger"].as_str()), (Some("telegram-bot"), Some("bot.handlers")));
    let pseudonym = record["user_id"].as_str().unwrap();
    assert!(pseudonym.starts_with("u_"), "the user is stored as a pseudonym: {pseudonym}");
    let (_, by_user) = selfmon.get("/v1/logs?user_id=u-1001").await;
    assert_eq!(by_user["records"][0]["id"], record["id"], "found by the id the service knows");
    assert_eq!(record["fields"]["line"], 42);
    assert!(record["message"].as_str().unwrap().contains("await client.send_message"), "{record}");

    // The GraphQL twin answers the same.
    let query = "{ logs(text: \"ReadTimeout\", levels: [\"ERROR\"]) { level userId traceId } }";
    let graphql = selfmon.graphql(None, query, Value::Null).await;
    assert_eq!(
        graphql["data"]["logs"],
        json!([{"level": "error", "userId": pseudonym, "traceId": "4bf92f3577b34da6a3ce929d0e0e4736"}])
    );

    // Filters, alone and together.
    let (_, by_trace) = selfmon.get("/v1/logs?trace_id=4bf92f3577b34da6a3ce929d0e0e4736").await;
    assert_eq!(by_trace["records"].as_array().unwrap().len(), 1);
    let (_, security) = selfmon.get("/v1/logs?level=security").await;
    assert_eq!(security["records"][0]["message"], "login failed");
    let (_, unicode) = selfmon.get("/v1/logs?q=%D0%BC%D0%B5%D0%B4%D0%BB%D0%B5%D0%BD%D0%BD%D1%8B%D0%B9").await;
    assert_eq!(unicode["records"][0]["level"], "warning", "a case-insensitive Cyrillic word: {unicode}");
    assert_eq!(unicode["records"][0]["timestamp"], "2026-11-26T10:00:00.500Z");
    let (_, raw) = selfmon.get("/v1/logs?q=plain+AND+logging").await;
    assert_eq!(raw["records"][0]["parsed"], false);
    assert!(raw["records"][0]["error"].as_str().unwrap().starts_with("not JSON"));
    let (_, page) = selfmon.get("/v1/logs?service=telegram-bot&limit=2").await;
    assert_eq!((page["records"].as_array().unwrap().len(), page["more"].as_bool()), (2, Some(true)));
    let (_, in_range) = selfmon.get("/v1/logs?from=2026-11-26T06:59:00Z&to=2026-11-26T07:00:00.200Z").await;
    assert_eq!(in_range["records"].as_array().unwrap().len(), 1, "{in_range}");
    let (_, long) = selfmon.get("/v1/logs?q=long").await;
    assert_eq!(long["records"][0]["message"].as_str().unwrap().len(), 300_005, "a long line is kept whole");
    let (_, too_long) = selfmon.get("/v1/logs?q=toolong").await;
    assert_eq!(too_long["records"][0]["message"].as_str().unwrap().len(), 1 << 20, "past 1 MiB it is cut");
    assert_eq!(too_long["records"][0]["parsed"], false);
    let (_, latin) = selfmon.get("/v1/logs?q=caf*").await;
    assert_eq!(latin["records"][0]["message"], "caf\u{fffd}", "invalid UTF-8 is replaced, not lost: {latin}");

    // Bad searches are a clear 400, never a 500.
    for query in ["q=%22unbalanced", "q=%27%29+OR+1%3D1+--", "q=col%3Avalue", "level=loud", "from=yesterday"] {
        let (status, body) = selfmon.get(&format!("/v1/logs?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }

    // A JSON array of records and lines; items of other kinds are counted as rejected.
    let array = json!([{"msg": "from an array", "level": "debug"}, "a bare line", 5, null]);
    let (status, answer) =
        post(&selfmon, "", array.to_string().into_bytes(), &[("content-type", "application/json")]).await;
    assert_eq!((status, answer["accepted"].as_u64(), answer["rejected"].as_u64()), (202, Some(2), Some(2)), "{answer}");
    let (status, answer) = post(&selfmon, "?parser=http", b"{}".to_vec(), &[]).await;
    assert_eq!(status, 400, "a checker is not a parser: {answer}");
    let (status, _) = post(&selfmon, "", b"not gzip".to_vec(), &[("content-encoding", "gzip")]).await;
    assert_eq!(status, 400);

    let (_, array) = selfmon.get("/v1/logs?q=array").await;
    assert_eq!(array["records"].as_array().unwrap().len(), 1, "{array}");
    if engine == Engine::Sqlite {
        // Stored in the SQLite file, with the full-text index.
        let stored: i64 = workdir.db().query_row("SELECT COUNT(*) FROM logs", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, 10);
        let indexed: i64 = workdir
            .db()
            .query_row("SELECT COUNT(*) FROM logs_fts WHERE logs_fts MATCH 'array'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(indexed, 1);
    }
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_parser_costs_only_its_batch() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        a_crashing_parser_costs_only_its_batch_on(engine).await;
    }
}

async fn a_crashing_parser_costs_only_its_batch_on(engine: Engine) {
    let workdir = Workdir::on(engine, "", &[("fragile", guests::FRAGILE_PARSER)]);
    let selfmon = Selfmon::start(&workdir).await;
    let (status, answer) = post(&selfmon, "?parser=fragile", b"first\nboom\n  continued".to_vec(), &[]).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!((answer["parser_failures"].as_u64(), answer["records"].as_u64()), (Some(3), Some(3)), "{answer}");
    let (_, kept) = selfmon.get("/v1/logs?q=boom").await;
    let error = kept["records"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("the parser `fragile` failed: the plugin crashed"), "{error}");
    assert_eq!(kept["records"][0]["parsed"], false);
    let metrics = reqwest::get(format!("{}/metrics", selfmon.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("selfmon_log_parser_failures_total{parser=\"fragile\"} 3"), "{metrics}");

    // The next batch parses, continuation lines joined to their record.
    let (_, answer) = post(&selfmon, "?parser=fragile", b"second\n  and more".to_vec(), &[]).await;
    assert_eq!((answer["records"].as_u64(), answer["continued"].as_u64()), (Some(1), Some(1)), "{answer}");
    let (_, joined) = selfmon.get("/v1/logs?q=second").await;
    assert_eq!(joined["records"][0]["message"], "second\n  and more");
    assert_eq!(joined["records"][0]["parsed"], true);
    selfmon.stop().await;
}

/// Every stored message of a source, oldest first.
async fn messages(selfmon: &Selfmon, source: &str) -> Vec<String> {
    let (_, found) = selfmon.get(&format!("/v1/logs?source={source}&limit=1000")).await;
    let mut messages: Vec<String> = found["records"]
        .as_array()
        .map(|records| records.iter().map(|r| r["message"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    messages.reverse();
    messages
}

async fn wait_for_messages(selfmon: &Selfmon, expected: &[&str]) {
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let stored = messages(selfmon, "bot").await;
        if stored.len() >= expected.len() {
            let mut sorted = stored.clone();
            sorted.sort();
            let mut wanted: Vec<String> = expected.iter().map(ToString::to_string).collect();
            wanted.sort();
            assert_eq!(sorted, wanted, "every line once, none twice");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited for {expected:?}, have {stored:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn append(path: &std::path::Path, messages: &[&str]) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for message in messages {
        writeln!(file, "{}", json!({"level": "info", "msg": message})).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_tailed_through_rotation_truncation_and_a_restart_without_loss_or_duplicates() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        files_are_tailed_through_rotation_truncation_and_a_restart_without_loss_or_duplicates_on(engine).await;
    }
}

async fn files_are_tailed_through_rotation_truncation_and_a_restart_without_loss_or_duplicates_on(engine: Engine) {
    let config = "[[log_source]]\nname = \"bot\"\nkind = \"file\"\npaths = [\"logs/*.log\"]\nservice = \"telegram-bot\"\npoll = \"100ms\"\n";
    let workdir = Workdir::on(engine, config, &[]);
    let dir = workdir.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("bot.log");
    append(&log, &["line-1", "line-2", "line-3"]);

    let selfmon = Selfmon::start(&workdir).await;
    wait_for_messages(&selfmon, &["line-1", "line-2", "line-3"]).await;
    append(&log, &["line-4", "line-5"]);
    wait_for_messages(&selfmon, &["line-1", "line-2", "line-3", "line-4", "line-5"]).await;

    // Rotation by rename: the last line written to the old file is not lost.
    append(&log, &["line-6"]);
    std::fs::rename(&log, dir.join("bot.log.1")).unwrap();
    let long = format!("line-7 {}", "x".repeat(200));
    append(&log, &[&long]);
    let mut so_far = vec!["line-1", "line-2", "line-3", "line-4", "line-5", "line-6", long.as_str()];
    wait_for_messages(&selfmon, &so_far).await;

    // Copy-truncate: the file shrinks under the reader, which starts again from the top.
    std::fs::copy(&log, dir.join("bot.log.2")).unwrap();
    std::fs::File::create(&log).unwrap();
    append(&log, &["line-8"]);
    so_far.push("line-8");
    wait_for_messages(&selfmon, &so_far).await;

    // A restart with lines written while selfmon was down.
    selfmon.stop().await;
    append(&log, &["line-9", "line-10"]);
    let selfmon = Selfmon::start(&workdir).await;
    so_far.extend(["line-9", "line-10"]);
    wait_for_messages(&selfmon, &so_far).await;
    let (_, record) = selfmon.get("/v1/logs?q=%22line-10%22").await;
    assert_eq!(record["records"][0]["service"], "telegram-bot");
    // Nothing more arrives later: the held-back records were not stored twice.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(messages(&selfmon, "bot").await.len(), so_far.len());
    selfmon.stop().await;
}

/// `count` JSON lines `{prefix}-{n}`, the first at 0.
fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}-{n:02} written at the usual place with the usual words")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_made_by_copy_truncate_is_read_only_where_the_original_was_not() {
    // Rotated copies are matched too, so a copy must be told from a new file.
    let config = "[[log_source]]\nname = \"bot\"\nkind = \"file\"\npaths = [\"logs/app.log*\"]\npoll = \"100ms\"\n";
    let workdir = Workdir::new(config, &[]);
    let dir = workdir.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("app.log");
    let mut expected = numbered("a", 10);
    append(&log, &expected.iter().map(String::as_str).collect::<Vec<_>>());
    let selfmon = Selfmon::start(&workdir).await;
    wait_for_messages(&selfmon, &expected.iter().map(String::as_str).collect::<Vec<_>>()).await;

    // Copied and truncated, the copy found only after the truncation was: it holds nothing unread.
    std::fs::copy(&log, dir.join("copy.tmp")).unwrap();
    std::fs::File::create(&log).unwrap();
    let b = numbered("b", 3);
    append(&log, &b.iter().map(String::as_str).collect::<Vec<_>>());
    expected.extend(b);
    wait_for_messages(&selfmon, &expected.iter().map(String::as_str).collect::<Vec<_>>()).await;
    std::fs::rename(dir.join("copy.tmp"), dir.join("app.log.1")).unwrap();
    // Once the tailer knows the copy (its mark is stored), nothing of it was read.
    let known = |path: &str| {
        let sql = "SELECT COUNT(*) FROM log_files WHERE path LIKE '%/' || ?1";
        workdir.db().query_row(sql, [path], |r| r.get::<_, i64>(0)).unwrap() == 1
    };
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while !known("app.log.1") {
        assert!(tokio::time::Instant::now() < deadline, "the copy was never found");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(messages(&selfmon, "bot").await.len(), expected.len(), "the copy read again");

    // Lines written while selfmon is down, then the log copied but not yet truncated when it starts: the new lines
    // are in both, and read once.
    selfmon.stop().await;
    let c = numbered("c", 8);
    append(&log, &c.iter().map(String::as_str).collect::<Vec<_>>());
    expected.extend(c);
    std::fs::rename(dir.join("app.log.1"), dir.join("app.log.2")).unwrap();
    std::fs::copy(&log, dir.join("app.log.1")).unwrap();
    let selfmon = Selfmon::start(&workdir).await;
    wait_for_messages(&selfmon, &expected.iter().map(String::as_str).collect::<Vec<_>>()).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    let d = numbered("d", 4);
    append(&log, &d.iter().map(String::as_str).collect::<Vec<_>>());
    expected.extend(d);
    wait_for_messages(&selfmon, &expected.iter().map(String::as_str).collect::<Vec<_>>()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(messages(&selfmon, "bot").await.len(), expected.len(), "nothing read twice later");
    // A rotated file deleted is forgotten.
    assert!(known("app.log.2"));
    std::fs::remove_file(dir.join("app.log.2")).unwrap();
    while known("app.log.2") {
        assert!(tokio::time::Instant::now() < deadline, "a deleted file is still known");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_begin_with_the_same_banner_are_each_read_whole() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        files_that_begin_with_the_same_banner_are_each_read_whole_on(engine).await;
    }
}

async fn files_that_begin_with_the_same_banner_are_each_read_whole_on(engine: Engine) {
    // Every file starts with the same line, longer than a fingerprint: only what follows tells them apart.
    let config = "[[log_source]]\nname = \"bot\"\nkind = \"file\"\npaths = [\"logs/app.log*\"]\npoll = \"100ms\"\n";
    let workdir = Workdir::on(engine, config, &[]);
    let dir = workdir.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let banner = format!("coach-bot starting {}", "=".repeat(300));
    let log = dir.join("app.log");
    let mut expected = vec![banner.clone()];
    expected.extend(numbered("a", 10));
    append(&log, &expected.iter().map(String::as_str).collect::<Vec<_>>());
    let selfmon = Selfmon::start(&workdir).await;
    wait_for_messages(&selfmon, &expected.iter().map(String::as_str).collect::<Vec<_>>()).await;

    // Rotated by renaming; the new file starts like the old one, which is still followed under its new name.
    std::fs::rename(&log, dir.join("app.log.1")).unwrap();
    let mut b = vec![banner.clone()];
    b.extend(numbered("b", 5));
    append(&log, &b.iter().map(String::as_str).collect::<Vec<_>>());
    expected.extend(b);
    wait_for_messages(&selfmon, &expected.iter().map(String::as_str).collect::<Vec<_>>()).await;

    // A file that left the glob is no original either: a new file that starts like it is read from its start.
    std::fs::rename(dir.join("app.log.1"), dir.join("archived")).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut c = vec![banner.clone()];
    c.extend(numbered("c", 4));
    append(&dir.join("app.log.9"), &c.iter().map(String::as_str).collect::<Vec<_>>());
    expected.extend(c);
    wait_for_messages(&selfmon, &expected.iter().map(String::as_str).collect::<Vec<_>>()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(messages(&selfmon, "bot").await.len(), expected.len(), "nothing read twice later");
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn log_sources_are_checked_with_the_rest_of_the_config() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        log_sources_are_checked_with_the_rest_of_the_config_on(engine).await;
    }
}

async fn log_sources_are_checked_with_the_rest_of_the_config_on(engine: Engine) {
    let config = "[[log_source]]\nname = \"a\"\nkind = \"file\"\nparser = \"http\"\npaths = [\"[\"]\n\n\
                  [[log_source]]\nname = \"a\"\nkind = \"file\"\n";
    let workdir = Workdir::on(engine, config, &[]);
    let Err(selfmon::app::host::StartError::Config(errors)) = selfmon::app::host::Host::build(workdir.config()).await
    else {
        panic!("the config is not valid");
    };
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let all = messages.join("\n");
    let line = |text: &str| -> usize {
        let message = messages.iter().find(|m| m.contains(text)).unwrap_or_else(|| panic!("no `{text}` in:\n{all}"));
        message.split(", line ").nth(1).and_then(|rest| rest.split(':').next()).unwrap().parse().unwrap()
    };
    let first = line(
        "log source `a`: `parser`: `http` is not a parser plugin (parsers: combined, json, logfmt, python, syslog, or auto)",
    );
    assert_eq!(line("log source `a`: `paths`: `[` is not a valid pattern"), first);
    let second = line("log source `a`: the name is used twice");
    assert_eq!(second, first + 6, "each problem at its table's line: {all}");
    assert_eq!(line("log source `a`: `paths` is empty"), second);
}

#[tokio::test(flavor = "multi_thread")]
async fn parser_config_is_checked_by_its_parser() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        parser_config_is_checked_by_its_parser_on(engine).await;
    }
}

async fn parser_config_is_checked_by_its_parser_on(engine: Engine) {
    let config = "[[log_source]]\nname = \"sys\"\nkind = \"http\"\nparser = \"syslog\"\n\
                  [log_source.parser_config]\nutc_offset = \"EST\"\n\n\
                  [[log_source]]\nname = \"any\"\nkind = \"http\"\nparser = \"auto\"\n\
                  [log_source.parser_config]\nutc_offset = \"+03:00\"\n";
    let workdir = Workdir::on(engine, config, &[]);
    let Err(selfmon::app::host::StartError::Config(errors)) = selfmon::app::host::Host::build(workdir.config()).await
    else {
        panic!("the config is not valid");
    };
    let all = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(
        all.contains("log source `sys`: `parser_config`: `utc_offset`: `EST` is not an offset such as +03:00"),
        "{all}"
    );
    assert!(all.contains("log source `any`: `parser`: `parser_config` needs a named parser, not `auto`"), "{all}");
}

/// Lines of every built-in format, posted with `parser=auto`: each batch goes to the parser that understands it.
#[tokio::test(flavor = "multi_thread")]
async fn every_built_in_format_and_auto_detection() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        every_built_in_format_and_auto_detection_on(engine).await;
    }
}

async fn every_built_in_format_and_auto_detection_on(engine: Engine) {
    let config = "[[log_source]]\nname = \"edge\"\nkind = \"http\"\nparser = \"syslog\"\n\
                  [log_source.parser_config]\nutc_offset = \"+03:00\"\n";
    let workdir = Workdir::on(engine, config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let batches: [(&str, &str, &[&str]); 5] = [
        (
            "?parser=auto&source=nginx",
            "combined",
            &[
                r#"203.0.113.9 - - [26/Nov/2026:10:00:00 +0000] "GET /api/reply?id=7 HTTP/1.1" 502 157 "-" "python-httpx/0.27""#,
                r#"198.51.100.7 - - [26/Nov/2026:10:00:01 +0000] "GET /item?id=1%27%20UNION%20SELECT%20pw%20FROM%20users-- HTTP/1.1" 403 0 "-" "Mozilla/5.0""#,
                r#"10.0.0.2 - - [26/Nov/2026:10:00:02 +0000] "GET /health HTTP/1.1" 200 2 "-" "kube-probe/1.29""#,
            ],
        ),
        (
            "?parser=auto&source=auth",
            "syslog",
            &[
                "<38>1 2026-11-26T10:00:03Z db1 sshd 991 - - Accepted publickey for deploy",
                "<38>Nov 26 10:00:04 db1 sshd[992]: Failed password for root from 203.0.113.66 port 4242 ssh2",
            ],
        ),
        (
            "?parser=auto&source=go",
            "logfmt",
            &[r#"time=2026-11-26T10:00:05Z level=warn msg="queue is filling up" queue=replies depth=950"#],
        ),
        (
            "?parser=auto&source=worker",
            "python",
            &[
                "2026-11-26 10:00:06,250 - worker.jobs - CRITICAL - Job 17 crashed",
                "Traceback (most recent call last):",
                "ZeroDivisionError: division by zero",
            ],
        ),
        // A configured source's parser_config applies: a zone-less syslog time read at +03:00.
        ("?source=edge", "syslog", &["<27>Nov 26 13:00:07 edge1 haproxy[5]: backend api has no server available"]),
    ];
    for (query, _, lines) in batches {
        let (status, answer) = post(&selfmon, query, lines.join("\n").into_bytes(), &[]).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["unparsed"], 0, "{query}: {answer}");
    }
    let (_, found) = selfmon.get("/v1/logs?limit=50").await;
    let records = found["records"].as_array().unwrap();
    let by = |message: &str| {
        records
            .iter()
            .find(|r| r["message"].as_str().unwrap().starts_with(message))
            .unwrap_or_else(|| panic!("{message}: {found}"))
    };
    let error = by("GET /api/reply?id=7 HTTP/1.1 502");
    assert_eq!((error["level"].as_str(), error["fields"]["status_class"].as_str()), (Some("error"), Some("5xx")));
    assert_eq!(error["timestamp"], "2026-11-26T10:00:00.000Z");
    assert_eq!(by("GET /item?id=1")["fields"]["threat"], "sql-injection");
    assert_eq!(by("GET /health")["level"], "info");
    let failed = by("Failed password for root");
    assert_eq!((failed["level"].as_str(), failed["logger"].as_str()), (Some("security"), Some("sshd")));
    assert_eq!(failed["fields"]["remote_addr"], "203.0.113.66");
    let queue = by("queue is filling up");
    assert_eq!((queue["level"].as_str(), queue["fields"]["queue"].as_str()), (Some("warning"), Some("replies")));
    let crash = by("Job 17 crashed");
    assert_eq!(
        crash["message"],
        "Job 17 crashed\nTraceback (most recent call last):\nZeroDivisionError: division by zero"
    );
    assert_eq!(crash["level"], "critical");
    let haproxy = by("backend api has no server available");
    assert_eq!(
        (haproxy["level"].as_str(), haproxy["timestamp"].as_str()),
        (Some("error"), Some("2026-11-26T10:00:07.000Z"))
    );
    assert_eq!(records.len(), 8, "{found}");

    // A stray line of another format does not win the batch: JSON stays JSON, the stray line is kept raw.
    let mixed = [
        r#"{"level": "info", "msg": "first json"}"#,
        "2026-11-26 10:00:08,000 - uvicorn - WARNING - a stray python line",
        r#"{"level": "info", "msg": "second json"}"#,
        r#"{"level": "info", "msg": "third json"}"#,
    ];
    let (_, answer) = post(&selfmon, "?parser=auto&source=mixed", mixed.join("\n").into_bytes(), &[]).await;
    assert_eq!((answer["records"].as_u64(), answer["unparsed"].as_u64()), (Some(4), Some(1)), "{answer}");

    // Lines no built-in parser understands are kept raw.
    let (_, answer) = post(&selfmon, "?parser=auto", b"just words\n\x00\x01 binary".to_vec(), &[]).await;
    assert_eq!((answer["records"].as_u64(), answer["unparsed"].as_u64()), (Some(2), Some(2)), "{answer}");
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traceback_written_in_pieces_joins_its_record() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        a_traceback_written_in_pieces_joins_its_record_on(engine).await;
    }
}

async fn a_traceback_written_in_pieces_joins_its_record_on(engine: Engine) {
    let config = "[[log_source]]\nname = \"worker\"\nkind = \"file\"\nparser = \"python\"\npaths = [\"worker.log\"]\npoll = \"100ms\"\n";
    let workdir = Workdir::on(engine, config, &[]);
    let log = workdir.path().join("worker.log");
    let selfmon = Selfmon::start(&workdir).await;
    let write = |text: &str| {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    };
    write("2026-11-26 10:00:00,123 - worker.jobs - ERROR - Job 17 failed\nTraceback (most recent call last):\n");
    // The rest of the traceback comes a moment later, as a service writes it.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    write("  File \"/app/jobs.py\", line 9, in run\nZeroDivisionError: division by zero\n");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    write("2026-11-26 10:00:01,000 - worker.jobs - INFO - Job 18 done\n");

    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    let found = loop {
        let (_, found) = selfmon.get("/v1/logs?source=worker").await;
        if found["records"].as_array().is_some_and(|r| r.len() >= 2) {
            break found;
        }
        assert!(tokio::time::Instant::now() < deadline, "{found}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let records = found["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{found}");
    assert_eq!(
        records[1]["message"],
        "Job 17 failed\nTraceback (most recent call last):\n  File \"/app/jobs.py\", line 9, in run\nZeroDivisionError: division by zero"
    );
    assert_eq!((records[1]["level"].as_str(), records[1]["logger"].as_str()), (Some("error"), Some("worker.jobs")));
    assert_eq!(records[0]["message"], "Job 18 done");

    let metrics = reqwest::get(format!("{}/metrics", selfmon.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("selfmon_log_records_total{level=\"error\"} 1"), "{metrics}");
    selfmon.stop().await;
}

/// Aggregation, analysis, error templates with a spike, user activity and security events over records posted
/// with times spread across the last hours.
#[tokio::test(flavor = "multi_thread")]
async fn logs_are_aggregated_and_analysed() {
    // User ids as sent, to name them in the answers.
    let workdir = Workdir::new("[privacy]\npseudonymize_users = false\n", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let mut lines = Vec::new();
    // A steady error every ten minutes for five hours, from two users.
    for i in 1..=30 {
        lines.push(json!({"ts": now - f64::from(i) * 600.0, "level": "error", "service": "bot", "user_id": format!("u{}", i % 2),
            "msg": format!("Qdrant search took {} ms for collection memories", 1000 + i)}));
    }
    // The same failure for different chats: rare for hours, then a burst in the last two minutes.
    for i in 1..=4 {
        lines.push(json!({"ts": now - f64::from(i) * 3600.0, "level": "error", "service": "bot", "user_id": "u7",
            "msg": "Reply to chat 1001 failed: Telegram answered HTTP 429"}));
    }
    for i in 0..10 {
        lines.push(json!({"ts": now - 100.0 + f64::from(i), "level": "critical", "service": "bot", "user_id": format!("u{}", 10 + i),
            "msg": format!("Reply to chat {} failed: Telegram answered HTTP 429", 2000 + i)}));
    }
    for i in 0..20 {
        lines.push(json!({"ts": now - f64::from(i) * 60.0, "level": "info", "service": "api", "user_id": "u1", "msg": "request served"}));
    }
    lines.push(json!({"ts": now - 30.0, "level": "audit", "service": "api", "msg": "API key rotated by admin"}));
    let body = lines.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    let (status, answer) = post(&selfmon, "", body.into_bytes(), &[]).await;
    assert_eq!((status, answer["records"].as_u64()), (202, Some(65)), "{answer}");

    // Six failed logins from one address and a SQL injection probe, in the formats they arrive in.
    let clock = |ago: f64| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs((now - ago) as u64);
        humantime::format_rfc3339_seconds(at).to_string()
    };
    let auth: Vec<String> = (0..6)
        .map(|i| {
            format!(
                "<38>1 {} db1 sshd {i} - - Failed password for root from 203.0.113.66 port 22 ssh2",
                clock(50.0 + f64::from(i))
            )
        })
        .collect();
    let (status, _) = post(&selfmon, "?parser=syslog&source=auth", auth.join("\n").into_bytes(), &[]).await;
    assert_eq!(status, 202);
    // 2026-11-27T03:40:00Z as an access log writes it: 27/Nov/2026:03:40:00 +0000.
    let iso = clock(20.0);
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        [iso[5..7].parse::<usize>().unwrap() - 1];
    let stamp = format!("{}/{month}/{}:{} +0000", &iso[8..10], &iso[..4], &iso[11..19]);
    let probe = format!(r#"198.51.100.7 - - [{stamp}] "GET /item?id=1%27%20OR%201=1-- HTTP/1.1" 200 5 "-" "curl/8""#);
    let (status, _) = post(&selfmon, "?parser=combined&source=nginx", probe.into_bytes(), &[]).await;
    assert_eq!(status, 202);

    let (status, aggregate) = selfmon.get("/v1/logs/aggregate?hours=6&period=hour").await;
    assert_eq!(status, 200, "{aggregate}");
    let buckets = aggregate["buckets"].as_array().unwrap();
    assert!((6..=7).contains(&buckets.len()), "{aggregate}");
    let total: u64 = buckets.iter().map(|b| b["total"].as_u64().unwrap()).sum();
    assert_eq!(total, 72, "every record in some bucket: {aggregate}");
    let last = buckets.last().unwrap();
    let level = |bucket: &Value, name: &str| {
        bucket["by_level"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map_or(0, |c| c["count"].as_u64().unwrap())
    };
    assert!(level(last, "critical") == 10 || level(&buckets[buckets.len() - 2], "critical") == 10, "{aggregate}");
    let (status, minutes) = selfmon.get("/v1/logs/aggregate?hours=1&period=minute").await;
    assert_eq!((status.as_u16(), minutes["buckets"].as_array().map(Vec::len)), (200, Some(61)), "{minutes}");
    let (status, refused) = selfmon.get("/v1/logs/aggregate?hours=2000&period=minute").await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("more than 10000 buckets"), "{refused}");
    let (status, _) = selfmon.get("/v1/logs/aggregate?period=week").await;
    assert_eq!(status, 400);

    let (status, analysis) = selfmon.get("/v1/logs/analysis?hours=24").await;
    assert_eq!(status, 200, "{analysis}");
    assert_eq!(analysis["total_records"], 72);
    let errors = &analysis["error_analysis"];
    assert_eq!(errors["total_errors"], 44, "{errors}");
    let templates = errors["templates"].as_array().unwrap();
    let steady = &templates[0];
    assert_eq!(steady["template"], "Qdrant search took <num> ms for collection memories");
    assert_eq!(
        (steady["count"].as_u64(), steady["spike"].as_bool(), steady["affected_users"].as_u64()),
        (Some(30), Some(false), Some(2))
    );
    let burst = &templates[1];
    assert_eq!(burst["template"], "Reply to chat <num> failed: Telegram answered HTTP 429");
    assert_eq!(
        (burst["count"].as_u64(), burst["spike"].as_bool(), burst["affected_users"].as_u64()),
        (Some(14), Some(true), Some(11)),
        "{burst}"
    );
    assert_eq!(burst["samples"].as_array().unwrap().len(), 3);
    assert_eq!(analysis["user_activity"]["unique_users"], 13, "u0, u1, u7, u10–u19: {}", analysis["user_activity"]);
    assert_eq!(analysis["user_activity"]["top_users"][0]["user_id"], "u1");

    let security = &analysis["security"];
    assert_eq!(security["events"], 8, "{security}");
    let kinds: Vec<(&str, u64)> = security["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(kinds, [("auth_failure", 6), ("audit", 1), ("threat:sql-injection", 1)]);
    let bursts = security["auth_failure_bursts"].as_array().unwrap();
    assert_eq!(bursts.len(), 1, "{security}");
    assert_eq!(
        (bursts[0]["by"].as_str(), bursts[0]["value"].as_str(), bursts[0]["count"].as_u64()),
        (Some("remote_addr"), Some("203.0.113.66"), Some(6))
    );
    let (_, alone) = selfmon.get("/v1/logs/security?hours=1").await;
    assert_eq!(alone["events"], 8);
    assert_eq!(alone["recent"][0]["kind"], "threat:sql-injection", "newest first: {alone}");

    // /v1/errors serves the log templates beside the check runs', and GraphQL the same analysis.
    let (_, errors) = selfmon.get("/v1/errors?time_window=3600").await;
    assert_eq!(
        errors["logs"]["templates"][0]["template"], "Reply to chat <num> failed: Telegram answered HTTP 429",
        "{errors}"
    );
    assert_eq!(errors["logs"]["templates"][0]["spike"], true);
    let answer = selfmon
        .graphql(None, "{ logAnalysis(hours: 24) { errorAnalysis { totalErrors } userActivity { uniqueUsers } } logAggregate(hours: 2, period: HOUR) { buckets { total } } }", json!({}))
        .await;
    assert_eq!(answer["data"]["logAnalysis"]["errorAnalysis"]["totalErrors"], 44, "{answer}");
    assert_eq!(answer["data"]["logAnalysis"]["userActivity"]["uniqueUsers"], 13);
    selfmon.stop().await;
}

/// The cleanup removes records past their level's retention, keeps the rest, and holds the database under its
/// size cap by removing the oldest low-level records first; the file shrinks with it.
#[tokio::test(flavor = "multi_thread")]
async fn retention_and_the_size_cap_keep_the_store_small() {
    let config = "[api]\nmax_body = \"16 MiB\"\n\n[retention]\nlogs = \"1h\"\ninterval = \"1s\"\nmax_size = \"4 MiB\"\n\n\
                  [retention.log_levels]\ndebug = \"10m\"\nsecurity = \"30d\"\n";
    let workdir = Workdir::new(config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let records = [
        json!({"ts": now - 7200.0, "level": "info", "msg": "expired info"}),
        json!({"ts": now - 1200.0, "level": "debug", "msg": "expired debug"}),
        json!({"ts": now - 1200.0, "level": "info", "msg": "kept info"}),
        json!({"ts": now - 7200.0, "level": "security", "msg": "kept security"}),
    ];
    let (status, _) = post(&selfmon, "", Value::Array(records.to_vec()).to_string().into_bytes(), &[]).await;
    assert_eq!(status, 202);
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let mut kept = messages(&selfmon, "http").await;
        kept.sort();
        if kept == ["kept info", "kept security"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still stored: {kept:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // About 12 MiB of records, newer than the rest: the oldest go until the store fits in 4 MiB again.
    for batch in 0..6 {
        let records: Vec<Value> = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                json!({"ts": now - 600.0 + f64::from(n) * 0.01, "level": if n % 10 == 0 { "error" } else { "info" },
                       "msg": format!("bulk {n} {}", (0..200).map(|w| format!("w{}", (n * 7 + w) % 9973)).collect::<Vec<_>>().join(" "))})
            })
            .collect();
        let (status, answer) = post(&selfmon, "", Value::Array(records).to_string().into_bytes(), &[]).await;
        assert_eq!(status, 202, "{answer}");
    }
    let database = workdir.path().join("selfmon.db");
    let used = || {
        let db = rusqlite::Connection::open_with_flags(&database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let pragma = |name: &str| db.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0)).unwrap();
        (pragma("page_count") * pragma("page_size"), pragma("freelist_count"))
    };
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let (bytes, free) = used();
        if bytes <= 4 << 20 && free == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{bytes} bytes, {free} free pages");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The newest records and the higher levels are what is left.
    let (_, newest) = selfmon.get("/v1/logs?q=bulk&limit=1").await;
    assert!(newest["records"][0]["message"].as_str().unwrap().starts_with("bulk 5999 "), "{newest}");
    let (_, errors) = selfmon.get("/v1/logs?level=error&q=bulk&limit=1000").await;
    assert_eq!(errors["records"].as_array().unwrap().len(), 600, "every error record is kept while info ones go");
    let (_, security) = selfmon.get("/v1/logs?level=security").await;
    assert_eq!(security["records"][0]["message"], "kept security");
    let (_, oldest) = selfmon.get("/v1/logs?q=bulk&level=info&limit=1000&offset=0").await;
    let kept = oldest["records"].as_array().unwrap().len();
    assert!((1..5400).contains(&kept), "some, not all, info records are kept: {kept}");
    let metrics = reqwest::get(format!("{}/metrics", selfmon.url)).await.unwrap().text().await.unwrap();
    let deleted = |what: &str| -> u64 {
        let prefix = format!("selfmon_cleanup_deleted_total{{what=\"{what}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or("0").parse().unwrap()
    };
    assert_eq!(deleted("logs_expired"), 2, "{metrics}");
    assert!(deleted("logs_over_size") > 0, "{metrics}");
    selfmon.stop().await;
}

/// Reads server-sent events from a streaming response until `want` records have come, or the patience runs out.
async fn read_events(response: &mut reqwest::Response, want: usize) -> Vec<(i64, Value)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while events.len() < want {
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await.expect("events in time").unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open")));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field =
                |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).map(str::to_string);
            if field("event:").as_deref() == Some("record") {
                let id = field("id:").unwrap().parse().unwrap();
                events.push((id, serde_json::from_str(&field("data:").unwrap()).unwrap()));
            }
        }
    }
    events
}

/// A live tail sends matching records as they are committed, starts with a backlog, and resumes after
/// `Last-Event-ID` without losing or repeating records.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_tail_follows_matching_records() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        a_live_tail_follows_matching_records_on(engine).await;
    }
}

async fn a_live_tail_follows_matching_records_on(engine: Engine) {
    let workdir = Workdir::on(engine, "", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let line = |level: &str, msg: &str| json!({"level": level, "msg": msg, "service": "bot"}).to_string();
    let (status, _) =
        post(&selfmon, "", [line("error", "before the tail"), line("info", "quiet")].join("\n").into_bytes(), &[])
            .await;
    assert_eq!(status, 202);

    let client = reqwest::Client::new();
    let mut tail =
        client.get(format!("{}/v1/logs/tail?level=error,critical&backlog=5", selfmon.url)).send().await.unwrap();
    let mut words = client.get(format!("{}/v1/logs/tail?q=live", selfmon.url)).send().await.unwrap();
    assert_eq!(tail.status(), 200);
    assert_eq!(tail.headers()["content-type"], "text/event-stream");
    let backlog = read_events(&mut tail, 1).await;
    assert_eq!(backlog[0].1["message"], "before the tail");

    for n in 0..3 {
        let body = [line("info", &format!("info {n}")), line("critical", &format!("live {n}"))].join("\n");
        let (status, _) = post(&selfmon, "", body.into_bytes(), &[]).await;
        assert_eq!(status, 202);
    }
    let live = read_events(&mut tail, 3).await;
    let messages: Vec<&str> = live.iter().map(|(_, r)| r["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["live 0", "live 1", "live 2"], "only matching records, in order");
    let by_word = read_events(&mut words, 3).await;
    assert_eq!(
        by_word.iter().map(|(_, r)| r["message"].as_str().unwrap()).collect::<Vec<_>>(),
        ["live 0", "live 1", "live 2"]
    );
    drop((tail, words));

    // Reconnecting after `live 0` brings back what came after it, then new records.
    let mut resumed = client
        .get(format!("{}/v1/logs/tail?level=critical", selfmon.url))
        .header("last-event-id", live[0].0.to_string())
        .send()
        .await
        .unwrap();
    let (status, _) = post(&selfmon, "", line("critical", "after the reconnect").into_bytes(), &[]).await;
    assert_eq!(status, 202);
    let again = read_events(&mut resumed, 3).await;
    let messages: Vec<&str> = again.iter().map(|(_, r)| r["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["live 1", "live 2", "after the reconnect"]);

    let (status, error) = selfmon.get("/v1/logs/tail?q=%22unterminated").await;
    assert_eq!(status, 400, "{error}");
    let (status, _) = selfmon.get("/v1/logs/tail?backlog=5000").await;
    assert_eq!(status, 400);
    selfmon.stop().await;
}

/// `selfmon logs search` reads the store itself (a SQLite file, or a PostgreSQL database): the operator's question
/// answered with no server and no API key.
#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_searches_the_stored_logs() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        the_command_line_searches_the_stored_logs_on(engine).await;
    }
}

async fn the_command_line_searches_the_stored_logs_on(engine: Engine) {
    let workdir = Workdir::on(engine, "", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let lines = [
        json!({"ts": 1_795_687_200, "level": "error", "service": "bot", "msg": "Reply failed: timeout talking to OpenAI"}),
        json!({"ts": 1_795_687_201, "level": "info", "service": "bot", "msg": "timeout raised to 30 s"}),
        json!({"ts": 1_795_687_202, "level": "error", "service": "api", "msg": "Qdrant timeout\nTraceback (most recent call last):"}),
        json!({"ts": 1_795_687_203, "level": "warning", "msg": "a record of no service"}),
    ];
    let body = lines.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    let (status, _) = post(&selfmon, "", body.into_bytes(), &[]).await;
    assert_eq!(status, 202);
    selfmon.stop().await;

    let run = |args: &[&str]| crate::support::selfmon_command(&workdir).args(args).output().unwrap();
    let output = run(&["logs", "search", "timeout", "--level", "error"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let printed: Vec<&str> = text.lines().collect();
    assert_eq!(
        printed,
        [
            "2026-11-26T10:00:00.000Z ERROR    [bot] Reply failed: timeout talking to OpenAI",
            "2026-11-26T10:00:02.000Z ERROR    [api] Qdrant timeout",
            "    Traceback (most recent call last):",
        ],
        "oldest first, continuation lines indented"
    );
    let output = run(&["logs", "search", "--service", "bot", "--json", "--limit", "1"]);
    let record: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(record["message"], "timeout raised to 30 s", "the newest one");
    let output = run(&["logs", "search", "--level", "warning"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "2026-11-26T10:00:03.000Z WARNING  a record of no service\n");
    let output = run(&["logs", "search", "\"unterminated"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a valid query"), "{output:?}");
    let output = run(&["logs", "search", "--level", "loud"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("`--level`: `loud` is not one of"), "{output:?}");
}

/// Syslog over UDP (a datagram per message) and TCP (octet-counted frames on one connection, lines on another).
#[tokio::test(flavor = "multi_thread")]
async fn syslog_arrives_over_udp_and_tcp() {
    use tokio::io::AsyncWriteExt;

    let (udp, tcp) = (crate::support::free_port(), crate::support::free_port());
    let config = format!(
        "[[log_source]]\nname = \"net\"\nkind = \"syslog\"\nservice = \"edge\"\n\
         listen = [\"udp://127.0.0.1:{udp}\", \"tcp://127.0.0.1:{tcp}\"]\n"
    );
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(b"<11>1 2026-11-26T10:00:00Z db1 postgres 42 - - disk full\n", ("127.0.0.1", udp)).await.unwrap();
    // Octet counting on one connection, written a few bytes at a time so frames and their lengths arrive split.
    let mut counted = tokio::net::TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    let framed = "<38>1 2026-11-26T10:00:01Z db1 sshd 7 - - Failed password for root from 198.51.100.4 port 22 ssh2";
    let plain = "<13>Nov 26 10:00:02 db1 app: a plain line\nwith a newline in its frame";
    let mut bytes = format!("{} {framed}", framed.len()).into_bytes();
    bytes.extend_from_slice(format!("{} {plain}", plain.len()).as_bytes());
    for piece in bytes.chunks(7) {
        counted.write_all(piece).await.unwrap();
        counted.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    // A message per line on another.
    let mut lines = tokio::net::TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    lines
        .write_all(b"<14>Nov 26 10:00:03 db1 app: one per line\n<14>Nov 26 10:00:04 db1 app: and another\n")
        .await
        .unwrap();
    lines.flush().await.unwrap();

    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    let records = loop {
        let (_, found) = selfmon.get("/v1/logs?source=net").await;
        let records = found["records"].as_array().cloned().unwrap_or_default();
        if records.len() >= 5 {
            break records;
        }
        assert!(tokio::time::Instant::now() < deadline, "{found}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut messages: Vec<&str> = records.iter().map(|r| r["message"].as_str().unwrap()).collect();
    messages.sort_unstable();
    assert_eq!(
        messages,
        [
            "Failed password for root from 198.51.100.4 port 22 ssh2",
            "a plain line\nwith a newline in its frame",
            "and another",
            "disk full",
            "one per line"
        ]
    );
    let disk = records.iter().find(|r| r["message"] == "disk full").unwrap();
    assert_eq!((disk["level"].as_str(), disk["service"].as_str()), (Some("error"), Some("edge")));
    let login = records.iter().find(|r| r["logger"] == "sshd").unwrap();
    assert_eq!(login["level"], "security");
    selfmon.stop().await;

    // An address already taken stops selfmon with a message naming the source and the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = format!("[[log_source]]\nname = \"net\"\nkind = \"syslog\"\nlisten = [\"tcp://127.0.0.1:{port}\"]\n");
    let workdir = Workdir::new(&config, &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = selfmon::app::serve(workdir.config(), listener, std::future::pending()).await.unwrap_err();
    assert!(
        error.to_string().starts_with(&format!("log source `net`: cannot listen on tcp://127.0.0.1:{port}: ")),
        "{error}"
    );
}

/// Syslog over TCP is bounded: a message too long is stored cut and flagged, the connection going on, and one
/// address holds only so many connections.
#[tokio::test(flavor = "multi_thread")]
async fn syslog_cuts_long_messages_and_limits_connections_per_address() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        syslog_cuts_long_messages_and_limits_connections_per_address_on(engine).await;
    }
}

async fn syslog_cuts_long_messages_and_limits_connections_per_address_on(engine: Engine) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let tcp = crate::support::free_port();
    let config = format!("[[log_source]]\nname = \"net\"\nkind = \"syslog\"\nlisten = [\"tcp://127.0.0.1:{tcp}\"]\n");
    let workdir = Workdir::on(engine, &config, &[]);
    let selfmon = Selfmon::start(&workdir).await;

    // Two megabytes on one line, then a line of its own; and the same as octet-counted frames.
    let long = format!("<14>Nov 26 10:00:05 db1 app: {}", "x".repeat(2 << 20));
    let mut lines = tokio::net::TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    lines.write_all(format!("{long}\n<14>Nov 26 10:00:06 db1 app: after a long line\n").as_bytes()).await.unwrap();
    let mut frames = tokio::net::TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    let after = "<14>Nov 26 10:00:07 db1 app: after a long frame";
    frames.write_all(format!("{} {long}{} {after}", long.len(), after.len()).as_bytes()).await.unwrap();

    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    let records = loop {
        let (_, found) = selfmon.get("/v1/logs?source=net").await;
        let records = found["records"].as_array().cloned().unwrap_or_default();
        if records.len() >= 4 {
            break records;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} records", records.len());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(records.len(), 4);
    for message in ["after a long line", "after a long frame"] {
        assert!(records.iter().any(|r| r["message"] == message && r["parsed"] == true), "{message}");
    }
    let cut: Vec<_> = records.iter().filter(|r| r["parsed"] == false).collect();
    assert_eq!(cut.len(), 2);
    for record in cut {
        assert_eq!(record["message"].as_str().unwrap().len(), 1 << 20, "cut at 1 MiB");
        assert!(record["error"].as_str().unwrap().contains("cut, not parsed"), "{}", record["error"]);
    }

    // One address may hold 16 connections; the 17th is closed at once, while another address is served.
    let from = |address: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{address}:0").parse().unwrap()).unwrap();
        socket.connect(format!("127.0.0.1:{tcp}").parse().unwrap())
    };
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(from("127.0.0.2").await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut one_more = from("127.0.0.2").await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(2), one_more.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the 17th connection from one address was kept: {closed:?}");
    let mut other = from("127.0.0.3").await.unwrap();
    other.write_all(b"<14>Nov 26 10:00:08 db1 app: from another address\n").await.unwrap();
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let (_, found) = selfmon.get("/v1/logs?source=net&q=another").await;
        if found["records"].as_array().is_some_and(|r| r.len() == 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{found}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(held);
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn syslog_sources_are_checked_with_the_config() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        syslog_sources_are_checked_with_the_config_on(engine).await;
    }
}

async fn syslog_sources_are_checked_with_the_config_on(engine: Engine) {
    let config = "[[log_source]]\nname = \"a\"\nkind = \"syslog\"\n\n\
                  [[log_source]]\nname = \"b\"\nkind = \"syslog\"\nlisten = [\"udp://localhost:514\"]\n\n\
                  [[log_source]]\nname = \"c\"\nkind = \"file\"\npaths = [\"x.log\"]\nlisten = [\"udp://0.0.0.0:514\"]\n";
    let workdir = Workdir::on(engine, config, &[]);
    let Err(selfmon::app::host::StartError::Config(errors)) = selfmon::app::host::Host::build(workdir.config()).await
    else {
        panic!("the config is not valid");
    };
    let all = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    for expected in [
        "log source `a`: `listen` is empty",
        "log source `b`: `listen`: `udp://localhost:514` is not udp://ADDRESS:PORT or tcp://ADDRESS:PORT",
        "log source `c`: `listen` is for `kind = \"syslog\"`",
    ] {
        assert!(all.contains(expected), "no `{expected}` in:\n{all}");
    }
}

/// While storage cannot commit (another process holds the database's write lock), posted logs are refused with
/// 503 and `Retry-After` once too many wait, tailing waits, and afterwards everything accepted is stored exactly
/// once and nothing refused is.
#[tokio::test(flavor = "multi_thread")]
async fn back_pressure_refuses_and_waits_but_loses_nothing_accepted() {
    let config = "[[log_source]]\nname = \"app\"\nkind = \"file\"\nparser = \"logfmt\"\npaths = [\"app.log\"]\npoll = \"100ms\"\n";
    let workdir = Workdir::new(config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let database = workdir.path().join("selfmon.db");
    let lock = rusqlite::Connection::open(&database).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    let lines: String = (0..2000).map(|n| format!("level=info msg=\"tailed {n}\"\n")).collect();
    std::fs::write(workdir.path().join("app.log"), lines).unwrap();
    let posts: Vec<_> = (0..48)
        .map(|n| {
            let url = format!("{}/v1/logs", selfmon.url);
            tokio::spawn(async move {
                let body = json!([{"level": "info", "msg": format!("posted {n}")}]).to_string();
                let response = reqwest::Client::new().post(url).body(body).send().await.unwrap();
                let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                (n, response.status().as_u16(), retry_after)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    lock.execute_batch("COMMIT").unwrap();

    let mut accepted = Vec::new();
    let mut refused = 0;
    for post in posts {
        match post.await.unwrap() {
            (n, 202, _) => accepted.push(n),
            (_, 503, retry_after) => {
                assert_eq!(retry_after.as_deref(), Some("1"));
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(refused >= 48 - 32, "at most 32 wait for storage: {refused} refused");
    assert!(!accepted.is_empty());

    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let (_, found) = selfmon.get("/v1/logs/aggregate?hours=1&period=day").await;
        let total: u64 = found["buckets"].as_array().unwrap().iter().map(|b| b["total"].as_u64().unwrap()).sum();
        if total >= 2000 + accepted.len() as u64 {
            assert_eq!(total, 2000 + accepted.len() as u64, "nothing twice");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{total} stored");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, posted) = selfmon.get("/v1/logs?q=posted&limit=100").await;
    let mut stored: Vec<u64> = posted["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap().trim_start_matches("posted ").parse().unwrap())
        .collect();
    stored.sort_unstable();
    assert_eq!(stored, accepted, "exactly the accepted posts are stored");
    selfmon.stop().await;
}

/// Fields a parser did not write but a service did, of types the security query does not expect, neither fail it
/// nor count as events.
#[tokio::test(flavor = "multi_thread")]
async fn odd_field_types_do_not_break_the_analysis() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        odd_field_types_do_not_break_the_analysis_on(engine).await;
    }
}

async fn odd_field_types_do_not_break_the_analysis_on(engine: Engine) {
    let workdir = Workdir::on(engine, "", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let lines = [
        json!({"level": "info", "msg": "scored", "threat": 0.8}),
        json!({"level": "info", "msg": "maybe", "auth_failure": "yes", "remote_addr": 12345}),
        json!({"level": "info", "msg": "fine", "auth_failure": false}),
        json!({"level": "error", "msg": "Ошибка подключения к базе данных", "service": "bot"}),
    ];
    let body = lines.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    let (status, _) = post(&selfmon, "", body.into_bytes(), &[]).await;
    assert_eq!(status, 202);
    let (status, security) = selfmon.get("/v1/logs/security?hours=1").await;
    assert_eq!(status, 200, "{security}");
    assert_eq!(security["events"], 1, "only the record with a threat: {security}");
    assert_eq!(security["by_kind"][0]["name"], "threat:0.8");
    let (status, analysis) = selfmon.get("/v1/logs/analysis?hours=1").await;
    assert_eq!(status, 200, "{analysis}");
    assert_eq!(analysis["error_analysis"]["templates"][0]["template"], "Ошибка подключения к базе данных");
    selfmon.stop().await;
}
