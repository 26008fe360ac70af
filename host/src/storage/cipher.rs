//! Encryption at rest (SQLCipher): every page of the database and of its write-ahead log is encrypted with a key
//! derived from `[storage] key`, so the files show nothing of what they hold. A store is encrypted or not as a
//! whole; [`encrypt`] and [`decrypt`] convert one while no server uses it ([`lock`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode};

use super::{StorageError, private_file};
use crate::config::Secret;

/// The first 16 bytes of every SQLite database that is not encrypted.
const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Whether the database at `path` is encrypted; `None` when it does not exist yet (or is empty).
pub fn encrypted_on_disk(path: &Path) -> Result<Option<bool>, StorageError> {
    use std::io::Read;
    let mut header = [0u8; 16];
    let read = match File::open(path) {
        Ok(mut file) => file.read(&mut header),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => Err(error),
    };
    match read.map_err(|source| StorageError::Directory { path: path.into(), source })? {
        0 => Ok(None),
        _ => Ok(Some(&header != PLAIN_HEADER)),
    }
}

/// Give `connection` the key of the database at `path` (none for a plain one) and prove it opens it: a wrong key,
/// a key for a plain store or none for an encrypted one is an error that says which.
pub fn unlock(connection: &Connection, path: &Path, key: Option<&Secret>) -> Result<(), StorageError> {
    match (key, encrypted_on_disk(path)?) {
        (None, Some(true)) => return Err(StorageError::Encrypted { path: path.into() }),
        (Some(_), Some(false)) => return Err(StorageError::NotEncrypted { path: path.into() }),
        _ => {}
    }
    if let Some(key) = key {
        connection
            .pragma_update(None, "key", key.expose())
            .map_err(|source| StorageError::Open { path: path.into(), source })?;
    }
    match connection.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(failure, _)) if failure.code == ErrorCode::NotADatabase => {
            Err(StorageError::WrongKey { path: path.into() })
        }
        Err(source) => Err(StorageError::Open { path: path.into(), source }),
    }
}

/// Held by a server for as long as it uses the store, so that a conversion cannot run under it (nor a second
/// server beside it).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Take the store at `path` for this process alone, through `<path>.lock`.
pub fn lock(path: &Path) -> Result<Lock, StorageError> {
    let lock_path = sibling(path, ".lock");
    let directory = |source| StorageError::Directory { path: lock_path.clone(), source };
    private_file(&lock_path).map_err(directory)?;
    let file = std::fs::OpenOptions::new().write(true).open(&lock_path).map_err(directory)?;
    match file.try_lock() {
        Ok(()) => Ok(Lock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::InUse { path: path.into() }),
        Err(std::fs::TryLockError::Error(source)) => Err(directory(source)),
    }
}

/// Encrypt the plain store at `path` with `key`, in place.
pub fn encrypt(path: &Path, key: &Secret) -> Result<(), StorageError> {
    if encrypted_on_disk(path)? == Some(true) {
        return Err(StorageError::Convert { path: path.into(), reason: "it is encrypted already".into() });
    }
    convert(path, None, key.expose())
}

/// Decrypt the store at `path`, encrypted with `key`, in place.
pub fn decrypt(path: &Path, key: &Secret) -> Result<(), StorageError> {
    if encrypted_on_disk(path)? == Some(false) {
        return Err(StorageError::Convert { path: path.into(), reason: "it is not encrypted".into() });
    }
    convert(path, Some(key), "")
}

/// Copy the store at `path` (opened with `key`) into a new file encrypted with `new_key` (plain when empty), then
/// put the copy in its place. Until the last step the original is untouched; a copy left by a failed run is
/// discarded by the next.
fn convert(path: &Path, key: Option<&Secret>, new_key: &str) -> Result<(), StorageError> {
    if encrypted_on_disk(path)?.is_none() {
        return Err(StorageError::Convert { path: path.into(), reason: "there is no store there".into() });
    }
    let _lock = lock(path)?;
    let failed = |source: rusqlite::Error| StorageError::Convert { path: path.into(), reason: source.to_string() };
    let io_failed = |source: std::io::Error| StorageError::Convert { path: path.into(), reason: source.to_string() };
    let copy = sibling(path, ".converting");
    match std::fs::remove_file(&copy) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io_failed(error)),
        _ => {}
    }
    private_file(&copy).map_err(io_failed)?;
    {
        let source = Connection::open(path).map_err(|source| StorageError::Open { path: path.into(), source })?;
        unlock(&source, path, key)?;
        // Everything in the write-ahead log goes into the database first.
        source.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(failed)?;
        let version: i64 = source.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(failed)?;
        source
            .execute("ATTACH DATABASE ?1 AS converted KEY ?2", (copy.display().to_string(), new_key))
            .map_err(failed)?;
        // The copy keeps what the export does not carry: incremental vacuum (set before any table) and the schema
        // version the migrations read.
        source.execute_batch("PRAGMA converted.auto_vacuum = INCREMENTAL;").map_err(failed)?;
        source.query_row("SELECT sqlcipher_export('converted')", [], |_| Ok(())).map_err(failed)?;
        source
            .execute_batch(&format!("PRAGMA converted.user_version = {version}; DETACH DATABASE converted;"))
            .map_err(failed)?;
    }
    File::open(&copy).and_then(|file| file.sync_all()).map_err(io_failed)?;
    for stale in ["-wal", "-shm"] {
        match std::fs::remove_file(sibling(path, stale)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io_failed(error)),
            _ => {}
        }
    }
    std::fs::rename(&copy, path).map_err(io_failed)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|dir| dir.sync_all()).map_err(io_failed)?;
    }
    Ok(())
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
