//! Compiles the plugin crates to `wasm32-wasip2` components with one nested `cargo build` into a target directory
//! of its own, and writes constants that embed them.
//!
//! The nested build runs without the outer build's RUSTFLAGS and wrappers (they are meant for the host), and the
//! `rerun-if-changed` lines come from the `.d` files cargo writes, so a change to a plugin or the SDK rebuilds exactly
//! what it must.

use std::collections::BTreeSet;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.join("../..").canonicalize().unwrap();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());

    let builtin = crates_in(&workspace.join("plugins"), &["artifacts"]);
    let guests = if env::var_os("CARGO_FEATURE_TEST_GUESTS").is_some() {
        crates_in(&workspace.join("tests/guests"), &[])
    } else {
        Vec::new()
    };

    // One directory next to the outer build's, so one nested build serves debug, release and test builds alike.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_relative() { workspace.join(dir) } else { dir })
        .unwrap_or_else(|| workspace.join("target"))
        .join("plugins-wasm");

    let mut cargo = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(&workspace)
        .args(["build", "--quiet", "--target", TARGET, "--profile", PROFILE, "--target-dir"])
        .arg(&target_dir);
    for name in builtin.iter().chain(&guests) {
        cargo.args(["--package", name]);
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo.status().expect("run cargo to build the plugins");
    assert!(status.success(), "building the plugins for {TARGET} failed (see the errors above)");

    let artifacts = target_dir.join(TARGET).join(PROFILE);
    let mut code = String::new();
    let mut inputs = BTreeSet::new();
    let mut builtin_list = String::new();
    for name in &builtin {
        let path = component(&artifacts, name, &mut inputs);
        let constant = constant_name(name);
        writeln!(code, "/// The `{name}` plugin.\npub const {constant}: &[u8] = include_bytes!({path:?});").unwrap();
        writeln!(builtin_list, "    ({name:?}, {constant}),").unwrap();
    }
    writeln!(code, "\n/// Every built-in plugin: its crate name and its component.").unwrap();
    writeln!(code, "pub const BUILTIN: &[(&str, &[u8])] = &[\n{builtin_list}];").unwrap();
    if !guests.is_empty() {
        writeln!(code, "\n/// Test guests from `tests/guests`.\npub mod guests {{").unwrap();
        for name in &guests {
            let path = component(&artifacts, name, &mut inputs);
            let constant = constant_name(name);
            writeln!(code, "    /// The `{name}` guest.\n    pub const {constant}: &[u8] = include_bytes!({path:?});")
                .unwrap();
        }
        writeln!(code, "}}").unwrap();
    }
    fs::write(out_dir.join("artifacts.rs"), code).unwrap();

    for input in inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.lock").display());
    println!("cargo:rerun-if-changed={}", workspace.join("plugins").display());
    println!("cargo:rerun-if-changed={}", workspace.join("tests/guests").display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
}

/// The crates in a directory: every subdirectory with a Cargo.toml, named like the directory.
fn crates_in(dir: &Path, skip: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            (path.join("Cargo.toml").is_file() && !skip.contains(&name.as_str())).then_some(name)
        })
        .collect();
    names.sort();
    names
}

/// The component of a crate, recording the sources it was built from.
fn component(artifacts: &Path, name: &str, inputs: &mut BTreeSet<PathBuf>) -> PathBuf {
    let stem = name.replace('-', "_");
    let wasm = artifacts.join(format!("{stem}.wasm"));
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    let dep_info = fs::read_to_string(artifacts.join(format!("{stem}.d"))).unwrap_or_default();
    if let Some((_, deps)) = dep_info.split_once(": ") {
        // Make-style list: spaces inside paths are escaped with a backslash.
        let deps = deps.trim().replace("\\ ", "\u{0}");
        inputs.extend(deps.split_whitespace().map(|d| PathBuf::from(d.replace('\u{0}', " "))));
    }
    wasm
}

/// `checker-http` → `HTTP`, `guest-loop` → `LOOP`.
fn constant_name(crate_name: &str) -> String {
    let short = crate_name.split_once('-').map_or(crate_name, |(_, rest)| rest);
    short.replace('-', "_").to_uppercase()
}
