//! The plugins selfmon knows: the built-in ones embedded in the binary, and the components dropped into the
//! plugins folder. A file that is not a usable plugin is refused with a reason; the rest load regardless.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::runtime::{Plugin, PluginSource, Runtime};

/// A plugin file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub file: PathBuf,
    pub reason: String,
}

/// Every loaded plugin by name, and every refused file.
#[derive(Debug, Default)]
pub struct Plugins {
    loaded: BTreeMap<String, Arc<Plugin>>,
    refused: Vec<Refused>,
}

impl Plugins {
    /// Load the built-in plugins, then every `*.wasm` file in `dir` (a missing folder is an empty one).
    pub async fn load(runtime: &Runtime, dir: &Path, max_file_size: u64) -> Self {
        let mut plugins = Self::default();
        for (crate_name, bytes) in selfmon_plugin_artifacts::BUILTIN {
            match runtime.load(bytes, PluginSource::Builtin(crate_name)).await {
                Ok(plugin) => plugins.add(plugin),
                Err(reason) => {
                    tracing::error!(plugin = crate_name, %reason, "Built-in plugin failed to load");
                    plugins.refused.push(Refused { file: PathBuf::from(format!("built-in {crate_name}")), reason });
                }
            }
        }
        for file in wasm_files(dir) {
            match load_file(runtime, &file, max_file_size).await {
                Ok(plugin) => {
                    if let Some(existing) = plugins.loaded.get(&plugin.info.name) {
                        let reason = format!("the name `{}` is already taken by {}", plugin.info.name, existing.source);
                        plugins.refuse(file, reason);
                    } else {
                        tracing::info!(plugin = %plugin.info.name, version = %plugin.info.version, file = %file.display(), "Loaded plugin");
                        plugins.add(plugin);
                    }
                }
                Err(reason) => plugins.refuse(file, reason),
            }
        }
        plugins
    }

    /// Put `plugin` in, in place of any loaded plugin of the same name (what `selfmon plugin run` tries).
    pub fn add(&mut self, plugin: Plugin) {
        self.loaded.insert(plugin.info.name.clone(), Arc::new(plugin));
    }

    fn refuse(&mut self, file: PathBuf, reason: String) {
        tracing::warn!(file = %file.display(), %reason, "Refused plugin file");
        self.refused.push(Refused { file, reason });
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.loaded.get(name)
    }

    /// Loaded plugins, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.loaded.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.loaded.keys().map(String::as_str).collect()
    }

    pub fn refused(&self) -> &[Refused] {
        &self.refused
    }
}

fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::debug!(dir = %dir.display(), "No plugins folder");
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    files.sort();
    files
}

/// Load one plugin file, refusing one over `max_file_size` bytes.
pub async fn load_file(runtime: &Runtime, file: &Path, max_file_size: u64) -> Result<Plugin, String> {
    let size = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?.len();
    if size > max_file_size {
        return Err(format!("{size} bytes is over the limit of {max_file_size} (`[plugins] max_file_size`)"));
    }
    let bytes = tokio::fs::read(file).await.map_err(|e| format!("cannot read: {e}"))?;
    runtime.load(&bytes, PluginSource::File(file.to_path_buf())).await
}
