//! One etcd member on loopback with a temporary data directory.

use std::fs::File;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{TestbedError, ensure_installed, free_ports, retry_taken_ports};

/// A running single-member etcd cluster, stopped when dropped.
///
/// The member runs under a small shell watchdog that stops it when the test process exits, so
/// a server kept in a `static` does not outlive its test binary.
pub struct EtcdServer {
    watchdog: Child,
    endpoint: String,
    dir: TempDir,
}

impl EtcdServer {
    /// Installs etcd when missing, starts a member on free ports and waits until it serves.
    ///
    /// A port found free can be taken by another process before etcd binds it (tests start
    /// members side by side), so a start that fails on a port in use is tried again on new ports.
    pub fn start() -> Result<Self, TestbedError> {
        ensure_installed("etcd", "etcd")?;
        retry_taken_ports(|reason| reason.contains("address already in use"), Self::start_once)
    }

    fn start_once() -> Result<Self, TestbedError> {
        let start_error = |reason: String| TestbedError::Start { what: "etcd".into(), reason };
        let dir = tempfile::Builder::new()
            .prefix("capstan-etcd-")
            .tempdir()
            .map_err(|e| start_error(format!("cannot create a data directory: {e}")))?;
        let [client_port, peer_port] = free_ports().map_err(|e| start_error(format!("no free port: {e}")))?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = File::create(dir.path().join("etcd.log")).map_err(|e| start_error(e.to_string()))?;
        let etcd = format!(
            "etcd --name capstan-test --data-dir '{data}' --listen-client-urls {endpoint} \
             --advertise-client-urls {endpoint} --listen-peer-urls {peer} \
             --initial-advertise-peer-urls {peer} --initial-cluster capstan-test={peer} \
             --log-level warn",
            data = dir.path().join("data").display(),
        );
        // The watchdog polls the test process and stops etcd once it is gone.
        let script = format!(
            "{etcd} & member=$!; trap 'kill $member 2>/dev/null; wait $member; exit 0' TERM INT; \
             while kill -0 {parent} 2>/dev/null && kill -0 $member 2>/dev/null; do sleep 0.5; done; \
             kill $member 2>/dev/null; wait $member",
            parent = std::process::id(),
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| start_error(e.to_string()))?)
            .stderr(log)
            .spawn()
            .map_err(|e| start_error(format!("cannot spawn: {e}")))?;
        let mut server = EtcdServer { watchdog, endpoint, dir };
        server.wait_until_serving(client_port)?;
        Ok(server)
    }

    fn wait_until_serving(&mut self, port: u16) -> Result<(), TestbedError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.watchdog.try_wait() {
                return Err(self.failure(&format!("exited with {status}")));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && self.healthy() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.failure("not healthy within 20s"))
    }

    fn healthy(&self) -> bool {
        Command::new("etcdctl")
            .args(["--endpoints", &self.endpoint, "endpoint", "health"])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn failure(&self, reason: &str) -> TestbedError {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        TestbedError::Start { what: "etcd".into(), reason: format!("{reason}; log:\n{log}") }
    }

    /// The client URL, such as `http://127.0.0.1:40123`.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.watchdog.id().to_string()).status();
        let _ = self.watchdog.wait();
    }
}
