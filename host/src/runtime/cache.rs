//! Compiled plugins cached on disk, so a restart loads native code in about a millisecond instead of compiling
//! each component again.
//!
//! Entries are keyed by the SHA-256 of the component and the engine's compatibility hash (wasmtime version and
//! compilation settings), written atomically, and only ever read from the cache directory selfmon writes itself.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct CompiledCache {
    dir: Option<PathBuf>,
}

impl CompiledCache {
    /// A cache in `dir`; `None` compiles every time.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// The component for these bytes, from the cache when possible.
    pub fn component(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::from_binary(engine, bytes);
        };
        let mut compat = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut compat);
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{hex}-{:016x}.cwasm", compat.finish()));
        if path.is_file() {
            // SAFETY: the file was written by `Component::serialize` below, into selfmon's own cache directory, under
            // a name that includes this engine's compatibility hash; wasmtime checks its header again on load.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "Compiled plugin cache entry unusable; recompiling")
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(e) = Self::store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "Could not write the compiled plugin cache");
        }
        Ok(component)
    }

    fn store(path: &std::path::Path, component: &Component) -> wasmtime::Result<()> {
        let dir = path.parent().expect("cache entries live in a directory");
        std::fs::create_dir_all(dir)?;
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&temporary, component.serialize()?)?;
        std::fs::rename(&temporary, path)?;
        Ok(())
    }
}
