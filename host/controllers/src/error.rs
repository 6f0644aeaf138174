//! Why the controller manager could not do something.

/// A controller manager failure.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The API server does not serve a kind a controller watches.
    #[error("cannot find kind {kind} in the API server's discovery: {reason}")]
    Discovery {
        /// `group/version/kind`.
        kind: String,
        /// What went wrong.
        reason: String,
    },
    /// A controller component could not be loaded or called.
    #[error(transparent)]
    Plugin(#[from] capstan_wasm::PluginError),
    /// No controller of that name runs here.
    #[error("no controller named {0} runs in this manager")]
    Unknown(String),
    /// The controller declares nothing to reconcile.
    #[error("controller {0} declares no primary kind in describe()")]
    NoPrimary(String),
}
