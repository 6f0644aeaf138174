//! Write Capstan plugins in Rust.
//!
//! A Capstan plugin is a WebAssembly component implementing one world of the `capstan:plugin`
//! WIT package (`wit/` at the repository root). This crate hides the component plumbing: a plugin
//! is a type implementing one trait plus one macro call, built with
//! `cargo build --target wasm32-wasip2 --release` into a `.wasm` file Capstan loads.
//!
//! Start with [`admission`]: implement [`admission::AdmissionPolicy`] and export it with
//! [`admission_policy!`]:
//!
//! ```no_run
//! use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse};
//!
//! /// Denies every object in the `forbidden` namespace.
//! struct NotThere;
//!
//! impl AdmissionPolicy for NotThere {
//!     fn configure(_config: &str) -> Result<Self, String> {
//!         Ok(NotThere)
//!     }
//!
//!     fn validate(&self, request: &AdmissionRequest) -> AdmissionResponse {
//!         match request.namespace.as_deref() {
//!             Some("forbidden") => AdmissionResponse::deny("nothing may be written to `forbidden`"),
//!             _ => AdmissionResponse::allow(),
//!         }
//!     }
//! }
//!
//! capstan_plugin_sdk::admission_policy!(NotThere);
//! ```
//!
//! `plugins/admission/require-label/` in the repository is a complete example with tests.
//! Log through [`log`]; messages land in the host's log tagged with the plugin's name.
//!
//! The crate must be a `cdylib` (`[lib] crate-type = ["cdylib"]`). Build it with the release
//! profile Capstan uses (`opt-level = "s"`, `lto = true`, `strip = true`, `panic = "abort"`): a
//! policy is then about 40 KB and compiles in milliseconds.

pub mod admission;
pub mod controller;
pub mod json;
pub mod log;
pub mod quantity;
pub mod quota;
pub mod scheduler;

// Lets the generated bindings name this crate the same way from inside and outside it.
extern crate self as capstan_plugin_sdk;

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    /// Bindings for the `admission-policy` world.
    pub mod admission_bindings {
        #![allow(missing_docs, clippy::pedantic, reason = "generated code")]
        wit_bindgen::generate!({
            path: "../../wit",
            world: "capstan:plugin/admission-policy@0.1.0",
            pub_export_macro: true,
            export_macro_name: "__export_admission_policy",
            default_bindings_module: "capstan_plugin_sdk::__private::admission_bindings",
            runtime_path: "capstan_plugin_sdk::__private::wit_bindgen::rt",
        });
    }

    /// Bindings for the `controller` world.
    pub use capstan_plugin_sdk_controller_bindings as controller_bindings;
    /// Bindings for the `scheduler-plugin` world.
    pub use capstan_plugin_sdk_scheduler_bindings as scheduler_bindings;
}
