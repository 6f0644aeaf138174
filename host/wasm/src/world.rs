//! The seam between the generic runtime and one WIT world's typed bindings.

use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};

use crate::host::HostState;

/// One WIT world of the `capstan:plugin` package, as the runtime hosts it.
///
/// The runtime does everything world-independent — compiling, caching, pooling, limits,
/// metrics, reload — and asks this trait for the rest. Implement it with the types
/// `wasmtime::component::bindgen!` generates for the world; [`AdmissionWorld`] is the model.
///
/// [`AdmissionWorld`]: crate::admission::AdmissionWorld
pub trait World: Send + Sync + 'static {
    /// The world's name in the WIT package, for errors and metrics.
    const NAME: &'static str;
    /// The generated, type-checked pre-instance (`<World>Pre`).
    type Pre: Clone + Send + Sync + 'static;
    /// The generated bindings of one instance.
    type Instance: Send + 'static;

    /// Adds the world's imports (and WASI) to `linker`.
    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;

    /// Checks that the component exports what the world requires.
    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;

    /// Instantiates the component in `store`.
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self::Instance>;

    /// Calls the instance's `lifecycle.configure`.
    fn configure(
        instance: &Self::Instance,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>>;
}
