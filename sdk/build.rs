//! Writes the export macros with the absolute path of the contract (`wit/`, inside this crate).
//!
//! `wit_bindgen::generate!` resolves relative paths against the crate that invokes it, which for an export macro is
//! the plugin's crate, and it accepts only a string literal. So the path is baked into the macro here, once. The
//! contract ships in the package, so the path is the SDK's own wherever it is built: a checkout, a `--sdk` path or
//! cargo's registry cache.

use std::{env, fs, path::PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let wit = manifest_dir.join("wit").canonicalize().expect("the contract lives in wit/, beside Cargo.toml");
    println!("cargo:rerun-if-changed={}", wit.display());
    let template = fs::read_to_string(manifest_dir.join("src/export.rs.in")).expect("src/export.rs.in");
    println!("cargo:rerun-if-changed=src/export.rs.in");
    let wit = wit.to_str().expect("the path of wit/ is UTF-8");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("export.rs");
    fs::write(out, template.replace("@WIT_DIR@", &wit.replace('\\', "\\\\"))).expect("write export.rs");
}
