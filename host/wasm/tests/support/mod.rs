//! Finds the WebAssembly fixtures built from `plugins/`, building them first when needed.
//!
//! `scripts/test` builds them before the host tests; a plain `cargo test` builds them here.

#![allow(dead_code, reason = "each test target uses part of this module")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The fixtures' components, by crate name: `fixture_allow_all`, `require_label`, …
pub fn component(name: &str) -> Vec<u8> {
    let path = components_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The directory holding the built components.
pub fn components_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(find_or_build)
}

const PROBE: &str = "fixture_allow_all.wasm";

fn find_or_build() -> PathBuf {
    // Where `scripts/test` put them when the target directory is shared.
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(target).join("wasm32-wasip2/release");
        if dir.join(PROBE).is_file() {
            return dir;
        }
    }
    // Otherwise the plugins workspace's own target directory, brought up to date (a no-op when
    // it is). Its own directory, so this never waits on the lock of the build running the tests.
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let target = plugins.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the plugin fixtures: {e}"));
    assert!(
        status.success(),
        "building the plugin fixtures failed; run `cargo build --manifest-path plugins/Cargo.toml \
         --target wasm32-wasip2 --release` (after `rustup target add wasm32-wasip2`) to see why"
    );
    let dir = target.join("wasm32-wasip2/release");
    assert!(dir.join(PROBE).is_file(), "the fixtures build did not produce {}", dir.join(PROBE).display());
    dir
}

/// A `Pod` create request named `name` carrying `object` (JSON), as the API server sends it.
pub fn pod_request(name: &str, object: Option<String>) -> capstan_wasm::admission::AdmissionRequest {
    use capstan_wasm::admission::{AdmissionRequest, GroupVersionKind, GroupVersionResource, Operation, UserInfo};
    AdmissionRequest {
        uid: "00000000-0000-0000-0000-000000000001".to_owned(),
        kind: GroupVersionKind { group: String::new(), version: "v1".to_owned(), kind: "Pod".to_owned() },
        resource: GroupVersionResource { group: String::new(), version: "v1".to_owned(), resource: "pods".to_owned() },
        sub_resource: None,
        request_kind: None,
        request_resource: None,
        name: name.to_owned(),
        namespace: Some("default".to_owned()),
        operation: Operation::Create,
        user_info: UserInfo { username: "alice".to_owned(), uid: String::new(), groups: vec![], extra: vec![] },
        object,
        old_object: None,
        dry_run: false,
        options: None,
    }
}
