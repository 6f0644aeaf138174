//! Helpers shared by the end-to-end tests: running kubectl and reading what it printed.

#![allow(
    clippy::must_use_candidate,
    reason = "kubectl helpers are called for their effect as often as for their output"
)]
#![allow(clippy::missing_panics_doc, reason = "every helper panics to fail the test that called it")]

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use capstan_testbed::CapstanServer;
use capstan_testbed::{capstan_binary, ensure_installed};

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

/// `component` as a different build would be: the same code with a custom section naming
/// `build` appended, so its digest differs (the component model allows custom sections after
/// any other section).
#[must_use]
pub fn rebuilt(component: &[u8], build: &str) -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = u8::try_from(value & 0x7f).unwrap_or(0);
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"capstan-build";
    let mut payload = Vec::new();
    leb128(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(build.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    leb128(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

// ---- servers with a real node agent (containerd), for tests/node.rs and tests/e2e.rs ----

/// The busybox image `capstan image build-busybox` writes.
pub const BUSYBOX: &str = "capstan.local/busybox:latest";

/// A server with a node agent; when dropped (also when a test fails) it deletes its pods through
/// the agent and removes the node's bridge, so no pod or route outlives the test.
pub struct NodeServer(Option<CapstanServer>);

impl NodeServer {
    /// Takes care of `server`'s pods and bridge from now on.
    #[must_use]
    pub fn new(server: CapstanServer) -> Self {
        Self(Some(server))
    }

    /// Stops the server as Ctrl-C does (SIGINT), leaving its pods running, and gives back its
    /// directory for a restart.
    ///
    /// # Panics
    /// When the server does not stop within 30 seconds.
    #[must_use]
    pub fn interrupt(mut self) -> Option<tempfile::TempDir> {
        let server = self.0.take()?;
        let _ = Command::new("kill").args(["-INT", &server.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.exited() {
            assert!(Instant::now() < deadline, "the server did not stop on Ctrl-C within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        server.stop()
    }
}

impl std::ops::Deref for NodeServer {
    type Target = CapstanServer;
    fn deref(&self) -> &CapstanServer {
        self.0.as_ref().unwrap_or_else(|| unreachable!("a NodeServer holds its server until interrupted"))
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let Some(server) = &self.0 else { return };
        let _ = server.kubectl(&["delete", "pods", "--all", "-A", "--timeout=60s"]);
        let conflist = server.dir().join("data/node/containerd/cni/net.d/10-capstan.conflist");
        let bridge = std::fs::read_to_string(conflist)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|config| config["plugins"][0]["bridge"].as_str().map(String::from));
        if let Some(bridge) = bridge {
            let _ = Command::new("ip").args(["link", "del", &bridge]).status();
        }
    }
}

/// A server with a node agent named `name`, pod CIDRs from `10.<octet>.0.0/16`, and the busybox
/// image imported.
pub fn node_server(name: &str, octet: u8) -> NodeServer {
    NodeServer::new(start_node(None, name, octet))
}

/// Starts (or, given its directory, restarts) a server with a node agent and waits until the
/// node is Ready with the busybox image imported.
pub fn start_node(dir: Option<tempfile::TempDir>, name: &str, octet: u8) -> CapstanServer {
    start_node_with(dir, name, octet, &[])
}

/// [`start_node`] with more `capstan server` arguments.
pub fn start_node_with(dir: Option<tempfile::TempDir>, name: &str, octet: u8, extra: &[&str]) -> CapstanServer {
    for command in ["containerd", "runc", "ctr", "busybox", "cc"] {
        ensure_installed(command, "node").unwrap_or_else(|e| panic!("{e}"));
    }
    let cidr = format!("10.{octet}.0.0/16");
    let mut args = vec!["--node=true", "--node-name", name, "--cluster-cidr", &cidr, "--kubelet-port", "0"];
    args.extend_from_slice(extra);
    let server = match dir {
        Some(dir) => CapstanServer::start_in(dir, &args),
        None => CapstanServer::start_with(&args),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    wait_node_ready(&server, name);
    import_busybox(&server, &server.dir().join("data"));
    server
}

/// Waits (a minute at most) until node `name` is Ready.
pub fn wait_node_ready(server: &CapstanServer, name: &str) {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let out =
            server.kubectl(&["get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
        if String::from_utf8_lossy(&out.stdout) == "True" {
            break;
        }
        assert!(Instant::now() < deadline, "node {name} not Ready within a minute");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Builds the busybox image tar (`capstan image build-busybox`) and imports it into `server`'s
/// node (`capstan image import`) whose data directory is `data_dir` (a server's `data`, or an
/// agent's), as the README tells a user to.
pub fn import_busybox(server: &CapstanServer, data_dir: &std::path::Path) {
    let tar = server.dir().join("busybox.tar");
    let built = Command::new(capstan_binary().unwrap_or_else(|e| panic!("{e}")))
        .args(["image", "build-busybox"])
        .arg(&tar)
        .output()
        .unwrap_or_else(|e| panic!("cannot run capstan image build-busybox: {e}"));
    assert!(built.status.success(), "build-busybox failed: {}", String::from_utf8_lossy(&built.stderr));
    let imported = Command::new(capstan_binary().unwrap_or_else(|e| panic!("{e}")))
        .args(["image", "import"])
        .arg(&tar)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run capstan image import: {e}"));
    assert!(imported.status.success(), "image import failed: {}", String::from_utf8_lossy(&imported.stderr));
}

/// `GET path` over plain HTTP from the host.
pub fn http_get(ip: &str, port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().map_err(std::io::Error::other)?,
        Duration::from_secs(3),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// The cgroup directories of pod `uid`, in every hierarchy.
pub fn cgroups_of(uid: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|dirs| dirs.flatten().map(|d| d.path().join(format!("capstan/pod{uid}"))).filter(|p| p.exists()).collect())
        .unwrap_or_default()
}

/// The containers (and sandboxes) the node's containerd still has, one id a line.
pub fn sandboxes(server: &CapstanServer) -> String {
    let socket = server.dir().join("data/node/containerd/containerd.sock");
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["-n", "k8s.io", "containers", "list", "-q"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ctr: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A component built from an SDK example by its language's build script (scripts/test builds
/// them into `target/sdk-examples/`; built here when missing).
pub fn sdk_example(script: &str, source: &str, file: &str) -> String {
    let root = capstan_testbed::repo_root();
    let out = root.join("target/sdk-examples").join(file);
    if !out.is_file() {
        let built = std::process::Command::new(root.join(script))
            .arg(root.join(source))
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(built.status.success(), "{script} failed:\n{}", String::from_utf8_lossy(&built.stderr));
    }
    out.to_string_lossy().into_owned()
}

/// Points Plugin `plugin` at the component file `file` (dropping any other source), as
/// `kubectl patch` does; the server reloads it.
pub fn point_plugin_at(server: &CapstanServer, plugin: &str, file: &std::path::Path) {
    let patch = serde_json::json!({"spec": {"component": {"builtin": null, "path": file}}}).to_string();
    kubectl(server, &["patch", "plugin", plugin, "--type=merge", "-p", &patch]);
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

/// Runs `kubectl ARGS` for `duration` with `input` on its stdin (left open), then stops it and
/// returns what it printed (stdout, then stderr).
///
/// # Panics
/// When kubectl cannot be run.
pub fn kubectl_for(server: &CapstanServer, args: &[&str], input: &[u8], duration: Duration) -> String {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", server.kubeconfig())
        .env("HOME", server.dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
    let mut stdin = child.stdin.take();
    if let Some(stdin) = stdin.as_mut() {
        stdin.write_all(input).unwrap_or_else(|e| panic!("kubectl stdin: {e}"));
    }
    std::thread::sleep(duration);
    let _ = child.kill();
    drop(stdin);
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}
