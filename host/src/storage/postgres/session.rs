//! A pooled PostgreSQL connection used from a thread that may block (the writer's, or one of the runtime's blocking
//! threads): each statement is run to completion on the async runtime, so the stores' SQL reads the same on both
//! engines.

use std::future::Future;

use tokio_postgres::types::ToSql;
use tokio_stream::StreamExt;

use super::codec::{Read, numbered};
use crate::storage::sql::{self, Db, SqlError, ValueRef};

/// A connection from the pool, and the runtime its I/O runs on.
pub struct Session {
    client: deadpool_postgres::Object,
    runtime: tokio::runtime::Handle,
}

fn arguments<'a>(values: &'a [ValueRef<'a>]) -> impl ExactSizeIterator<Item = &'a (dyn ToSql + Sync)> {
    values.iter().map(|value| value as &(dyn ToSql + Sync))
}

impl Session {
    pub fn new(client: deadpool_postgres::Object, runtime: tokio::runtime::Handle) -> Self {
        Self { client, runtime }
    }

    fn wait<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    pub fn execute(&self, sql: &str, values: &[ValueRef]) -> sql::Result<usize> {
        let sql = numbered(sql);
        self.wait(async {
            let statement = self.client.prepare_cached(&sql).await?;
            let changed = self.client.execute_raw(&statement, arguments(values)).await?;
            Ok(usize::try_from(changed).unwrap_or(usize::MAX))
        })
    }

    pub fn execute_batch(&self, sql: &str) -> sql::Result<()> {
        Ok(self.wait(self.client.batch_execute(sql))?)
    }

    /// Hand each row to `each` as it arrives, until it answers `false`.
    pub fn query_each(
        &self,
        sql: &str,
        values: &[ValueRef],
        mut each: impl FnMut(&tokio_postgres::Row) -> sql::Result<bool>,
    ) -> sql::Result<()> {
        let sql = numbered(sql);
        let rows = self.wait(async {
            let statement = self.client.prepare_cached(&sql).await?;
            self.client.query_raw(&statement, arguments(values)).await
        })?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = self.wait(rows.next()) {
            if !each(&row?)? {
                break;
            }
        }
        Ok(())
    }

    /// Run `change` in a transaction: committed when it succeeds, rolled back when it fails (or panics).
    pub fn transaction<T>(&self, change: impl FnOnce(&Db) -> sql::Result<T>) -> sql::Result<T> {
        self.execute_batch("BEGIN")?;
        let open = Open(self);
        let value = change(&Db::postgres(self))?;
        std::mem::forget(open);
        self.execute_batch("COMMIT")?;
        Ok(value)
    }
}

/// A transaction not yet committed: rolled back when dropped.
struct Open<'s>(&'s Session);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.0.execute_batch("ROLLBACK") {
            tracing::warn!(%error, "A failed transaction could not be rolled back");
        }
    }
}

/// The value of column `index` of a row.
pub fn column(row: &tokio_postgres::Row, index: usize) -> sql::Result<ValueRef<'_>> {
    row.try_get::<_, Read>(index).map(|read| read.0).map_err(SqlError::from)
}
