//! The database schema, as versioned migrations. Append new migrations; never edit a released one.

use rusqlite_migration::{M, Migrations};

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "
            -- One row per check run. Times are milliseconds since the Unix epoch.
            CREATE TABLE check_runs (
                id          INTEGER PRIMARY KEY,
                check_name  TEXT    NOT NULL,
                plugin      TEXT    NOT NULL,
                started_at  INTEGER NOT NULL,
                duration_ms REAL    NOT NULL,
                status      TEXT    NOT NULL CHECK (status IN ('healthy', 'degraded', 'unhealthy', 'unknown')),
                summary     TEXT    NOT NULL,
                details     TEXT    NOT NULL,  -- JSON object
                error       TEXT               -- why the run could not be carried out
            );
            CREATE INDEX check_runs_by_check_and_time ON check_runs (check_name, started_at);
            CREATE INDEX check_runs_by_time ON check_runs (started_at);

            -- A metric series is a name and a set of labels (canonical JSON: sorted [name, value] pairs).
            CREATE TABLE series (
                id     INTEGER PRIMARY KEY,
                name   TEXT NOT NULL,
                labels TEXT NOT NULL,
                UNIQUE (name, labels)
            );

            CREATE TABLE samples (
                series_id INTEGER NOT NULL REFERENCES series (id),
                ts        INTEGER NOT NULL,
                value     REAL    NOT NULL,
                PRIMARY KEY (series_id, ts)
            ) WITHOUT ROWID;
            CREATE INDEX samples_by_time ON samples (ts);
            ",
        ),
        M::up(
            "
            -- The (series_id, ts) key already serves time ranges and retention, series by series; a second index
            -- doubled the cost of every sample written.
            DROP INDEX samples_by_time;

            -- The latest run of each check, kept by the writer, so start-up reads one row per check.
            CREATE TABLE check_latest (
                check_name TEXT    PRIMARY KEY,
                run_id     INTEGER NOT NULL REFERENCES check_runs (id)
            ) WITHOUT ROWID;
            INSERT INTO check_latest (check_name, run_id) SELECT check_name, MAX(id) FROM check_runs GROUP BY check_name;
            ",
        ),
        M::up(
            "
            -- Every recovery attempt: what ran, how it ended, and whether the check passed again right after.
            CREATE TABLE recovery_attempts (
                id           INTEGER PRIMARY KEY,
                check_name   TEXT    NOT NULL,
                attempt      INTEGER NOT NULL,
                started_at   INTEGER NOT NULL,
                duration_ms  REAL    NOT NULL,
                action       TEXT    NOT NULL,
                outcome      TEXT    NOT NULL CHECK (outcome IN ('ran', 'failed', 'timed_out', 'error')),
                exit_code    INTEGER,
                output       TEXT    NOT NULL,
                recovered_at INTEGER
            );
            CREATE INDEX recovery_attempts_by_check ON recovery_attempts (check_name, started_at);
            ",
        ),
        M::up(
            "
            -- Alert rules created through the API. `condition` is kept as written.
            CREATE TABLE alert_rules (
                name        TEXT    PRIMARY KEY,
                condition   TEXT    NOT NULL,
                threshold   REAL,
                severity    TEXT    NOT NULL,
                channels    TEXT    NOT NULL,  -- JSON array
                for_ms      INTEGER NOT NULL,
                description TEXT    NOT NULL,
                created_at  INTEGER NOT NULL,
                created_by  TEXT               -- the API key's name
            ) WITHOUT ROWID;

            -- Every alert, one row per firing of one fingerprint (a rule and its labels).
            CREATE TABLE alerts (
                id              INTEGER PRIMARY KEY AUTOINCREMENT,
                fingerprint     TEXT    NOT NULL,
                rule            TEXT    NOT NULL,
                severity        TEXT    NOT NULL,
                state           TEXT    NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
                summary         TEXT    NOT NULL,
                labels          TEXT    NOT NULL,  -- JSON object
                started_at      INTEGER NOT NULL,
                resolved_at     INTEGER,
                acknowledged_at INTEGER,
                acknowledged_by TEXT,
                ack_comment     TEXT
            );
            CREATE INDEX alerts_by_state ON alerts (state, started_at);

            -- Webhook subscriptions and every attempt to deliver to them.
            -- AUTOINCREMENT: an id is never reused, so a retry of a deleted subscription cannot reach a new one.
            CREATE TABLE webhooks (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                url        TEXT    NOT NULL,
                events     TEXT    NOT NULL,  -- JSON array
                secret     TEXT    NOT NULL,
                created_at INTEGER NOT NULL
            );
            CREATE TABLE webhook_deliveries (
                id          INTEGER PRIMARY KEY,
                webhook_id  INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
                event_id    TEXT    NOT NULL,
                event       TEXT    NOT NULL,
                attempt     INTEGER NOT NULL,
                at          INTEGER NOT NULL,
                status_code INTEGER,
                outcome     TEXT    NOT NULL CHECK (outcome IN ('delivered', 'failed', 'gave_up')),
                error       TEXT,
                duration_ms REAL    NOT NULL
            );
            CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);
            ",
        ),
        M::up(
            "
            -- Log records. `parsed` is 0 for a line no parser understood, kept as it was with `error` saying why.
            CREATE TABLE logs (
                id             INTEGER PRIMARY KEY,
                ts             INTEGER NOT NULL,  -- Unix milliseconds, UTC
                level          TEXT    NOT NULL,
                source         TEXT    NOT NULL,
                service        TEXT,
                logger         TEXT,
                message        TEXT    NOT NULL,
                trace_id       TEXT,
                span_id        TEXT,
                correlation_id TEXT,
                user_id        TEXT,
                fields         TEXT,              -- JSON object of further fields
                parsed         INTEGER NOT NULL,
                error          TEXT
            );
            CREATE INDEX logs_by_time ON logs (ts);
            CREATE INDEX logs_by_level ON logs (level, ts);
            CREATE INDEX logs_by_service ON logs (service, ts);
            CREATE INDEX logs_by_trace ON logs (trace_id) WHERE trace_id IS NOT NULL;
            CREATE INDEX logs_by_user ON logs (user_id, ts) WHERE user_id IS NOT NULL;

            -- The full-text index over messages, kept by triggers.
            CREATE VIRTUAL TABLE logs_fts USING fts5 (message, content = 'logs', content_rowid = 'id');
            CREATE TRIGGER logs_fts_insert AFTER INSERT ON logs BEGIN
                INSERT INTO logs_fts (rowid, message) VALUES (new.id, new.message);
            END;
            CREATE TRIGGER logs_fts_delete AFTER DELETE ON logs BEGIN
                INSERT INTO logs_fts (logs_fts, rowid, message) VALUES ('delete', old.id, old.message);
            END;
            ",
        ),
        M::up(
            "
            -- How far each tailed file has been read, written in the transaction that stores its records.
            CREATE TABLE log_offsets (
                source  TEXT    NOT NULL,
                path    TEXT    NOT NULL,
                device  INTEGER NOT NULL,
                inode   INTEGER NOT NULL,
                offset  INTEGER NOT NULL,
                PRIMARY KEY (source, path)
            ) WITHOUT ROWID;
            ",
        ),
        M::up(
            "
            -- Records are added to the full-text index a whole batch at a time by the code that stores them, which
            -- is about twice as fast as a trigger run per row.
            DROP TRIGGER logs_fts_insert;
            ",
        ),
        M::up(
            "
            -- What the alerting engine keeps about each alert besides the first version's columns.
            ALTER TABLE alerts ADD COLUMN name            TEXT    NOT NULL DEFAULT '';
            ALTER TABLE alerts ADD COLUMN annotations     TEXT    NOT NULL DEFAULT '{}';  -- JSON object
            ALTER TABLE alerts ADD COLUMN fired_at        INTEGER;
            ALTER TABLE alerts ADD COLUMN silenced_by     INTEGER;
            ALTER TABLE alerts ADD COLUMN inhibited_by    TEXT;
            ALTER TABLE alerts ADD COLUMN escalation_step INTEGER NOT NULL DEFAULT 0;
            -- 1 once a message said it fires: after a restart, its channels are not told again, and hear when it
            -- resolves.
            ALTER TABLE alerts ADD COLUMN notified        INTEGER NOT NULL DEFAULT 0;
            -- One active alert per fingerprint.
            CREATE UNIQUE INDEX alerts_active ON alerts (fingerprint) WHERE state != 'resolved';

            -- Silences: alerts whose labels match are not notified between the two times.
            CREATE TABLE silences (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                matchers   TEXT    NOT NULL,  -- JSON object of label = value
                starts_at  INTEGER NOT NULL,
                ends_at    INTEGER NOT NULL,
                created_by TEXT,
                comment    TEXT    NOT NULL
            );
            CREATE INDEX silences_by_end ON silences (ends_at);

            -- Every attempt to deliver a notification to a channel.
            CREATE TABLE alert_notifications (
                id          INTEGER PRIMARY KEY,
                channel     TEXT    NOT NULL,
                group_key   TEXT    NOT NULL,
                status      TEXT    NOT NULL CHECK (status IN ('firing', 'resolved')),
                alerts      TEXT    NOT NULL,  -- JSON array of alert ids
                attempt     INTEGER NOT NULL,
                at          INTEGER NOT NULL,
                status_code INTEGER,
                outcome     TEXT    NOT NULL CHECK (outcome IN ('delivered', 'failed', 'gave_up')),
                error       TEXT,
                duration_ms REAL    NOT NULL
            );
            CREATE INDEX alert_notifications_by_time ON alert_notifications (at);
            ",
        ),
        M::up(
            "
            -- Spans received over OTLP. Times are Unix nanoseconds, as OTLP gives them. `user_id` is stored as the
            -- privacy settings make it (a pseudonym by default).
            CREATE TABLE spans (
                id             INTEGER PRIMARY KEY,
                trace_id       TEXT    NOT NULL,  -- 32 hex digits
                span_id        TEXT    NOT NULL,  -- 16 hex digits
                parent_id      TEXT,
                service        TEXT    NOT NULL,
                name           TEXT    NOT NULL,
                kind           TEXT    NOT NULL,
                start_ns       INTEGER NOT NULL,
                duration_ns    INTEGER NOT NULL,
                status         TEXT    NOT NULL CHECK (status IN ('unset', 'ok', 'error')),
                status_message TEXT,
                user_id        TEXT,
                attributes     TEXT    NOT NULL,  -- JSON object
                events         TEXT,              -- JSON array of {time, name, attributes}
                resource       TEXT    NOT NULL   -- JSON object of the resource's attributes
            );
            CREATE UNIQUE INDEX spans_by_id ON spans (trace_id, span_id);
            CREATE INDEX spans_by_time ON spans (start_ns);
            CREATE INDEX spans_by_operation ON spans (service, name, start_ns);
            CREATE INDEX spans_by_user ON spans (user_id, start_ns) WHERE user_id IS NOT NULL;

            -- What the platform's services report: user activity, AI usage with its cost, satisfaction ratings,
            -- conversations and assessments. Times are Unix milliseconds.
            CREATE TABLE events (
                id            INTEGER PRIMARY KEY,
                ts            INTEGER NOT NULL,
                kind          TEXT    NOT NULL,
                user_id       TEXT,
                action        TEXT,
                service       TEXT,
                provider      TEXT,
                model         TEXT,
                input_tokens  INTEGER,
                output_tokens INTEGER,
                latency_ms    REAL,
                success       INTEGER,
                cost          REAL,     -- US dollars
                rating        REAL,
                trace_id      TEXT,
                span_id       TEXT,     -- the GenAI span an ai_usage event was taken from
                metadata      TEXT      -- JSON object
            );
            CREATE INDEX events_by_time ON events (ts);
            -- A span received again (an exporter's retry) does not count its AI usage twice.
            CREATE UNIQUE INDEX events_by_span ON events (trace_id, span_id) WHERE span_id IS NOT NULL;
            CREATE INDEX events_by_trace ON events (trace_id) WHERE trace_id IS NOT NULL;
            CREATE INDEX events_by_kind ON events (kind, ts);
            CREATE INDEX events_by_user ON events (user_id, ts) WHERE user_id IS NOT NULL;
            ",
        ),
        // The runs that could not be carried out, newest first, for the plugins' recent failures.
        M::up("CREATE INDEX check_runs_failed ON check_runs (started_at) WHERE error IS NOT NULL;"),
        M::up(
            "
            -- Tailed files are known by device, inode and a fingerprint of their first bytes, not by path: a file
            -- renamed to another name its source still matches is read on from where it was.
            CREATE TABLE log_files (
                source   TEXT    NOT NULL,
                device   INTEGER NOT NULL,
                inode    INTEGER NOT NULL,
                path     TEXT    NOT NULL,  -- where it was last read
                offset   INTEGER NOT NULL,
                head_len INTEGER NOT NULL,  -- how many of its first bytes the fingerprint covers (0: none)
                head     BLOB    NOT NULL,  -- their SHA-256
                PRIMARY KEY (source, device, inode)
            ) WITHOUT ROWID;
            INSERT OR REPLACE INTO log_files (source, device, inode, path, offset, head_len, head)
                SELECT source, device, inode, path, offset, 0, x'' FROM log_offsets;
            DROP TABLE log_offsets;
            ",
        ),
        M::up(
            "
            -- Notifications due and not yet known to be delivered, as JSON, with the node sending each: written with
            -- the mark that their alerts were notified, removed once delivered or given up. What a stopped sender
            -- left here goes out from the next one.
            CREATE TABLE alert_outbox (
                id           INTEGER PRIMARY KEY,
                node         TEXT    NOT NULL,
                channel      TEXT    NOT NULL,
                group_key    TEXT    NOT NULL,
                notification TEXT    NOT NULL,
                created_at   INTEGER NOT NULL
            );
            ",
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_migrations_are_valid_and_apply_in_order() {
        super::migrations().validate().unwrap();
        let mut db = rusqlite::Connection::open_in_memory().unwrap();
        super::migrations().to_latest(&mut db).unwrap();
        let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, 12);
    }

    #[test]
    fn offsets_kept_by_path_become_marks_without_a_fingerprint() {
        let mut db = rusqlite::Connection::open_in_memory().unwrap();
        super::migrations().to_version(&mut db, 10).unwrap();
        db.execute("INSERT INTO log_offsets VALUES ('bot', '/var/log/bot.log', 2049, 77, 4096)", []).unwrap();
        super::migrations().to_latest(&mut db).unwrap();
        let row: (String, String, i64, i64, i64, i64, Vec<u8>) = db
            .query_row("SELECT source, path, device, inode, offset, head_len, head FROM log_files", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })
            .unwrap();
        assert_eq!(row, ("bot".into(), "/var/log/bot.log".into(), 2049, 77, 4096, 0, Vec::new()));
    }
}
