//! Helpers shared by the end-to-end tests: running kubectl and reading what it printed.

#![allow(
    clippy::must_use_candidate,
    reason = "kubectl helpers are called for their effect as often as for their output"
)]

use std::process::Output;
use std::time::{Duration, Instant};

pub use capstan_testbed::CapstanServer;

/// What a kubectl run printed, with its exit status.
#[derive(Debug)]
pub struct Run {
    /// Exit status was zero.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs kubectl against `server`; panics with its output if it fails.
///
/// # Panics
/// When kubectl exits non-zero.
pub fn kubectl(server: &CapstanServer, args: &[&str]) -> String {
    let run = Run::from(server.kubectl(args));
    assert!(run.ok, "kubectl {} failed:\nstdout: {}\nstderr: {}", args.join(" "), run.stdout, run.stderr);
    run.stdout
}

/// Runs kubectl with a manifest on stdin; panics with its output if it fails.
///
/// # Panics
/// When kubectl exits non-zero.
pub fn kubectl_stdin(server: &CapstanServer, args: &[&str], stdin: &str) -> String {
    let run = Run::from(server.kubectl_with_stdin(args, Some(stdin)));
    assert!(run.ok, "kubectl {} failed:\nstdout: {}\nstderr: {}", args.join(" "), run.stdout, run.stderr);
    run.stdout
}

/// Runs kubectl expecting it to fail; returns what it printed.
///
/// # Panics
/// When kubectl succeeds.
pub fn kubectl_fails(server: &CapstanServer, args: &[&str], stdin: Option<&str>) -> Run {
    let run = Run::from(server.kubectl_with_stdin(args, stdin));
    assert!(!run.ok, "kubectl {} should have failed but printed:\n{}", args.join(" "), run.stdout);
    run
}

/// Parses kubectl's JSON output.
///
/// # Panics
/// When the output is not JSON.
#[must_use]
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("kubectl printed invalid JSON ({e}):\n{text}"))
}

/// Starts a server for one test.
///
/// # Panics
/// When the server does not start.
#[must_use]
pub fn server() -> CapstanServer {
    CapstanServer::start().unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout` with `what`.
///
/// # Panics
/// When `timeout` passes first.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
