//! Moving a SQLite store into PostgreSQL (`selfmon storage migrate --to URL`): every table copied in key order, a
//! chunk per transaction. A copy that stops (killed, connection lost) goes on when run again: tables keyed by
//! numbers from the greatest key PostgreSQL has, the few small ones keyed by names from their start (rows already
//! there are kept). Ids are kept, so what refers to them still does; counts are compared at the end.

use std::path::Path;

use super::sql::{Db, OptionalExtension, Value};
use super::{Reader, Storage, StorageError, to_millis};
use crate::config::Secret;

/// Rows copied per transaction.
const CHUNK: usize = 1000;

/// The tables, each after what it refers to, with their key columns and whether the key is numbers (and so
/// orders alike on both engines).
const TABLES: [(&str, &[&str], bool); 16] = [
    ("series", &["id"], true),
    ("samples", &["series_id", "ts"], true),
    ("check_runs", &["id"], true),
    ("check_latest", &["check_name"], false),
    ("recovery_attempts", &["id"], true),
    ("alert_rules", &["name"], false),
    ("alerts", &["id"], true),
    ("silences", &["id"], true),
    ("alert_notifications", &["id"], true),
    ("alert_outbox", &["id"], true),
    ("webhooks", &["id"], true),
    ("webhook_deliveries", &["id"], true),
    ("logs", &["id"], true),
    ("log_files", &["source", "device", "inode"], false),
    ("spans", &["id"], true),
    ("events", &["id"], true),
];

/// One table's rows in both stores once copied.
#[derive(Debug)]
pub struct Counted {
    pub table: &'static str,
    pub sqlite: i64,
    pub postgres: i64,
}

/// Copy the SQLite store at `path` (opened with `key`) into the PostgreSQL database of `url`; `progress` hears of
/// each table once it is copied. Neither store may be in use by a server.
pub async fn to_postgres(
    path: &Path,
    key: Option<&Secret>,
    url: &Secret,
    read_file: impl Fn(&str) -> std::io::Result<Vec<u8>>,
    mut progress: impl FnMut(&Counted),
) -> Result<Vec<Counted>, StorageError> {
    let _in_use = super::cipher::lock(path)?;
    let source = Reader::sqlite(path, key)?;
    let target = Storage::connect(url, read_file).await?;
    // A copy goes on into a database only this copy filled: never into one a node has been storing in.
    let (marked, holds) = target
        .read(|db| {
            let marked = db.query_row("SELECT to_regclass('selfmon_migration') IS NOT NULL", [], |r| r.get::<_, bool>(0))?;
            let holds = db.query_row(
                "SELECT EXISTS (SELECT 1 FROM check_runs) OR EXISTS (SELECT 1 FROM logs) OR EXISTS (SELECT 1 FROM series)",
                [],
                |r| r.get::<_, bool>(0),
            )?;
            Ok((marked, holds))
        })
        .await?;
    if holds && !marked {
        target.close().await?;
        return Err(StorageError::Write(
            "the PostgreSQL database already holds a store; migrate into an empty database".into(),
        ));
    }
    let source_name = path.display().to_string();
    target
        .apply(move |db| {
            db.execute_batch(
                "CREATE TABLE IF NOT EXISTS selfmon_migration (source TEXT NOT NULL, at BIGINT NOT NULL)",
            )?;
            db.execute(
                "INSERT INTO selfmon_migration (source, at) VALUES (?1, ?2)",
                super::sql::params![source_name, to_millis(std::time::SystemTime::now())],
            )
        })
        .await?;
    // Day partitions for the days the store holds rows of, so that rows land in their own day, not the default one.
    let days = source
        .read(|db| {
            db.query_map(
                "SELECT ts / 86400000 FROM logs UNION SELECT ts / 86400000 FROM events
             UNION SELECT ts / 86400000 FROM samples UNION SELECT start_ns / 86400000000000 FROM spans",
                [],
                |r| Ok(r.get::<_, i64>(0)? * 86_400_000),
            )
        })
        .await?;
    target.prepare_partitions_for(&days).await?;
    let mut counted = Vec::new();
    for (table, key, numbered) in TABLES {
        copy(&source, &target, table, key, numbered).await?;
        let count = move |db: &Db| db.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0));
        let table = Counted { table, sqlite: source.read(count).await?, postgres: target.read(count).await? };
        progress(&table);
        counted.push(table);
    }
    // New rows take ids after the copied ones.
    target
        .apply(|db| {
            for (table, ..) in TABLES.iter().filter(|(_, key, _)| *key == ["id"]) {
                db.query_row(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false)
                         FROM {table}"
                    ),
                    [],
                    |_| Ok(()),
                )?;
            }
            Ok(())
        })
        .await?;
    target.close().await?;
    Ok(counted)
}

/// Copy the rows of `table` in the order of `key`, a chunk per transaction: from past the greatest key PostgreSQL
/// has when the key is `numbered`, else from the start.
async fn copy(
    source: &Reader,
    target: &Storage,
    table: &'static str,
    key: &'static [&'static str],
    numbered: bool,
) -> Result<(), StorageError> {
    let columns: Vec<String> = source
        .read(move |db| {
            db.query_map(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"), [], |r| r.get(0))
        })
        .await?;
    let width = columns.len();
    let list = columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let keys = key.join(", ");
    let key_at: Vec<usize> = key.iter().filter_map(|k| columns.iter().position(|c| c == k)).collect();
    let mut after: Option<Vec<Value>> = if numbered {
        let keys = keys.clone();
        target
            .read(move |db| {
                let newest = key.iter().map(|k| format!("{k} DESC")).collect::<Vec<_>>().join(", ");
                db.query_row(&format!("SELECT {keys} FROM {table} ORDER BY {newest} LIMIT 1"), [], |r| {
                    (0..key.len()).map(|i| r.get::<_, Value>(i)).collect()
                })
                .optional()
            })
            .await?
    } else {
        None
    };
    loop {
        let (selected, keys, bound) = (list.clone(), keys.clone(), after.clone());
        let rows: Vec<Vec<Value>> = source
            .read(move |db| {
                let places = (1..=key.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                let filter = if bound.is_some() { format!("WHERE ({keys}) > ({places})") } else { String::new() };
                db.query_map(
                    &format!("SELECT {selected} FROM {table} {filter} ORDER BY {keys} LIMIT {CHUNK}"),
                    bound.unwrap_or_default(),
                    |r| (0..width).map(|i| r.get::<_, Value>(i)).collect(),
                )
            })
            .await?;
        let Some(last) = rows.last() else { return Ok(()) };
        after = Some(key_at.iter().map(|&i| last[i].clone()).collect());
        let tuples: Vec<String> = (0..rows.len())
            .map(|row| {
                format!("({})", (1..=width).map(|c| format!("?{}", row * width + c)).collect::<Vec<_>>().join(", "))
            })
            .collect();
        let sql = format!("INSERT INTO {table} ({list}) VALUES {} ON CONFLICT DO NOTHING", tuples.join(", "));
        let values: Vec<Value> = rows.into_iter().flatten().collect();
        target.apply(move |db| db.execute(&sql, values)).await?;
    }
}
