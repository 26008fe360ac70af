//! `selfmon storage`: the store converted between plain and encrypted, or moved into PostgreSQL.

use std::process::ExitCode;

use super::StorageCommand;
use crate::config::{Config, SecretRef, database_url};
use crate::storage::{cipher, migrate as copy};

/// `selfmon storage encrypt` and `decrypt`.
pub fn convert(config: &Config, command: &StorageCommand) -> ExitCode {
    let path = config.source.resolve(&config.storage.path);
    let key = match config.storage.key(&config.source.base_dir) {
        Ok(Some(key)) => key,
        Ok(None) => {
            eprintln!("error: set `[storage] key` (env:NAME or file:/path): the key to encrypt with or decrypt by");
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (converted, done) = match command {
        StorageCommand::Encrypt => (cipher::encrypt(&path, &key), "encrypted"),
        StorageCommand::Decrypt => (cipher::decrypt(&path, &key), "decrypted: remove `[storage] key` from the config"),
        StorageCommand::Migrate { .. } => unreachable!("migrated by migrate"),
    };
    match converted {
        Ok(()) => {
            println!("{}: {done}", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `selfmon storage migrate`.
pub async fn migrate(config: &Config, to: Option<String>) -> ExitCode {
    let base = &config.source.base_dir;
    let url = match to {
        Some(to) => database_url(&SecretRef::new(to), base, "`--to`"),
        None => config.storage.url(base).and_then(|url| {
            url.ok_or_else(|| {
                "the PostgreSQL database is missing: give `--to postgres://...` (or env:NAME), or set `[storage] url`"
                    .into()
            })
        }),
    };
    let (url, key) = match (url, config.storage.key(base)) {
        (Ok(url), Ok(key)) => (url, key),
        (Err(error), _) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
        (_, Err(error)) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let path = config.source.resolve(&config.storage.path);
    let read_file = |file: &str| std::fs::read(base.join(file));
    let print = |c: &copy::Counted| {
        let verdict = if c.sqlite == c.postgres { "ok" } else { "MISSING ROWS" };
        println!("{:<20} {:>12} {:>12}  {verdict}", c.table, c.sqlite, c.postgres);
    };
    println!("{:<20} {:>12} {:>12}", "table", "sqlite", "postgres");
    match copy::to_postgres(&path, key.as_ref(), &url, read_file, print).await {
        Ok(counted) if counted.iter().all(|c| c.sqlite == c.postgres) => {
            println!("{}: copied; set `[storage] url` to use it", path.display());
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("error: some rows are not in PostgreSQL (see above); run the migration again");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}; run the migration again to go on from where it stopped");
            ExitCode::FAILURE
        }
    }
}
