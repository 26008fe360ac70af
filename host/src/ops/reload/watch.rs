//! The plugins folder, watched: a component or sidecar added, replaced or removed asks for a reload once the folder
//! has been quiet for [`SETTLE`] (a copy in progress sends many events). Hidden files are left alone, so a deploy
//! can copy to a hidden name and then rename.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Extension;
use crate::ops::reload::handle::{Handle, Trigger};

/// Events in the plugins folder closer together than this are one change (a copy in progress sends many).
pub const SETTLE: Duration = Duration::from_millis(250);

/// Watch the plugins folder `dir` (made when missing), asking `handle` for a reload once changes to components or
/// sidecars settle.
pub fn watch(dir: &Path, handle: Handle, tasks: &TaskTracker, stop: CancellationToken) {
    use notify::Watcher as _;
    if let Err(error) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), %error, "Cannot make the plugins folder: it is not watched");
        return;
    }
    let (changed, mut changes) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
            && event.paths.iter().any(|path| Extension::of(path).is_some())
        {
            let _ = changed.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "Cannot watch the plugins folder");
            return;
        }
    };
    if let Err(error) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), %error, "Cannot watch the plugins folder");
        return;
    }
    tracing::info!(dir = %dir.display(), "Watching the plugins folder");
    // A file that landed between the start-up scan and now is taken up at once.
    handle.nudge(Trigger::Folder);
    let dir: PathBuf = dir.to_path_buf();
    tasks.spawn(async move {
        let _watcher = watcher;
        while settled(&mut changes, &stop).await {
            tracing::debug!(dir = %dir.display(), "The plugins folder changed");
            handle.nudge(Trigger::Folder);
        }
    });
}

/// Wait for the next change a watcher reports on `changes`, then until none has come for [`SETTLE`] (a file being
/// written or replaced changes several times); false once the watcher is gone or `stop` is cancelled.
pub async fn settled(changes: &mut mpsc::UnboundedReceiver<()>, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => return false,
        change = changes.recv() => if change.is_none() { return false },
    }
    loop {
        match tokio::time::timeout(SETTLE, changes.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_files_and_other_extensions_do_not_trigger_a_reload() {
        assert_eq!(Extension::of(Path::new("/p/extra.wasm")), Some(Extension::Component));
        assert_eq!(Extension::of(Path::new("/p/extra.toml")), Some(Extension::Sidecar));
        assert_eq!(Extension::of(Path::new("/p/.extra.wasm.part")), None);
        assert_eq!(Extension::of(Path::new("/p/.extra.wasm")), None);
        assert_eq!(Extension::of(Path::new("/p/README.md")), None);
    }
}
