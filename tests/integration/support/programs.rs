//! PostgreSQL's programs, found and run as the server needs: from the PATH or Debian's
//! /usr/lib/postgresql/VERSION/bin, and, when running as root (which they refuse), as the `postgres` user through
//! `setpriv`, which execs the program itself (so a signal to the child reaches the server). Shared by the tests'
//! server and the cluster benchmark's.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL program from the PATH, or from Debian's versioned directory (newest first).
pub fn program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path().join("bin").join(name)))
        .filter(|candidate| candidate.is_file())
        .collect();
    versioned.sort();
    on_path.or_else(|| versioned.pop()).unwrap_or_else(|| {
        panic!("`{name}` is not installed: these tests need PostgreSQL (Debian package `postgresql`; scripts/setup installs it)")
    })
}

pub fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program` as a command that runs as the server's user.
pub fn as_server_user(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}
