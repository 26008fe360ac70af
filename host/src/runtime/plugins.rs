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
#[derive(Debug, Default, Clone)]
pub struct Plugins {
    loaded: BTreeMap<String, Arc<Plugin>>,
    /// Built-in plugins that failed to load.
    builtin_refused: Vec<Refused>,
    /// Every file of the plugins folder seen at the last scan.
    files: BTreeMap<PathBuf, FileState>,
}

/// What the last scan made of one file.
#[derive(Debug, Clone)]
struct FileState {
    stamp: Stamp,
    /// The plugin loaded from the file (an earlier version of it, when the file now is refused).
    loaded: Option<String>,
    refused: Option<String>,
}

/// Size, modification time and inode: a file with all three unchanged is not read again.
type Stamp = (u64, Option<std::time::SystemTime>, u64);

/// What a scan of the plugins folder changed.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    /// Plugins loaded from new files, by name.
    pub added: Vec<String>,
    /// Plugins whose file was replaced by a valid new version.
    pub replaced: Vec<String>,
    /// Plugins unloaded, with why: "plugins/x.wasm was removed", or what the file holds now.
    pub removed: Vec<(String, String)>,
    /// Files refused by this scan.
    pub refused: Vec<Refused>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty() && self.refused.is_empty()
    }
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
                    plugins
                        .builtin_refused
                        .push(Refused { file: PathBuf::from(format!("built-in {crate_name}")), reason });
                }
            }
        }
        plugins.rescan(runtime, dir, max_file_size).await;
        for plugin in plugins.files.values().filter_map(|state| state.loaded.as_ref()).filter_map(|n| plugins.get(n)) {
            tracing::info!(plugin = %plugin.info.name, version = %plugin.info.version, file = %plugin.source, "Loaded plugin");
        }
        plugins
    }

    /// Bring the plugins in line with the folder: load new and changed files, unload the plugins of removed ones.
    /// A changed file that is refused leaves the version loaded from it before in place; a file refused for a name
    /// that a removed file held is tried again.
    pub async fn rescan(&mut self, runtime: &Runtime, dir: &Path, max_file_size: u64) -> Changes {
        let mut changes = Changes::default();
        let files = crate::config::folder_files(dir, crate::config::Extension::Component);
        let gone: Vec<PathBuf> = self.files.keys().filter(|file| !files.contains(file)).cloned().collect();
        for file in gone {
            if let Some(name) = self.files.remove(&file).and_then(|state| state.loaded) {
                self.loaded.remove(&name);
                changes.removed.push((name, format!("{} was removed", file.display())));
            }
        }
        let retry_refused = !changes.removed.is_empty();
        for file in files {
            let Ok(metadata) = std::fs::metadata(&file) else { continue };
            let stamp = (metadata.len(), metadata.modified().ok(), std::os::unix::fs::MetadataExt::ino(&metadata));
            let previous = match self.files.get(&file) {
                Some(state) if state.stamp == stamp && !(retry_refused && state.refused.is_some()) => continue,
                Some(state) => state.loaded.clone(),
                None => None,
            };
            let mut state = FileState { stamp, loaded: previous.clone(), refused: None };
            match load_file(runtime, &file, max_file_size).await {
                Ok(plugin) => {
                    let name = plugin.info.name.clone();
                    match self.loaded.get(&name) {
                        Some(existing) if previous.as_ref() != Some(&name) => {
                            let reason = format!("the name `{name}` is already taken by {}", existing.source);
                            state.refused = Some(self.refusal(&file, reason, previous.as_deref(), &mut changes));
                        }
                        Some(existing) if existing.sha256 == plugin.sha256 => {}
                        _ => {
                            if let Some(before) = previous.filter(|before| *before != name) {
                                self.loaded.remove(&before);
                                let why = format!("{} now holds the plugin `{name}`", file.display());
                                changes.removed.push((before, why));
                            }
                            tracing::debug!(plugin = %name, version = %plugin.info.version, file = %file.display(), "Plugin file is valid");
                            if state.loaded.as_ref() == Some(&name) {
                                changes.replaced.push(name.clone());
                            } else {
                                changes.added.push(name.clone());
                            }
                            self.add(plugin);
                            state.loaded = Some(name);
                        }
                    }
                }
                Err(reason) => state.refused = Some(self.refusal(&file, reason, previous.as_deref(), &mut changes)),
            }
            self.files.insert(file, state);
        }
        changes
    }

    /// Put `plugin` in, in place of any loaded plugin of the same name (what `selfmon plugin run` tries).
    pub fn add(&mut self, plugin: Plugin) {
        self.loaded.insert(plugin.info.name.clone(), Arc::new(plugin));
    }

    /// Refuse `file`, saying which version keeps running in its place.
    fn refusal(&self, file: &Path, reason: String, previous: Option<&str>, changes: &mut Changes) -> String {
        let reason = match previous.and_then(|name| self.loaded.get(name)) {
            Some(plugin) => format!("{reason}; version {} loaded from it before keeps running", plugin.info.version),
            None => reason,
        };
        tracing::warn!(file = %file.display(), %reason, "Refused plugin file");
        changes.refused.push(Refused { file: file.to_path_buf(), reason: reason.clone() });
        reason
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

    /// Built-in plugins that failed to load, and the files of the folder refused at the last scan.
    pub fn refused(&self) -> Vec<Refused> {
        let files = self
            .files
            .iter()
            .filter_map(|(file, state)| state.refused.clone().map(|reason| Refused { file: file.clone(), reason }));
        self.builtin_refused.iter().cloned().chain(files).collect()
    }
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
