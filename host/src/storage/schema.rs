//! The database schema, as versioned migrations. Append new migrations; never edit a released one.

use rusqlite_migration::{M, Migrations};

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(
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

        -- The latest run of each check, kept by the writer, so start-up reads one row per check.
        CREATE TABLE check_latest (
            check_name TEXT    PRIMARY KEY,
            run_id     INTEGER NOT NULL REFERENCES check_runs (id)
        ) WITHOUT ROWID;

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
            PRIMARY KEY (series_id, ts)  -- also serves time ranges and retention, series by series
        ) WITHOUT ROWID;

        -- Every recovery attempt: what ran, how it ended, and whether the check passed again afterwards.
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
    )])
}
