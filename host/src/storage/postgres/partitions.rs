//! Daily partitions of the tables that grow with time (logs, spans, events, samples): made a week ahead, so rows
//! land in the partition of their day, and dropped whole by retention. Each table also has a default partition for
//! rows of any other time (a replayed old log, a clock far off); when a day's partition is made for rows already
//! in it, they move over.

use tokio_postgres::Client;

/// The partitioned tables, the column they are partitioned by, and its units per millisecond.
pub const TABLES: [(&str, &str, i64); 4] =
    [("logs", "ts", 1), ("events", "ts", 1), ("samples", "ts", 1), ("spans", "start_ns", 1_000_000)];

const DAY_MS: i64 = 86_400_000;
/// Days ahead of today whose partitions are made.
const AHEAD: i64 = 7;
/// The advisory lock partitions are made and dropped under, so nodes do not race at it.
const LOCK: i64 = 0x5e1f_0002;

/// The partition of `table` for the day starting at `day` (Unix ms).
fn name(table: &str, day: i64) -> String {
    format!("{table}_d{}", crate::storage::rfc3339(day).get(..10).unwrap_or_default().replace('-', ""))
}

/// Make the default partitions, and the day partitions from yesterday to a week ahead of `now` plus those of the
/// days of `more` (Unix ms, any time of the day), where missing. Each day is a transaction of its own that waits
/// at most a few seconds for its locks, so a busy table delays the upkeep, not the writes.
pub async fn prepare(client: &mut Client, more: &[i64], now: i64) -> Result<(), tokio_postgres::Error> {
    let today = now.div_euclid(DAY_MS);
    let mut days: Vec<i64> = (today - 1..=today + AHEAD).chain(more.iter().map(|t| t.div_euclid(DAY_MS))).collect();
    days.sort_unstable();
    days.dedup();
    for (table, column, unit) in TABLES {
        // Under the upkeep's lock: nodes starting together would otherwise race past IF NOT EXISTS.
        let transaction = client.transaction().await?;
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
        transaction
            .batch_execute(&format!("CREATE TABLE IF NOT EXISTS {table}_default PARTITION OF {table} DEFAULT"))
            .await?;
        transaction.commit().await?;
        for day in days.iter().map(|d| d * DAY_MS) {
            prepare_day(client, table, column, unit, day).await?;
        }
    }
    Ok(())
}

/// Make `table`'s partition of the day starting at `day` (Unix ms) if it is missing.
async fn prepare_day(
    client: &mut Client,
    table: &str,
    column: &str,
    unit: i64,
    day: i64,
) -> Result<(), tokio_postgres::Error> {
    let partition = name(table, day);
    let transaction = client.transaction().await?;
    transaction.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
    let exists: bool = transaction.query_one("SELECT to_regclass($1) IS NOT NULL", &[&partition]).await?.get(0);
    if exists {
        return transaction.commit().await;
    }
    let (from, to) = (day * unit, (day + DAY_MS) * unit);
    let waiting: bool = transaction
        .query_one(
            &format!("SELECT EXISTS (SELECT 1 FROM {table}_default WHERE {column} >= $1 AND {column} < $2)"),
            &[&from, &to],
        )
        .await?
        .get(0);
    if !waiting {
        transaction
            .batch_execute(&format!("CREATE TABLE {partition} PARTITION OF {table} FOR VALUES FROM ({from}) TO ({to})"))
            .await?;
        return transaction.commit().await;
    }
    // Rows of that day wait in the default partition: it is set aside while the day's partition is made, and they
    // move over.
    let columns: Vec<String> = transaction
        .query(
            "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0
             AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            &[&table],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let columns = columns.join(", ");
    transaction
        .batch_execute(&format!(
            "ALTER TABLE {table} DETACH PARTITION {table}_default;
             CREATE TABLE {partition} PARTITION OF {table} FOR VALUES FROM ({from}) TO ({to});
             INSERT INTO {partition} ({columns}) SELECT {columns} FROM {table}_default
                 WHERE {column} >= {from} AND {column} < {to};
             DELETE FROM {table}_default WHERE {column} >= {from} AND {column} < {to};
             ALTER TABLE {table} ATTACH PARTITION {table}_default DEFAULT;"
        ))
        .await?;
    transaction.commit().await
}

/// Drop the day partitions of `table` that end at or before `cutoff` (in the table's own units), and delete the
/// default partition's rows from before it: the rows removed (for a dropped partition, as last counted by
/// `ANALYZE`).
pub async fn drop_before(client: &mut Client, table: &str, cutoff: i64) -> Result<u64, tokio_postgres::Error> {
    let Some((_, column, unit)) = TABLES.iter().find(|(t, ..)| *t == table) else { return Ok(0) };
    let partitions = client
        .query(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::text::regclass",
            &[&table],
        )
        .await?;
    let prefix = format!("{table}_d");
    let mut removed = 0;
    // A day at a time, so a long list of expired days does not take all their locks at once.
    for row in partitions {
        let partition: String = row.get(0);
        let Some(day) = partition.strip_prefix(&prefix).and_then(day_start) else { continue };
        if (day + DAY_MS) * unit > cutoff {
            continue;
        }
        let transaction = client.transaction().await?;
        transaction.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
        let counted: Option<f32> = transaction
            .query_opt("SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)", &[&partition])
            .await?
            .map(|row| row.get(0));
        transaction.batch_execute(&format!("DROP TABLE IF EXISTS {partition}")).await?;
        transaction.commit().await?;
        removed += counted.unwrap_or(0.0).max(0.0) as u64;
    }
    removed += client.execute(&format!("DELETE FROM {table}_default WHERE {column} < $1"), &[&cutoff]).await?;
    Ok(removed)
}

/// The start (Unix ms) of the day a partition's name gives as `YYYYMMDD`.
fn day_start(digits: &str) -> Option<i64> {
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = format!("{}-{}-{}T00:00:00Z", &digits[..4], &digits[4..6], &digits[6..]);
    humantime::parse_rfc3339(&text).ok().map(crate::storage::to_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_named_after_its_day_and_the_name_gives_the_day_back() {
        let day = 1_796_601_600_000; // 2026-12-07T00:00:00Z
        assert_eq!(name("logs", day), "logs_d20261207");
        assert_eq!(day_start("20261207"), Some(day));
        assert_eq!(day_start("2026120"), None);
        assert_eq!(day_start("default"), None);
    }
}
