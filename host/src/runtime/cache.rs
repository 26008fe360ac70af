//! Compiled plugins cached on disk, so a restart loads native code in about a millisecond instead of compiling
//! each component again.
//!
//! Entries are keyed by the SHA-256 of the component and the engine's compatibility hash (wasmtime version and
//! compilation settings), written atomically, and only ever read from the cache directory selfmon writes itself.
//! That directory and its files are the owner's only; a directory others may write to is refused
//! ([`CompiledCache::private`]), since what it holds is native code selfmon loads.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: Option<PathBuf>,
}

impl CompiledCache {
    /// A cache in `dir`; `None` compiles every time.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// A cache in `dir`, made for its owner only when missing; refused when anyone but its owner may write to it
    /// (or to a file in it), or its owner is another user than selfmon's (or root), since whoever can write there
    /// may have selfmon load native code of theirs.
    pub fn private(dir: PathBuf) -> Result<Self, String> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        // SAFETY: geteuid has no preconditions and cannot fail.
        let user = unsafe { libc::geteuid() };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create the compiled-plugin cache {}: {e}", dir.display()))?;
        let files = std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let paths = std::iter::once(dir.clone()).chain(files.filter_map(|e| e.ok().map(|e| e.path())));
        for path in paths {
            let metadata = std::fs::metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mode = metadata.mode();
            if metadata.uid() != user && metadata.uid() != 0 {
                return Err(format!(
                    "the compiled-plugin cache {} belongs to another user (uid {}): it holds native code selfmon \
                     loads. Choose a `[plugins] cache_dir` of selfmon's own user",
                    path.display(),
                    metadata.uid()
                ));
            }
            if mode & 0o022 != 0 {
                return Err(format!(
                    "the compiled-plugin cache {} may be written by others (mode {:o}): it holds native code selfmon \
                     loads. Make it the owner's only (chmod -R go-w) or choose another `[plugins] cache_dir`",
                    path.display(),
                    mode & 0o777
                ));
            }
        }
        Ok(Self { dir: Some(dir) })
    }

    /// The component for these bytes (from the cache when possible) and their SHA-256, hex.
    ///
    /// Compiling takes hundreds of milliseconds: call this off the async threads.
    pub fn component(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Component, String)> {
        let sha256: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let Some(dir) = &self.dir else {
            return Ok((Component::from_binary(engine, bytes)?, sha256));
        };
        let mut compat = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut compat);
        let path = dir.join(format!("{sha256}-{:016x}.cwasm", compat.finish()));
        if path.is_file() {
            // SAFETY: the file was written by `Component::serialize` below, into selfmon's own cache directory, under
            // a name that includes this engine's compatibility hash; wasmtime checks its header again on load.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, sha256)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "Compiled plugin cache entry unusable; recompiling")
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(e) = Self::store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "Could not write the compiled plugin cache");
        }
        Ok((component, sha256))
    }

    fn store(path: &std::path::Path, component: &Component) -> wasmtime::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = path.parent().expect("cache entries live in a directory");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        // Unique per writer, so runtimes compiling the same plugin at once never share a half-written file.
        let temporary = path.with_extension(format!("tmp-{}-{:016x}", std::process::id(), fastrand::u64(..)));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        std::io::Write::write_all(&mut file, &component.serialize()?)?;
        std::fs::rename(&temporary, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_component_is_reused_and_a_corrupt_entry_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::new(Some(dir.path().to_path_buf()));
        let engine = Engine::default();
        let bytes = selfmon_plugin_artifacts::guests::NOOP;
        let (_, digest) = cache.component(&engine, bytes).unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1, "one entry, no temporary files left: {entries:?}");
        assert!(entries[0].file_name().unwrap().to_string_lossy().starts_with(&digest));

        let written = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
        cache.component(&engine, bytes).unwrap();
        assert_eq!(std::fs::metadata(&entries[0]).unwrap().modified().unwrap(), written, "reused, not rewritten");

        std::fs::write(&entries[0], b"not a compiled component").unwrap();
        cache.component(&engine, bytes).unwrap();
        assert_ne!(std::fs::read(&entries[0]).unwrap(), b"not a compiled component", "a corrupt entry is replaced");
    }
}
