//! Finds the WebAssembly fixtures built from `plugins/` (the `capstan-components` build script
//! builds them with the host).

#![allow(dead_code, reason = "each test target uses part of this module")]

use std::path::Path;

/// The fixtures' components, by crate name: `fixture_allow_all`, `require_label`, …
pub fn component(name: &str) -> Vec<u8> {
    let path = components_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The directory holding the built components (built with the host by `capstan-components`).
pub fn components_dir() -> &'static Path {
    capstan_components::build_dir()
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
