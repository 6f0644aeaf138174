//! Real external processes that Capstan's tests run against — never mocks.
//!
//! It owns starting, health-checking and stopping such processes on free loopback ports with
//! temporary state, and installing them from Debian's packages (through the project's
//! `scripts/install-deps`) when they are missing. It must not be used by server code.
//!
//! Start with [`EtcdServer::start`] or [`CapstanServer::start`].

mod capstan;
mod components;
mod etcd;

pub use capstan::{CapstanServer, capstan_binary};
pub use components::component_path;
pub use etcd::EtcdServer;

use std::path::PathBuf;
use std::process::Command;

/// Why a test process could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// Installing the Debian package failed.
    #[error("installing {what} with scripts/install-deps failed: {reason}")]
    Install {
        /// The dependency group.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// The process did not start or become healthy.
    #[error("{what} did not start: {reason}")]
    Start {
        /// The process.
        what: String,
        /// What went wrong, with its log when there is one.
        reason: String,
    },
}

/// The repository root (this crate lives in `host/testbed`).
#[must_use]
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Makes sure `command` is on PATH, installing dependency `group` when it is not.
pub fn ensure_installed(command: &str, group: &str) -> Result<(), TestbedError> {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {command}")).output();
    if found.is_ok_and(|out| out.status.success()) {
        return Ok(());
    }
    let script = repo_root().join("scripts/install-deps");
    let output = Command::new("bash").arg(&script).arg(group).output().map_err(|e| TestbedError::Install {
        what: group.into(),
        reason: format!("cannot run {}: {e}", script.display()),
    })?;
    if !output.status.success() {
        return Err(TestbedError::Install {
            what: group.into(),
            reason: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Runs `start`, which starts a process on ports it chooses free, again (five tries in all)
/// while its failure's reason satisfies `taken`: a port found free can be taken by another
/// process before the started one binds it, as tests start servers side by side.
pub(crate) fn retry_taken_ports<T>(
    taken: impl Fn(&str) -> bool,
    mut start: impl FnMut() -> Result<T, TestbedError>,
) -> Result<T, TestbedError> {
    let mut attempt = 1;
    loop {
        match start() {
            Err(TestbedError::Start { what, reason }) if attempt < 5 && taken(&reason) => {
                eprintln!("{what} did not start ({reason}); starting it again on other ports");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let [port] = free_ports()?;
    Ok(port)
}

/// `N` different TCP ports on 127.0.0.1 that were free a moment ago (all held at once while
/// chosen, so no two are the same).
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let listeners = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
