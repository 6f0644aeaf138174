//! Container probes: startup, liveness and readiness, by exec (CRI `ExecSync`), HTTP GET or TCP
//! connect against the pod IP, with Kubernetes' defaults for delays, periods and thresholds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::runtime::Cri;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Gates the other two until it succeeds; failing it restarts the container.
    Startup,
    /// Failing it restarts the container.
    Liveness,
    /// Gates the container's (and so the pod's) Ready condition.
    Readiness,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

#[derive(Default)]
struct Tracker {
    last: Option<Instant>,
    successes: i32,
    failures: i32,
}

/// Probe results of one container attempt (a restarted container starts over).
#[derive(Default)]
pub struct ContainerProbes {
    container_id: String,
    started_at: Option<Instant>,
    trackers: HashMap<Kind, Tracker>,
    /// Whether the startup probe (if any) has succeeded.
    pub started: bool,
    /// Whether the readiness probe (if any) says ready.
    pub ready: bool,
}

/// What the worker must do after probing.
pub enum Verdict {
    /// Nothing.
    Fine,
    /// Restart the container; the message says which probe failed how.
    Restart(String),
}

fn probe_of(container: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Startup => container.startup_probe.as_ref(),
        Kind::Liveness => container.liveness_probe.as_ref(),
        Kind::Readiness => container.readiness_probe.as_ref(),
    }
}

fn port_number(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Runs one probe; `Ok(())` on success, the failure's description otherwise.
async fn run(cri: &Cri, container_id: &str, container: &Container, probe: &Probe, pod_ip: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    if let Some(exec) = &probe.exec {
        let request = cri::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: exec.command.clone().unwrap_or_default(),
            timeout: timeout.as_secs() as i64,
        };
        let reply = tokio::time::timeout(timeout + Duration::from_secs(1), cri.runtime.clone().exec_sync(request))
            .await
            .map_err(|_| format!("command timed out after {}s", timeout.as_secs()))?
            .map_err(|e| e.message().to_string())?
            .into_inner();
        return if reply.exit_code == 0 {
            Ok(())
        } else {
            let output = String::from_utf8_lossy(&reply.stdout).to_string() + &String::from_utf8_lossy(&reply.stderr);
            Err(format!("command exited with {}: {}", reply.exit_code, output.trim()))
        };
    }
    if let Some(http) = &probe.http_get {
        let port = port_number(container, &http.port).ok_or("unknown probe port")?;
        let host = http.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
            let request = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\n\r\n");
            stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut head = vec![0u8; 64];
            let read = stream.read(&mut head).await.map_err(|e| e.to_string())?;
            let line = String::from_utf8_lossy(&head[..read]).to_string();
            let code: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            if (200..400).contains(&code) { Ok(()) } else { Err(format!("HTTP probe failed with statuscode: {code}")) }
        };
        return tokio::time::timeout(timeout, attempt).await.map_err(|_| "HTTP probe timed out".to_string())?;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port_number(container, &tcp.port).ok_or("unknown probe port")?;
        let host = tcp.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: timeout")),
        };
    }
    Err("the probe has no handler".into())
}

impl ContainerProbes {
    /// (started, ready) of container attempt `container_id`, before any probe ran included.
    #[must_use]
    pub fn gates(probes: Option<&Self>, container_id: &str, container: &Container) -> (bool, bool) {
        match probes {
            Some(p) if p.container_id == container_id => (p.started, p.ready),
            _ => (container.startup_probe.is_none(), container.readiness_probe.is_none()),
        }
    }

    /// Probes that are due for the running container `container_id`; resets when the
    /// container changed. Events describing failures are returned with the verdict.
    pub async fn probe(
        &mut self,
        cri: &Cri,
        container_id: &str,
        container: &Container,
        pod_ip: &str,
    ) -> (Verdict, Vec<String>) {
        if self.container_id != container_id {
            *self = ContainerProbes {
                container_id: container_id.to_string(),
                started_at: Some(Instant::now()),
                started: container.startup_probe.is_none(),
                ready: container.readiness_probe.is_none(),
                ..ContainerProbes::default()
            };
        }
        let mut messages = Vec::new();
        let kinds: &[Kind] = if self.started { &[Kind::Liveness, Kind::Readiness] } else { &[Kind::Startup] };
        for &kind in kinds {
            let Some(probe) = probe_of(container, kind) else { continue };
            let since_start = self.started_at.map_or(Duration::ZERO, |t| t.elapsed());
            let delay = Duration::from_secs(u64::try_from(probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0));
            let period = Duration::from_secs(u64::try_from(probe.period_seconds.unwrap_or(10).max(1)).unwrap_or(10));
            let tracker = self.trackers.entry(kind).or_default();
            if since_start < delay || tracker.last.is_some_and(|t| t.elapsed() < period) {
                continue;
            }
            tracker.last = Some(Instant::now());
            let result = run(cri, container_id, container, probe, pod_ip).await;
            let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
            let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
            match result {
                Ok(()) => {
                    tracker.failures = 0;
                    tracker.successes += 1;
                    if tracker.successes >= success_threshold {
                        match kind {
                            Kind::Startup => self.started = true,
                            Kind::Readiness => self.ready = true,
                            Kind::Liveness => {}
                        }
                    }
                }
                Err(why) => {
                    tracker.successes = 0;
                    tracker.failures += 1;
                    messages.push(format!("{} probe failed: {why}", kind.name()));
                    if tracker.failures >= failure_threshold {
                        match kind {
                            Kind::Readiness => self.ready = false,
                            Kind::Startup | Kind::Liveness => {
                                let message = format!(
                                    "Container {} failed {} probe, will be restarted",
                                    container.name,
                                    kind.name().to_lowercase()
                                );
                                return (Verdict::Restart(message), messages);
                            }
                        }
                    }
                }
            }
        }
        (Verdict::Fine, messages)
    }
}
