//! Translating a pod spec into CRI configs: environment (values, ConfigMap/Secret references,
//! downward API), resources (cgroup v1 limits), volumes (directories on the node) and mounts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_cri::v1 as cri;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, Pod, ProjectedVolumeSource, Secret, ServiceAccount,
    ServiceAccountTokenProjection, Volume,
};
use kube::Api;
use kube::api::PostParams;

use crate::NodeError;

/// Parses a CPU quantity into millicores (`500m`, `1`, `0.25`).
#[must_use]
pub fn millicores(quantity: &str) -> Option<i64> {
    if let Some(milli) = quantity.strip_suffix('m') {
        return milli.parse().ok();
    }
    quantity.parse::<f64>().ok().map(|cores| (cores * 1000.0).round() as i64)
}

/// Parses a memory quantity into bytes (`64Mi`, `1G`, `1000`).
#[must_use]
pub fn bytes(quantity: &str) -> Option<i64> {
    const SUFFIXES: [(&str, i64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = quantity.strip_suffix(suffix) {
            #[allow(clippy::cast_precision_loss, reason = "quantities are far below 2^52 bytes")]
            return number.parse::<f64>().ok().map(|n| (n * factor as f64) as i64);
        }
    }
    quantity.parse::<f64>().ok().map(|n| n as i64)
}

/// The cgroup v1 limits for a container's resources.
#[must_use]
pub fn resources(container: &Container) -> cri::LinuxContainerResources {
    let mut out = cri::LinuxContainerResources { cpu_period: 100_000, cpu_shares: 2, ..Default::default() };
    let Some(resources) = &container.resources else { return out };
    let get = |map: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, key: &str| {
        map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone())
    };
    let cpu_request = get(&resources.requests, "cpu").or_else(|| get(&resources.limits, "cpu"));
    if let Some(milli) = cpu_request.as_deref().and_then(millicores) {
        out.cpu_shares = (milli * 1024 / 1000).max(2);
    }
    if let Some(milli) = get(&resources.limits, "cpu").as_deref().and_then(millicores) {
        out.cpu_quota = (milli * 100_000 / 1000).max(1000);
    }
    if let Some(limit) = get(&resources.limits, "memory").as_deref().and_then(bytes) {
        out.memory_limit_in_bytes = limit;
    }
    out
}

/// The value of a downward-API field path.
fn field(pod: &Pod, path: &str, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .and_then(|key| map.and_then(|m| m.get(key).cloned()))
    };
    Some(match path {
        "metadata.name" => meta.name.clone()?,
        "metadata.namespace" => meta.namespace.clone()?,
        "metadata.uid" => meta.uid.clone()?,
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?.service_account_name.clone().unwrap_or_else(|| "default".into()),
        "status.hostIP" => host_ip.to_string(),
        "status.podIP" => status?.pod_ip.clone().unwrap_or_default(),
        "metadata.labels" => render_map(meta.labels.as_ref()),
        "metadata.annotations" => render_map(meta.annotations.as_ref()),
        _ => {
            return keyed("metadata.labels['", meta.labels.as_ref())
                .or_else(|| keyed("metadata.annotations['", meta.annotations.as_ref()));
        }
    })
}

fn render_map(map: Option<&BTreeMap<String, String>>) -> String {
    use std::fmt::Write as _;
    map.into_iter().flatten().fold(String::new(), |mut out, (k, v)| {
        let _ = writeln!(out, "{k}=\"{v}\"");
        out
    })
}

/// The service-account tokens a pod's projected volumes hold, by file path, kept between syncs
/// so a token is requested again only when it is due for rotation.
#[derive(Default)]
pub struct Tokens(HashMap<String, IssuedToken>);

struct IssuedToken {
    /// What the token was requested for (account, audiences, expiry): a change asks for a new one.
    request: String,
    token: Vec<u8>,
    refresh_at: SystemTime,
}

/// When a token issued at `issued` for `expiration_seconds` is renewed: as the kubelet does, once
/// 80 % of its lifetime has passed or it is older than 24 hours.
#[must_use]
pub fn token_refresh_at(issued: SystemTime, expiration_seconds: i64) -> SystemTime {
    let lifetime = Duration::from_secs(u64::try_from(expiration_seconds).unwrap_or(0));
    issued + (lifetime * 4 / 5).min(Duration::from_hours(24))
}

impl Tokens {
    /// The earliest time a held token is due for renewal.
    #[must_use]
    pub fn next_refresh(&self) -> Option<SystemTime> {
        self.0.values().map(|t| t.refresh_at).min()
    }
}

/// Reads `ConfigMaps` and Secrets of one namespace, each once per sync.
pub struct Sources {
    configmaps: Api<ConfigMap>,
    secrets: Api<Secret>,
    service_accounts: Api<ServiceAccount>,
    configmap_cache: HashMap<String, Option<ConfigMap>>,
    secret_cache: HashMap<String, Option<Secret>>,
    tokens: Tokens,
}

impl Sources {
    /// Sources in `namespace`, reusing the service-account tokens in `tokens` while they are
    /// fresh.
    #[must_use]
    pub fn new(client: &kube::Client, namespace: &str, tokens: Tokens) -> Self {
        Sources {
            configmaps: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client.clone(), namespace),
            service_accounts: Api::namespaced(client.clone(), namespace),
            configmap_cache: HashMap::new(),
            secret_cache: HashMap::new(),
            tokens,
        }
    }

    /// The tokens, to keep for the next sync.
    #[must_use]
    pub fn into_tokens(self) -> Tokens {
        self.tokens
    }

    async fn configmap(&mut self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, NodeError> {
        if !self.configmap_cache.contains_key(name) {
            let found = self.configmaps.get_opt(name).await?;
            self.configmap_cache.insert(name.to_string(), found);
        }
        Ok(self.configmap_cache.get(name).and_then(Option::as_ref).map(|cm| {
            let mut data: BTreeMap<String, Vec<u8>> =
                cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
            data.extend(cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
            data
        }))
    }

    async fn secret(&mut self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, NodeError> {
        if !self.secret_cache.contains_key(name) {
            let found = self.secrets.get_opt(name).await?;
            self.secret_cache.insert(name.to_string(), found);
        }
        Ok(self.secret_cache.get(name).and_then(Option::as_ref).map(|secret| {
            let mut data: BTreeMap<String, Vec<u8>> =
                secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
            data.extend(secret.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
            data
        }))
    }

    /// A token for the pod's service account, bound to the pod (a `TokenRequest`, as the kubelet
    /// makes for projected `serviceAccountToken` sources): the one held for `path` while it is
    /// fresh, else a new one.
    async fn token(
        &mut self,
        pod: &Pod,
        path: &str,
        projection: &ServiceAccountTokenProjection,
    ) -> Result<Vec<u8>, NodeError> {
        let account =
            pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
        let expiration = projection.expiration_seconds.unwrap_or(3600);
        let key = format!("{account}/{:?}/{expiration}", projection.audience);
        if let Some(held) = self.tokens.0.get(path).filter(|t| t.request == key && SystemTime::now() < t.refresh_at) {
            return Ok(held.token.clone());
        }
        let issued_at = SystemTime::now();
        let token = self.request_token(pod, &account, projection, expiration).await?;
        let refresh_at = token_refresh_at(issued_at, expiration);
        self.tokens.0.insert(path.to_string(), IssuedToken { request: key, token: token.clone(), refresh_at });
        Ok(token)
    }

    async fn request_token(
        &self,
        pod: &Pod,
        account: &str,
        projection: &ServiceAccountTokenProjection,
        expiration: i64,
    ) -> Result<Vec<u8>, NodeError> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: projection.audience.iter().filter(|a| !a.is_empty()).cloned().collect(),
                expiration_seconds: Some(expiration),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let issued = self.service_accounts.create_token_request(account, &PostParams::default(), &request).await?;
        let token = issued.status.map(|s| s.token).unwrap_or_default();
        if token.is_empty() {
            return Err(NodeError::Spec(format!("the API server issued no token for service account {account:?}")));
        }
        Ok(token.into_bytes())
    }

    async fn lookup(&mut self, secret: bool, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, NodeError> {
        if secret { self.secret(name).await } else { self.configmap(name).await }
    }
}

/// Expands `$(VAR)` references in `text` with `env` (unknown references stay as written).
#[must_use]
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        match env.iter().rev().find(|(k, _)| k == name) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[start..start + 3 + end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The container's environment, in order (`envFrom` first, then `env`).
pub async fn environment(
    pod: &Pod,
    container: &Container,
    sources: &mut Sources,
    host_ip: &str,
) -> Result<Vec<(String, String)>, NodeError> {
    let mut env: Vec<(String, String)> = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (secret, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(cm), _) => (false, cm.name.clone(), cm.optional.unwrap_or(false)),
            (None, Some(s)) => (true, s.name.clone(), s.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        match sources.lookup(secret, &name).await? {
            Some(data) => {
                env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), String::from_utf8_lossy(&v).into())));
            }
            None if optional => {}
            None => return Err(NodeError::Spec(format!("{} \"{name}\" not found", kind_name(secret)))),
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            expand(value, &env)
        } else if let Some(from) = &var.value_from {
            if let Some(field_ref) = &from.field_ref {
                field(pod, &field_ref.field_path, host_ip).unwrap_or_default()
            } else if let Some(resource) = &from.resource_field_ref {
                resource_value(container, &resource.resource)
            } else {
                let (secret, name, key, optional) = match (&from.config_map_key_ref, &from.secret_key_ref) {
                    (Some(r), _) => (false, r.name.clone(), r.key.clone(), r.optional.unwrap_or(false)),
                    (None, Some(r)) => (true, r.name.clone(), r.key.clone(), r.optional.unwrap_or(false)),
                    (None, None) => continue,
                };
                let data = sources.lookup(secret, &name).await?;
                match data.as_ref().and_then(|d| d.get(&key)) {
                    Some(value) => String::from_utf8_lossy(value).into_owned(),
                    None if optional => continue,
                    None if data.is_none() => {
                        return Err(NodeError::Spec(format!("{} \"{name}\" not found", kind_name(secret))));
                    }
                    None => {
                        return Err(NodeError::Spec(format!(
                            "couldn't find key {key} in {} {}/{name}",
                            kind_name(secret),
                            pod.metadata.namespace.as_deref().unwrap_or_default()
                        )));
                    }
                }
            }
        } else {
            String::new()
        };
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

fn kind_name(secret: bool) -> &'static str {
    if secret { "secret" } else { "configmap" }
}

fn resource_value(container: &Container, resource: &str) -> String {
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let quantity = limits.and_then(|l| l.get(resource.trim_start_matches("limits.")));
    match (resource, quantity) {
        ("limits.cpu", Some(q)) => millicores(&q.0).map_or_else(String::new, |m| ((m + 999) / 1000).to_string()),
        ("limits.memory", Some(q)) => bytes(&q.0).map_or_else(String::new, |b| b.to_string()),
        _ => String::new(),
    }
}

/// Writes `files` into `dir` atomically enough for readers: each file is written then renamed.
fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>, mode: u32) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).map_err(|e| NodeError::io("create", dir, e))?;
    for (name, data) in files {
        if name.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(NodeError::Spec(format!("volume file path {name:?} is not allowed")));
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| NodeError::io("create", parent, e))?;
        }
        let unchanged = std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode)
            && std::fs::read(&path).is_ok_and(|current| current == *data);
        if unchanged {
            continue;
        }
        let temporary = path.with_extension("capstan-tmp");
        std::fs::write(&temporary, data).map_err(|e| NodeError::io("write", &temporary, e))?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
            .map_err(|e| NodeError::io("chmod", &temporary, e))?;
        std::fs::rename(&temporary, &path).map_err(|e| NodeError::io("rename", &path, e))?;
    }
    remove_stale(dir, dir, files)
}

/// Removes the files under `dir` (within the volume at `base`) that are no longer among `files`,
/// e.g. a key deleted from a ConfigMap, and directories left empty.
fn remove_stale(dir: &Path, base: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<(), NodeError> {
    let entries = std::fs::read_dir(dir).map_err(|e| NodeError::io("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| NodeError::io("read", dir, e))?;
        let path = entry.path();
        if path.is_dir() {
            remove_stale(&path, base, files)?;
            // Fails, harmlessly, while the directory still holds files.
            let _ = std::fs::remove_dir(&path);
            continue;
        }
        let relative = path.strip_prefix(base).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        if !files.contains_key(&relative) {
            std::fs::remove_file(&path).map_err(|e| NodeError::io("remove", &path, e))?;
        }
    }
    Ok(())
}

/// Selects `items` (key → path) from `data`, or all keys when none are listed.
fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        Some(items) if !items.is_empty() => {
            items.iter().filter_map(|item| data.get(&item.key).map(|v| (item.path.clone(), v.clone()))).collect()
        }
        _ => data,
    }
}

/// Prepares every volume of the pod under `dir` and returns the host path of each by name.
pub async fn volumes(
    pod: &Pod,
    dir: &Path,
    sources: &mut Sources,
    host_ip: &str,
) -> Result<HashMap<String, PathBuf>, NodeError> {
    let mut out = HashMap::new();
    let spec_volumes: &[Volume] = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default();
    for volume in spec_volumes {
        let path = dir.join(&volume.name);
        if let Some(host) = &volume.host_path {
            let host_path = PathBuf::from(&host.path);
            if matches!(host.type_.as_deref(), Some("DirectoryOrCreate")) {
                std::fs::create_dir_all(&host_path).map_err(|e| NodeError::io("create", &host_path, e))?;
            }
            out.insert(volume.name.clone(), host_path);
            continue;
        }
        if let Some(cm) = &volume.config_map {
            let mode = cm.default_mode.map_or(0o644, |m| m as u32);
            match sources.configmap(&cm.name).await? {
                Some(data) => write_files(&path, &select(data, cm.items.as_ref()), mode)?,
                None if cm.optional.unwrap_or(false) => write_files(&path, &BTreeMap::new(), mode)?,
                None => return Err(NodeError::Spec(format!("configmap \"{}\" not found", cm.name))),
            }
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            let mode = secret.default_mode.map_or(0o644, |m| m as u32);
            match sources.secret(&name).await? {
                Some(data) => write_files(&path, &select(data, secret.items.as_ref()), mode)?,
                None if secret.optional.unwrap_or(false) => write_files(&path, &BTreeMap::new(), mode)?,
                None => return Err(NodeError::Spec(format!("secret \"{name}\" not found"))),
            }
        } else if let Some(downward) = &volume.downward_api {
            write_files(&path, &downward_files(pod, downward.items.as_deref(), host_ip), 0o644)?;
        } else if let Some(projected) = &volume.projected {
            let mode = projected.default_mode.map_or(0o644, |m| m as u32);
            write_files(&path, &projected_files(pod, &volume.name, projected, sources, host_ip).await?, mode)?;
        } else {
            // emptyDir, and volume kinds this node does not fill: an empty directory.
            std::fs::create_dir_all(&path).map_err(|e| NodeError::io("create", &path, e))?;
        }
        out.insert(volume.name.clone(), path);
    }
    Ok(out)
}

/// The files of downward API `items`.
fn downward_files(pod: &Pod, items: Option<&[DownwardAPIVolumeFile]>, host_ip: &str) -> BTreeMap<String, Vec<u8>> {
    items
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let value = field(pod, &item.field_ref.as_ref()?.field_path, host_ip)?;
            Some((item.path.clone(), value.into_bytes()))
        })
        .collect()
}

/// The files of a projected volume: its ConfigMap, Secret, downward API and service-account
/// token sources, merged.
async fn projected_files(
    pod: &Pod,
    volume: &str,
    projected: &ProjectedVolumeSource,
    sources: &mut Sources,
    host_ip: &str,
) -> Result<BTreeMap<String, Vec<u8>>, NodeError> {
    let mut files = BTreeMap::new();
    for source in projected.sources.iter().flatten() {
        let keyed = match (&source.config_map, &source.secret) {
            (Some(cm), _) => Some((false, &cm.name, cm.items.as_ref(), cm.optional)),
            (None, Some(secret)) => Some((true, &secret.name, secret.items.as_ref(), secret.optional)),
            (None, None) => None,
        };
        if let Some((secret, name, items, optional)) = keyed {
            match sources.lookup(secret, name).await? {
                Some(data) => files.extend(select(data, items)),
                None if optional.unwrap_or(false) => {}
                None => {
                    let kind = if secret { "secret" } else { "configmap" };
                    return Err(NodeError::Spec(format!("{kind} \"{name}\" not found")));
                }
            }
        } else if let Some(downward) = &source.downward_api {
            files.extend(downward_files(pod, downward.items.as_deref(), host_ip));
        } else if let Some(token) = &source.service_account_token {
            let held_as = format!("{volume}/{}", token.path);
            files.insert(token.path.clone(), sources.token(pod, &held_as, token).await?);
        }
    }
    Ok(files)
}

/// The CRI mounts of a container.
pub fn mounts<S: std::hash::BuildHasher>(
    container: &Container,
    volumes: &HashMap<String, PathBuf, S>,
) -> Result<Vec<cri::Mount>, NodeError> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| {
            let host = volumes
                .get(&mount.name)
                .ok_or_else(|| NodeError::Spec(format!("volumeMount {:?} names no volume of the pod", mount.name)))?;
            let host = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => host.join(sub),
                None => host.clone(),
            };
            Ok(cri::Mount {
                container_path: mount.mount_path.clone(),
                host_path: host.display().to_string(),
                readonly: mount.read_only.unwrap_or(false),
                ..Default::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_80_percent_of_their_life_or_after_a_day() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(token_refresh_at(issued, 3600), issued + Duration::from_mins(48));
        assert_eq!(token_refresh_at(issued, 600), issued + Duration::from_mins(8));
        // A week-long token is still renewed daily.
        assert_eq!(token_refresh_at(issued, 7 * 86_400), issued + Duration::from_hours(24));
    }

    #[test]
    fn rewriting_a_volume_updates_changed_files_and_removes_dropped_keys() {
        let temp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = temp.path().join("volume");
        let files = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
            pairs.iter().map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec())).collect()
        };
        write_files(&dir, &files(&[("colour", "blue"), ("nested/size", "large"), ("keep", "same")]), 0o644)
            .unwrap_or_else(|e| panic!("{e}"));
        write_files(&dir, &files(&[("colour", "green"), ("keep", "same")]), 0o644).unwrap_or_else(|e| panic!("{e}"));
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        assert_eq!(read("colour").as_deref(), Some("green"));
        assert_eq!(read("keep").as_deref(), Some("same"));
        assert_eq!(read("nested/size"), None, "a dropped key stays in the volume");
        assert!(!dir.join("nested").exists(), "an emptied directory stays in the volume");
    }
}
