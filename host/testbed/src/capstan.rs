//! A `capstan server` process on a free port with a temporary data directory, and `kubectl`
//! pointed at it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{TestbedError, free_port, retry_taken_ports};

/// The `capstan` binary built beside the running test (`target/<profile>/capstan`).
pub fn capstan_binary() -> Result<PathBuf, TestbedError> {
    let exe = std::env::current_exe().map_err(|e| start_error(format!("cannot find the test binary: {e}")))?;
    // Tests run from target/<profile>/deps/; the binary is one level up.
    let binary = exe.parent().and_then(Path::parent).map(|dir| dir.join("capstan"));
    match binary {
        Some(path) if path.exists() => Ok(path),
        _ => Err(start_error(
            "the capstan binary is not built; run `cargo build -p capstan` first (scripts/test does)".into(),
        )),
    }
}

/// A started server, its port, kubeconfig and stderr collector.
type Started = (Child, u16, PathBuf, Option<std::thread::JoinHandle<String>>);

/// How a start that ended before the kubeconfig line was printed is reported.
const EXITED: &str = "exited before printing its kubeconfig line";

fn start_error(reason: String) -> TestbedError {
    TestbedError::Start { what: "capstan server".into(), reason }
}

/// A running `capstan server`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct CapstanServer {
    child: Child,
    port: u16,
    kubeconfig: PathBuf,
    /// Always `Some` until [`CapstanServer::stop`] takes it.
    dir: Option<TempDir>,
    /// The thread collecting stderr, for a server started by [`CapstanServer::start_capturing_stderr`].
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl CapstanServer {
    /// Starts a server with an embedded store and waits until it prints its kubeconfig line.
    pub fn start() -> Result<Self, TestbedError> {
        Self::start_with(&[])
    }

    /// Starts a server with extra `capstan server` arguments.
    pub fn start_with(extra: &[&str]) -> Result<Self, TestbedError> {
        let dir =
            tempfile::Builder::new().prefix("capstan-server-").tempdir().map_err(|e| start_error(e.to_string()))?;
        Self::start_in(dir, extra)
    }

    /// Starts a server in an existing data directory (for restart tests).
    pub fn start_in(dir: TempDir, extra: &[&str]) -> Result<Self, TestbedError> {
        Self::launch(dir, extra, false)
    }

    /// Starts a server whose stderr is collected instead of inherited; read it with
    /// [`CapstanServer::stop_with_stderr`] (e.g. to check that stopping prints no panic).
    pub fn start_capturing_stderr(extra: &[&str]) -> Result<Self, TestbedError> {
        let dir =
            tempfile::Builder::new().prefix("capstan-server-").tempdir().map_err(|e| start_error(e.to_string()))?;
        Self::launch(dir, extra, true)
    }

    /// Stops the server (SIGTERM, then SIGKILL after five seconds) and returns what it wrote to
    /// stderr; empty unless started by [`CapstanServer::start_capturing_stderr`].
    #[must_use]
    pub fn stop_with_stderr(mut self) -> String {
        self.terminate();
        self.stderr.take().and_then(|reader| reader.join().ok()).unwrap_or_default()
    }

    /// Starts the server on a free port. A server whose port was taken before it bound it exits
    /// before printing its kubeconfig line, and is started again on another port.
    fn launch(dir: TempDir, extra: &[&str], capture_stderr: bool) -> Result<Self, TestbedError> {
        let (child, port, kubeconfig, stderr) =
            retry_taken_ports(|reason| reason.starts_with(EXITED), || Self::launch_once(&dir, extra, capture_stderr))?;
        Ok(CapstanServer { child, port, kubeconfig, dir: Some(dir), stderr })
    }

    fn launch_once(dir: &TempDir, extra: &[&str], capture_stderr: bool) -> Result<Started, TestbedError> {
        let port = free_port().map_err(|e| start_error(e.to_string()))?;
        let data_dir = dir.path().join("data");
        let mut child = Command::new(capstan_binary()?)
            .arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--port", &port.to_string()])
            // No node agent (containerd) unless a test asks for one with `--node=true`.
            .arg("--node=false")
            .args(extra)
            .env("RUST_LOG", std::env::var("CAPSTAN_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if capture_stderr { Stdio::piped() } else { Stdio::inherit() })
            .spawn()
            .map_err(|e| start_error(format!("cannot spawn: {e}")))?;
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
                text
            })
        });
        let stdout = child.stdout.take().ok_or_else(|| start_error("no stdout".into()))?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("export KUBECONFIG=") {
                    let _ = sender.send(line);
                } else if std::env::var_os("CAPSTAN_TEST_LOG").is_some() {
                    eprintln!("{line}");
                }
            }
        });
        match receiver.recv_timeout(Duration::from_mins(1)) {
            Ok(line) => {
                let kubeconfig = PathBuf::from(line.rsplit("export KUBECONFIG=").next().unwrap_or_default().trim());
                Ok((child, port, kubeconfig, stderr))
            }
            // Its stdout closed without the line: the server exited (or is exiting).
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_err(|e| start_error(format!("cannot wait for it: {e}")))?;
                Err(start_error(format!("{EXITED} ({status})")))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(start_error("did not print its kubeconfig line within 60s".into()))
            }
        }
    }

    /// The server's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory in KiB, from `/proc`.
    #[must_use]
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory the server has had, in KiB, from `/proc`.
    #[must_use]
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// The HTTPS port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin kubeconfig.
    #[must_use]
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The temporary directory holding the data directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/nonexistent"), TempDir::path)
    }

    /// Runs the real `kubectl` against this server.
    #[must_use]
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    /// Runs `kubectl` with `stdin` as its standard input.
    #[must_use]
    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_with_env(args, stdin, &[])
    }

    /// The admin's bearer token.
    #[must_use]
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir().join("data/pki/admin.token")).unwrap_or_default().trim().to_string()
    }

    /// Runs `kubectl` with `stdin` and extra environment variables (such as `KUBE_EDITOR`).
    #[must_use]
    pub fn kubectl_with_env(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        use std::io::Write as _;
        let mut command = Command::new("kubectl");
        command
            .args(args)
            .envs(env.iter().copied())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir())
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return Output {
                    status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
                    stdout: Vec::new(),
                    stderr: format!("cannot run kubectl: {e}").into_bytes(),
                };
            }
        };
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let _ = pipe.write_all(input.as_bytes());
        }
        child.wait_with_output().unwrap_or_else(|e| Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: format!("kubectl failed: {e}").into_bytes(),
        })
    }

    /// Whether the server process has exited.
    #[must_use]
    pub fn exited(&self) -> bool {
        // `try_wait` needs `&mut`; a zombie or vanished /proc entry both mean it is gone.
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .map_or(true, |stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
    }

    /// Stops the server and gives back its directory (for restart tests): what its node agent
    /// runs (containerd, shims, containers) keeps running, as it does when a kubelet restarts.
    #[must_use]
    pub fn stop(mut self) -> Option<TempDir> {
        self.stop_process();
        self.dir.take()
    }

    fn terminate(&mut self) {
        self.stop_process();
        self.clean_up_node();
    }

    fn stop_process(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill").arg(self.child.id().to_string()).stderr(Stdio::null()).status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops what a server's node agent leaves running and mounted once the server is gone: the
    /// containerd it started, the runc shims and their containers, and the sandboxes' `shm`,
    /// network-namespace and overlay mounts under the data directory. Without this every node
    /// test would leave processes and mounts behind.
    fn clean_up_node(&self) {
        let Some(dir) = self.dir.as_ref().map(|d| d.path().to_string_lossy().into_owned()) else { return };
        let processes = processes();
        let mut doomed: Vec<u32> =
            processes.iter().filter(|p| p.cmdline.contains(dir.as_str())).map(|p| p.pid).collect();
        // The containers are the shims' descendants; their command lines do not name the directory.
        let mut i = 0;
        while i < doomed.len() {
            let parent = doomed[i];
            let children: Vec<u32> =
                processes.iter().filter(|p| p.parent == parent && !doomed.contains(&p.pid)).map(|p| p.pid).collect();
            doomed.extend(children);
            i += 1;
        }
        for pid in &doomed {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(dir.as_str()))
            .collect();
        // Deepest first, so a mount is never detached before one inside it.
        under.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in under {
            let _ = Command::new("umount").args(["-l", point]).stderr(Stdio::null()).status();
        }
    }
}

/// A process: its id, its parent's and its command line (arguments joined by spaces).
struct Process {
    pid: u32,
    parent: u32,
    cmdline: String,
}

/// The processes of this machine, from `/proc`.
fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // Fields after the parenthesised command: state, then the parent's id.
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            Some(Process { pid, parent, cmdline })
        })
        .collect()
}

impl Drop for CapstanServer {
    fn drop(&mut self) {
        self.terminate();
    }
}
