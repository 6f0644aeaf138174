//! Built-in admission policy `PodSecurity`: the Pod Security Standards, levels `baseline` and
//! `restricted`, chosen per namespace by the labels `pod-security.kubernetes.io/enforce`
//! (violations are refused), `…/warn` (violations are warnings to the client) and `…/audit`
//! (violations are audit annotations). `privileged`, or no label, checks nothing.

use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, cluster};
use serde_json::Value;

/// Checks pods against the namespace's Pod Security level.
pub struct PodSecurity;

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(text: Option<&str>) -> Level {
        match text {
            Some("baseline") => Level::Baseline,
            Some("restricted") => Level::Restricted,
            _ => Level::Privileged,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// Capabilities baseline allows adding.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Volume types restricted allows.
const RESTRICTED_VOLUMES: &[&str] =
    &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|list| pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array))
        .flatten()
        .collect()
}

fn name_of(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or_default()
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// Everything `pod` does that `level` forbids, one line per check (upstream's wording).
fn violations(pod: &Value, level: Level) -> Vec<String> {
    let mut found = Vec::new();
    if level == Level::Privileged {
        return found;
    }
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod.pointer(&format!("/spec/{field}")) == Some(&Value::Bool(true)) {
            found.push(format!("host namespaces ({field}=true)"));
        }
    }
    let all = containers(pod);
    for c in &all {
        if c.pointer("/securityContext/privileged") == Some(&Value::Bool(true)) {
            found.push(format!("privileged (container {:?} must not set securityContext.privileged=true)", name_of(c)));
        }
        let added = strings(c.pointer("/securityContext/capabilities/add"));
        let allowed: &[&str] = if level == Level::Restricted { &["NET_BIND_SERVICE"] } else { BASELINE_CAPABILITIES };
        let extra: Vec<&str> = added.iter().copied().filter(|cap| !allowed.contains(cap)).collect();
        if !extra.is_empty() {
            found.push(format!(
                "unrestricted capabilities (container {:?} must not include {:?} in securityContext.capabilities.add)",
                name_of(c),
                extra
            ));
        }
        let host_ports = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) != 0);
        if host_ports {
            found.push(format!("hostPort (container {:?} uses hostPorts)", name_of(c)));
        }
        if c.pointer("/securityContext/seccompProfile/type").and_then(Value::as_str) == Some("Unconfined") {
            found.push(format!(
                "seccompProfile (container {:?} must not set securityContext.seccompProfile.type to \"Unconfined\")",
                name_of(c)
            ));
        }
    }
    baseline_context_violations(pod, &all, &mut found);
    for volume in pod.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
        if volume.get("hostPath").is_some() {
            found.push(format!(
                "hostPath volumes (volume {:?})",
                volume.get("name").and_then(Value::as_str).unwrap_or_default()
            ));
        }
    }
    if level == Level::Restricted {
        restricted_violations(pod, &all, &mut found);
    }
    found
}

/// Sysctls baseline allows (upstream's safe set).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// `SELinux` types baseline allows (besides none).
const SELINUX_TYPES: &[&str] = &["container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

/// Baseline's checks of security contexts beyond privilege and capabilities: Windows
/// `hostProcess`, `procMount`, `AppArmor`, `SELinux`, pod-level seccomp and sysctls.
fn baseline_context_violations(pod: &Value, all: &[&Value], found: &mut Vec<String>) {
    let host_process = |context: Option<&Value>| {
        context.and_then(|c| c.pointer("/windowsOptions/hostProcess")) == Some(&Value::Bool(true))
    };
    if host_process(pod.pointer("/spec/securityContext")) || all.iter().any(|c| host_process(c.get("securityContext")))
    {
        found.push(
            "hostProcess (pod or containers must not set securityContext.windowsOptions.hostProcess=true)".into(),
        );
    }
    let bad_apparmor = |context: Option<&Value>| {
        context.and_then(|c| c.pointer("/appArmorProfile/type")).and_then(Value::as_str) == Some("Unconfined")
    };
    let annotated = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .any(|(k, v)| k.starts_with("container.apparmor.security.beta.kubernetes.io/") && v == "unconfined");
    if annotated
        || bad_apparmor(pod.pointer("/spec/securityContext"))
        || all.iter().any(|c| bad_apparmor(c.get("securityContext")))
    {
        found.push("appArmorProfile (pod or containers must not set the AppArmor profile to \"Unconfined\")".into());
    }
    let bad_selinux = |context: Option<&Value>| {
        let Some(options) = context.and_then(|c| c.get("seLinuxOptions")) else { return false };
        let kind = options.get("type").and_then(Value::as_str).unwrap_or_default();
        (!kind.is_empty() && !SELINUX_TYPES.contains(&kind))
            || options.get("user").and_then(Value::as_str).is_some_and(|u| !u.is_empty())
            || options.get("role").and_then(Value::as_str).is_some_and(|r| !r.is_empty())
    };
    if bad_selinux(pod.pointer("/spec/securityContext")) || all.iter().any(|c| bad_selinux(c.get("securityContext"))) {
        found.push("seLinuxOptions (pod or containers must not set a custom SELinux user, role or type)".into());
    }
    for c in all {
        let mount = c.pointer("/securityContext/procMount").and_then(Value::as_str).unwrap_or("Default");
        if mount != "Default" {
            found.push(format!(
                "procMount (container {:?} must not set securityContext.procMount to {mount:?})",
                name_of(c)
            ));
        }
    }
    if pod.pointer("/spec/securityContext/seccompProfile/type").and_then(Value::as_str) == Some("Unconfined") {
        found.push("seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")".into());
    }
    let unsafe_sysctls: Vec<&str> = pod
        .pointer("/spec/securityContext/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|name| !SAFE_SYSCTLS.contains(name))
        .collect();
    if !unsafe_sysctls.is_empty() {
        found.push(format!("forbidden sysctls ({})", unsafe_sysctls.join(", ")));
    }
}

fn restricted_violations(pod: &Value, all: &[&Value], found: &mut Vec<String>) {
    if pod.pointer("/spec/securityContext/runAsUser").and_then(Value::as_i64) == Some(0) {
        found.push("runAsUser=0 (pod must not set runAsUser=0)".into());
    }
    for volume in pod.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
        let kind =
            volume.as_object().and_then(|m| m.keys().find(|k| *k != "name")).map(String::as_str).unwrap_or_default();
        if !RESTRICTED_VOLUMES.contains(&kind) && kind != "hostPath" {
            found.push(format!(
                "restricted volume types (volume {:?} uses restricted volume type {kind:?})",
                volume.get("name").and_then(Value::as_str).unwrap_or_default()
            ));
        }
    }
    let pod_non_root = pod.pointer("/spec/securityContext/runAsNonRoot") == Some(&Value::Bool(true));
    let pod_seccomp = pod.pointer("/spec/securityContext/seccompProfile/type").and_then(Value::as_str);
    for c in all {
        let name = name_of(c);
        if c.pointer("/securityContext/allowPrivilegeEscalation") != Some(&Value::Bool(false)) {
            found.push(format!("allowPrivilegeEscalation != false (container {name:?} must set securityContext.allowPrivilegeEscalation=false)"));
        }
        let drops = strings(c.pointer("/securityContext/capabilities/drop"));
        if !drops.contains(&"ALL") {
            found.push(format!(
                "unrestricted capabilities (container {name:?} must set securityContext.capabilities.drop=[\"ALL\"])"
            ));
        }
        let non_root = c.pointer("/securityContext/runAsNonRoot").and_then(Value::as_bool).unwrap_or(pod_non_root);
        if !non_root {
            found.push(format!("runAsNonRoot != true (container {name:?} must set securityContext.runAsNonRoot=true)"));
        }
        if c.pointer("/securityContext/runAsUser").and_then(Value::as_i64) == Some(0) {
            found.push(format!("runAsUser=0 (container {name:?} must not set runAsUser=0)"));
        }
        let seccomp = c.pointer("/securityContext/seccompProfile/type").and_then(Value::as_str).or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            found.push(format!("seccompProfile (container {name:?} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"));
        }
    }
}

impl AdmissionPolicy for PodSecurity {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn validate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        let Some(namespace) = request.namespace.as_deref() else { return AdmissionResponse::allow() };
        if request.sub_resource.is_some() {
            return AdmissionResponse::allow();
        }
        let pod: Value = match request.object() {
            Ok(Some(pod)) => pod,
            Ok(None) => return AdmissionResponse::allow(),
            Err(e) => return AdmissionResponse::deny(format!("the pod is not valid JSON: {e}")).with_code(400),
        };
        let labels = match cluster::get("", "v1", "namespaces", None, namespace) {
            Ok(ns) => ns.and_then(|ns| ns.pointer("/metadata/labels").cloned()).unwrap_or(Value::Null),
            Err(e) => {
                return AdmissionResponse::deny(format!("cannot read namespace {namespace}: {e:?}")).with_code(500);
            }
        };
        let level =
            |mode: &str| Level::parse(labels.get(format!("pod-security.kubernetes.io/{mode}")).and_then(Value::as_str));
        let describe = |level: Level| {
            let found = violations(&pod, level);
            (!found.is_empty()).then(|| format!("PodSecurity \"{}:latest\": {}", level.name(), found.join(", ")))
        };
        if let Some(message) = describe(level("enforce")) {
            return AdmissionResponse::deny(format!("pods {:?} is forbidden: violates {message}", request.name));
        }
        let mut response = AdmissionResponse::allow();
        if let Some(message) = describe(level("warn")) {
            response = response.with_warning(format!("would violate {message}"));
        }
        if let Some(message) = describe(level("audit")) {
            response = response.with_audit_annotation("audit-violations", format!("would violate {message}"));
        }
        response
    }
}

capstan_plugin_sdk::admission_policy!(PodSecurity);

#[cfg(test)]
mod tests {
    use super::{Level, violations};
    use serde_json::json;

    #[test]
    fn levels_refuse_what_they_should() {
        let privileged = json!({"spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}});
        let plain = json!({"spec": {"containers": [{"name": "c"}]}});
        let hardened = json!({"spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
        let cases = [
            (&privileged, Level::Privileged, 0),
            (&privileged, Level::Baseline, 1),
            (&plain, Level::Baseline, 0),
            (&plain, Level::Restricted, 4),
            (&hardened, Level::Restricted, 0),
        ];
        for (pod, level, count) in cases {
            assert_eq!(violations(pod, level).len(), count, "{level:?} {pod} {:?}", violations(pod, level));
        }
    }

    #[test]
    fn baseline_checks_security_contexts() {
        // Each from the Pod Security Standards' baseline table.
        let cases = [
            (json!({"containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]}), "procMount"),
            (
                json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
                    "containers": [{"name": "c"}]}),
                "forbidden sysctls (kernel.msgmax)",
            ),
            (
                json!({"containers": [{"name": "c", "securityContext": {"seLinuxOptions": {"type": "spc_t"}}}]}),
                "seLinuxOptions",
            ),
            (
                json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}, "containers": [{"name": "c"}]}),
                "appArmorProfile",
            ),
            (
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [{"name": "c"}]}),
                "seccompProfile (pod",
            ),
            (
                json!({"containers": [{"name": "c", "securityContext": {"windowsOptions": {"hostProcess": true}}}]}),
                "hostProcess",
            ),
        ];
        for (spec, expected) in cases {
            let found = violations(&json!({"spec": spec}), Level::Baseline);
            assert!(found.len() == 1 && found[0].starts_with(expected), "{spec}: {found:?}");
        }
        let fine = json!({"spec": {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}],
            "seLinuxOptions": {"type": "container_t", "level": "s0:c1"}},
            "containers": [{"name": "c", "securityContext": {"procMount": "Default"}}]}});
        assert!(violations(&fine, Level::Baseline).is_empty(), "{:?}", violations(&fine, Level::Baseline));
    }
}
