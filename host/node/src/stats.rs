//! Resource usage of the node and of its pods' containers, the way the kubelet's Summary API
//! (`GET /stats/summary`) reports it: CPU as a rate (`usageNanoCores`) and cumulative time
//! (`usageCoreNanoSeconds`), memory as working set and usage. Container numbers come from the
//! runtime (CRI `ListContainerStats`), node numbers from `/proc`.
//!
//! A [`Sampler`] samples every few seconds and keeps the latest summary; a CPU rate needs two
//! samples, so the first summary is ready one interval after the agent starts. The API server
//! reads the summary to serve `metrics.k8s.io` (`kubectl top`, the `HorizontalPodAutoscaler`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_cri::v1 as cri;
use serde_json::{Value, json};

use crate::NodeError;
use crate::pods::{POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL};
use crate::runtime::Cri;

/// How often the node samples usage (the window of every CPU rate it reports).
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Nanoseconds per clock tick of `/proc/stat` (`USER_HZ` is 100 on Linux).
const NANOS_PER_TICK: u64 = 10_000_000;

/// A cumulative CPU counter at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuSample {
    /// Nanoseconds since the epoch.
    at: i64,
    /// CPU time used so far, in nanoseconds.
    used: u64,
}

impl CpuSample {
    /// The rate between `earlier` and `self` in nanocores (billionths of a CPU), if time passed
    /// and the counter did not go backwards (a restarted container starts from zero).
    fn nano_cores_since(self, earlier: CpuSample) -> Option<u64> {
        let elapsed = u64::try_from(self.at - earlier.at).ok().filter(|e| *e > 0)?;
        let used = self.used.checked_sub(earlier.used)?;
        Some((u128::from(used) * 1_000_000_000 / u128::from(elapsed)) as u64)
    }
}

/// Memory of the node from `/proc/meminfo`, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodeMemory {
    total: u64,
    available: u64,
}

/// Parses the `cpu` line of `/proc/stat` into busy time in nanoseconds (user, nice, system, irq,
/// softirq and steal; idle and iowait are not busy; guest time is already in user).
fn parse_proc_stat(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>().ok()?;
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| fields.get(i).copied().unwrap_or(0)).sum::<u64>();
    Some(busy * NANOS_PER_TICK)
}

/// Parses `MemTotal` and `MemAvailable` from `/proc/meminfo` (given in KiB).
fn parse_meminfo(text: &str) -> Option<NodeMemory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some(NodeMemory { total: field("MemTotal:")?, available: field("MemAvailable:")? })
}

fn timestamp(nanos: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(nanos).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn now_nanos() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

/// The Summary API's `cpu` block.
fn cpu_json(sample: CpuSample, nano_cores: Option<u64>) -> Value {
    let mut cpu = json!({"time": timestamp(sample.at), "usageCoreNanoSeconds": sample.used});
    if let Some(rate) = nano_cores {
        cpu["usageNanoCores"] = json!(rate);
    }
    cpu
}

/// What the sampler remembers between samples.
#[derive(Default)]
struct State {
    node_cpu: Option<CpuSample>,
    containers: HashMap<String, CpuSample>,
    summary: Option<Value>,
}

/// Samples the node's and its containers' usage and keeps the latest summary.
pub struct Sampler {
    cri: Cri,
    node_name: String,
    state: Mutex<State>,
}

impl Sampler {
    /// A sampler for node `node_name` on runtime `cri`.
    #[must_use]
    pub fn new(cri: Cri, node_name: &str) -> Arc<Self> {
        Arc::new(Sampler { cri, node_name: node_name.to_string(), state: Mutex::new(State::default()) })
    }

    /// Samples every `interval` until the process ends.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        loop {
            if let Err(e) = self.sample().await {
                tracing::debug!(error = %e, "cannot sample resource usage");
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// The latest summary, once two samples exist.
    #[must_use]
    pub fn summary(&self) -> Option<Value> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).summary.clone()
    }

    async fn sample(&self) -> Result<(), NodeError> {
        let at = now_nanos();
        let proc_stat = tokio::fs::read_to_string("/proc/stat")
            .await
            .map_err(|e| NodeError::io("read", std::path::Path::new("/proc/stat"), e))?;
        let meminfo = tokio::fs::read_to_string("/proc/meminfo")
            .await
            .map_err(|e| NodeError::io("read", std::path::Path::new("/proc/meminfo"), e))?;
        let node_cpu = parse_proc_stat(&proc_stat).map(|used| CpuSample { at, used });
        let memory = parse_meminfo(&meminfo);
        let mut runtime = self.cri.runtime.clone();
        let sandboxes = runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    state: Some(cri::PodSandboxStateValue { state: cri::PodSandboxState::SandboxReady.into() }),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        let container_stats =
            runtime.list_container_stats(cri::ListContainerStatsRequest { filter: None }).await?.into_inner();
        let running: std::collections::HashSet<String> = runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    state: Some(cri::ContainerStateValue { state: cri::ContainerState::ContainerRunning.into() }),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect();

        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut containers = HashMap::new();
        let mut by_pod: HashMap<String, Vec<Value>> = HashMap::new();
        for stat in container_stats.stats {
            let Some(attributes) = stat.attributes else { continue };
            if !running.contains(&attributes.id) {
                continue;
            }
            let Some(uid) = attributes.labels.get(POD_UID_LABEL) else { continue };
            let name = attributes.metadata.map(|m| m.name).unwrap_or_default();
            let mut entry = json!({"name": name});
            if let Some(cpu) = stat.cpu.filter(|c| c.usage_core_nano_seconds.is_some()) {
                let sample = CpuSample {
                    at: if cpu.timestamp > 0 { cpu.timestamp } else { at },
                    used: cpu.usage_core_nano_seconds.map_or(0, |v| v.value),
                };
                let rate = state.containers.get(&attributes.id).and_then(|earlier| sample.nano_cores_since(*earlier));
                entry["cpu"] = cpu_json(sample, rate);
                containers.insert(attributes.id.clone(), sample);
            }
            if let Some(memory) = stat.memory {
                entry["memory"] = json!({
                    "time": timestamp(if memory.timestamp > 0 { memory.timestamp } else { at }),
                    "workingSetBytes": memory.working_set_bytes.map_or(0, |v| v.value),
                    "usageBytes": memory.usage_bytes.map_or(0, |v| v.value),
                    "rssBytes": memory.rss_bytes.map_or(0, |v| v.value),
                });
            }
            by_pod.entry(uid.clone()).or_default().push(entry);
        }
        let pods: Vec<Value> = sandboxes
            .iter()
            .filter_map(|sandbox| {
                let uid = sandbox.labels.get(POD_UID_LABEL)?;
                let containers = by_pod.remove(uid).unwrap_or_default();
                Some(pod_summary(sandbox, uid, &containers, at))
            })
            .collect();
        let node_rate = node_cpu.zip(state.node_cpu).and_then(|(now, earlier)| now.nano_cores_since(earlier));
        let mut node = json!({"nodeName": self.node_name});
        if let Some(sample) = node_cpu {
            node["cpu"] = cpu_json(sample, node_rate);
        }
        if let Some(memory) = memory {
            let used = memory.total.saturating_sub(memory.available);
            node["memory"] = json!({
                "time": timestamp(at), "availableBytes": memory.available,
                "usageBytes": used, "workingSetBytes": used,
            });
        }
        let ready = state.node_cpu.is_some();
        state.node_cpu = node_cpu;
        state.containers = containers;
        if ready {
            state.summary = Some(json!({"node": node, "pods": pods}));
        }
        Ok(())
    }
}

/// One pod of the summary: its containers and their sums.
fn pod_summary(sandbox: &cri::PodSandbox, uid: &str, containers: &[Value], at: i64) -> Value {
    let label = |key: &str| sandbox.labels.get(key).cloned().unwrap_or_default();
    let sum = |block: &str, field: &str| -> Option<u64> {
        let values: Vec<u64> = containers.iter().filter_map(|c| c[block][field].as_u64()).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let mut pod = json!({
        "podRef": {"name": label(POD_NAME_LABEL), "namespace": label(POD_NAMESPACE_LABEL), "uid": uid},
        "containers": containers,
    });
    if let Some(used) = sum("cpu", "usageCoreNanoSeconds") {
        pod["cpu"] = json!({"time": timestamp(at), "usageCoreNanoSeconds": used});
        // A pod's rate exists only when every container has one (a new container has none yet).
        if containers.iter().all(|c| c["cpu"]["usageNanoCores"].is_u64()) {
            pod["cpu"]["usageNanoCores"] = json!(sum("cpu", "usageNanoCores").unwrap_or(0));
        }
    }
    if let Some(working_set) = sum("memory", "workingSetBytes") {
        pod["memory"] = json!({
            "time": timestamp(at), "workingSetBytes": working_set,
            "usageBytes": sum("memory", "usageBytes").unwrap_or(0),
        });
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_time_leaves_out_idle_and_iowait() {
        let text = "cpu  100 5 50 1000 40 3 2 1 0 0\ncpu0 50 2 25 500 20 1 1 0 0 0\n";
        // user + nice + system + irq + softirq + steal = 161 ticks of 10 ms.
        assert_eq!(parse_proc_stat(text), Some(161 * NANOS_PER_TICK));
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
    }

    #[test]
    fn meminfo_gives_total_and_available_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(parse_meminfo(text), Some(NodeMemory { total: 24_000_000 * 1024, available: 12_000_000 * 1024 }));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn cpu_rate_is_time_used_over_time_passed() {
        let earlier = CpuSample { at: 1_000_000_000, used: 2_000_000_000 };
        // Half a CPU over two seconds.
        let now = CpuSample { at: 3_000_000_000, used: 3_000_000_000 };
        assert_eq!(now.nano_cores_since(earlier), Some(500_000_000));
        // A restarted container's counter goes back to zero: no rate rather than a huge one.
        assert_eq!(CpuSample { at: 4_000_000_000, used: 10 }.nano_cores_since(earlier), None);
        assert_eq!(earlier.nano_cores_since(earlier), None);
    }

    #[test]
    fn pod_rate_needs_every_container_rate() {
        let sandbox = cri::PodSandbox {
            labels: HashMap::from([
                (POD_NAME_LABEL.to_string(), "web".to_string()),
                (POD_NAMESPACE_LABEL.to_string(), "default".to_string()),
            ]),
            ..Default::default()
        };
        let both = vec![
            json!({"name": "a", "cpu": {"usageCoreNanoSeconds": 10, "usageNanoCores": 100},
                   "memory": {"workingSetBytes": 1000, "usageBytes": 2000}}),
            json!({"name": "b", "cpu": {"usageCoreNanoSeconds": 5, "usageNanoCores": 50},
                   "memory": {"workingSetBytes": 24, "usageBytes": 48}}),
        ];
        let pod = pod_summary(&sandbox, "u1", &both, 0);
        assert_eq!(pod["podRef"], json!({"name": "web", "namespace": "default", "uid": "u1"}));
        assert_eq!(pod["cpu"]["usageNanoCores"], 150);
        assert_eq!(pod["cpu"]["usageCoreNanoSeconds"], 15);
        assert_eq!(pod["memory"]["workingSetBytes"], 1024);
        let one_new = vec![
            json!({"name": "a", "cpu": {"usageCoreNanoSeconds": 10, "usageNanoCores": 100}}),
            json!({"name": "b", "cpu": {"usageCoreNanoSeconds": 5}}),
        ];
        let pod = pod_summary(&sandbox, "u1", &one_new, 0);
        assert!(pod["cpu"].get("usageNanoCores").is_none(), "{pod}");
    }
}
