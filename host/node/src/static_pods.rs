//! Static pods: pod manifests (YAML or JSON) in a directory on the node. Each one appears in the
//! API as a mirror pod named `<name>-<node>` (annotated `kubernetes.io/config.mirror`) bound to
//! this node, and the pod workers run it like any other pod. A mirror pod deleted through the API
//! comes back; removing the file deletes it.
//!
//! Unlike kubelet, the pod runs through its mirror, so a static pod needs the API server.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use sha2::Digest as _;

/// The annotation marking a mirror pod (its value: the manifest's hash).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The annotation naming the manifest's source.
const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// How often the directory is read.
const INTERVAL: Duration = Duration::from_secs(2);

fn read_manifests(dir: &Path) -> HashMap<PathBuf, (Pod, String)> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        let wanted = path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if !wanted {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        match serde_yaml::from_str::<Pod>(&text) {
            Ok(pod) => {
                let hash = format!("{:x}", sha2::Sha256::digest(text.as_bytes()));
                out.insert(path, (pod, hash[..16].to_string()));
            }
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "ignoring a static pod manifest"),
        }
    }
    out
}

/// The mirror pod for a manifest.
fn mirror(mut pod: Pod, node: &str, hash: &str) -> Pod {
    let name = format!("{}-{node}", pod.metadata.name.clone().unwrap_or_default());
    pod.metadata.name = Some(name);
    pod.metadata.namespace = Some(pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()));
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(MIRROR_ANNOTATION.into(), hash.into());
    annotations.insert(SOURCE_ANNOTATION.into(), "file".into());
    pod.metadata.resource_version = None;
    pod.metadata.uid = None;
    pod.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
    pod.status = None;
    pod
}

/// Keeps one mirror pod per manifest in `dir`, forever.
pub async fn run(client: kube::Client, node: String, dir: PathBuf) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the static pod directory");
    }
    loop {
        let manifests = read_manifests(&dir);
        let all: Api<Pod> = Api::all(client.clone());
        let listed = all.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await;
        let existing: Vec<Pod> = match listed {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|p| p.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list mirror pods");
                tokio::time::sleep(INTERVAL).await;
                continue;
            }
        };
        let mut wanted = Vec::new();
        for (pod, hash) in manifests.into_values() {
            let pod = mirror(pod, &node, &hash);
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            wanted.push((namespace.clone(), name.clone()));
            let present = existing.iter().any(|p| {
                p.metadata.name.as_deref() == Some(name.as_str())
                    && p.metadata.namespace.as_deref() == Some(namespace.as_str())
            });
            if !present {
                let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                match pods.create(&PostParams::default(), &pod).await {
                    Ok(_) => tracing::info!(%namespace, %name, "created a mirror pod"),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => tracing::warn!(%namespace, %name, error = %e, "cannot create a mirror pod"),
                }
            }
        }
        for pod in &existing {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_none() && !wanted.contains(&(namespace.clone(), name.clone())) {
                let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                if let Err(e) = pods.delete(&name, &DeleteParams::default()).await {
                    tracing::warn!(%namespace, %name, error = %e, "cannot delete a mirror pod");
                }
            }
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
