//! The WebAssembly components Capstan ships — default admission policies, scheduler plugins and
//! controllers from `plugins/` — built for `wasm32-wasip2` as part of the host's normal build
//! (by this crate's build script) and embedded in the binary, so `capstan server` needs no extra
//! step. Test fixtures from `plugins/fixtures/` are built too, but only their paths are known.
//!
//! Start with [`get`] for a shipped component's bytes, [`path`] for any built component's file.

use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The bytes of the shipped component built from plugin crate `name` (e.g. `require-label`).
#[must_use]
pub fn get(name: &str) -> Option<&'static [u8]> {
    SHIPPED.iter().find(|(crate_name, _)| *crate_name == name).map(|(_, bytes)| *bytes)
}

/// The names of every shipped component.
pub fn names() -> impl Iterator<Item = &'static str> {
    SHIPPED.iter().map(|(name, _)| *name)
}

/// The directory the plugins build writes its components to.
#[must_use]
pub fn build_dir() -> &'static std::path::Path {
    std::path::Path::new(BUILD_DIR)
}

/// The file the plugins build wrote for crate `name` (shipped plugin or test fixture), if any.
#[must_use]
pub fn path(name: &str) -> Option<PathBuf> {
    let file = build_dir().join(format!("{}.wasm", name.replace('-', "_")));
    file.is_file().then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_components_are_embedded_and_on_disk() {
        let bytes = get("require-label").expect("require-label is shipped");
        // A component starts with the wasm magic and the component-model layer/version.
        assert_eq!(&bytes[..4], b"\0asm");
        assert!(names().any(|n| n == "require-label"));
        assert!(get("fixture-allow-all").is_none(), "fixtures are not shipped");
        assert!(path("fixture-allow-all").is_some(), "fixtures are built");
        assert!(path("no-such-plugin").is_none());
    }
}
