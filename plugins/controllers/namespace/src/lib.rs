//! The namespace controller as a Capstan component, as kube-controller-manager's runs it: when
//! a namespace is deleted (the API server marks it `Terminating` and gives it the `kubernetes`
//! finalizer), the controller discovers every namespaced resource the server serves (built-in
//! kinds and custom resources), deletes every object of them in the namespace — pods
//! gracefully, through the API like any client — and reports what remains in the namespace's
//! conditions. Once nothing remains it removes its finalizer (`namespaces/<name>/finalize`) and
//! deletes the namespace again, which the API server then removes.
//!
//! Start with [`reconcile`].

use std::collections::BTreeMap;

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, ApiResource, Controller, DeleteOptions, GroupVersionKind, ListOptions, ObjectKey, PatchType,
    ReconcileResult, Watches, kinds, meta,
};
use serde_json::{Value, json};

/// The finalizer the API server gives a deleted namespace and this controller removes.
pub const FINALIZER: &str = "kubernetes";

/// How long to wait before looking again at content that is still going away (pods in their
/// grace period, objects with finalizers).
const RECHECK_SECONDS: i64 = 2;

/// The namespace controller.
pub struct NamespaceController;

impl Controller for NamespaceController {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn watches(&self) -> Watches {
        Watches { primary: kinds::namespace(), owned: Vec::new(), others: Vec::new() }
    }

    fn map_to_keys(&self, _api: &dyn Api, _kind: &GroupVersionKind, _object: &Value) -> Vec<ObjectKey> {
        Vec::new()
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        capstan_plugin_sdk::controller::outcome(reconcile(api, key))
    }
}

capstan_plugin_sdk::controller!(NamespaceController);

/// What deleting a namespace's content found.
#[derive(Debug, Default, PartialEq)]
pub struct Content {
    /// Objects still present per resource (`pods.`, `deployments.apps`).
    pub remaining: BTreeMap<String, usize>,
    /// Finalizers that hold remaining objects, with how many objects each holds.
    pub finalizers: BTreeMap<String, usize>,
    /// Failures to list or delete.
    pub errors: Vec<String>,
}

/// Whether a discovered resource holds namespace content the controller deletes.
fn deletable(resource: &ApiResource) -> bool {
    let has = |verb: &str| resource.verbs.iter().any(|v| v == verb);
    resource.namespaced && has("list") && has("delete")
}

/// Deletes every object in `namespace` and reports what is still there.
pub fn delete_content(api: &dyn Api, resources: &[ApiResource], namespace: &str) -> Content {
    let mut content = Content::default();
    for resource in resources.iter().filter(|r| deletable(r)) {
        let name = format!("{}.{}", resource.plural, resource.kind.group);
        let options = ListOptions::in_namespace(Some(namespace));
        let objects = match api.list(&resource.kind, &options) {
            Ok(objects) => objects,
            Err(e) => {
                content.errors.push(format!("listing {name}: {}", e.message));
                continue;
            }
        };
        for object in objects.iter().filter(|o| !meta::is_terminating(o)) {
            match api.delete(&resource.kind, &ObjectKey::of(object), &DeleteOptions::plain()) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => content.errors.push(format!("deleting {name} {}: {}", meta::name(object), e.message)),
            }
        }
        // What the deletes left: objects in their grace period or held by finalizers.
        let left = if objects.is_empty() { Vec::new() } else { api.list(&resource.kind, &options).unwrap_or_default() };
        if !left.is_empty() {
            content.remaining.insert(name, left.len());
            for finalizer in left.iter().flat_map(|o| meta::finalizers(o)) {
                *content.finalizers.entry(finalizer.to_owned()).or_default() += 1;
            }
        }
    }
    content
}

/// The namespace deletion conditions upstream reports, for `content`.
fn conditions(namespace: &Value, content: &Content, discovery_error: Option<&str>, now: i64) -> Vec<Value> {
    let mut conditions: Vec<Value> =
        namespace.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut set = |kind: &str, failed: bool, reason: &str, message: &str| {
        meta::set_condition_without_probe_time(
            &mut conditions,
            kind,
            if failed { "True" } else { "False" },
            reason,
            message,
            now,
        );
    };
    match discovery_error {
        Some(e) => set("NamespaceDeletionDiscoveryFailure", true, "DiscoveryFailed", &format!("Discovery failed: {e}")),
        None => set(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
    }
    set(
        "NamespaceDeletionGroupVersionParsingFailure",
        false,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    );
    if content.errors.is_empty() {
        set(
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        );
    } else {
        set(
            "NamespaceDeletionContentFailure",
            true,
            "ContentDeletionFailed",
            &format!(
                "Failed to delete all resource types, {} remaining: {}",
                content.errors.len(),
                content.errors.join(", ")
            ),
        );
    }
    if content.remaining.is_empty() {
        set("NamespaceContentRemaining", false, "ContentRemoved", "All content successfully removed");
    } else {
        let list: Vec<String> =
            content.remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
        set(
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            &format!("Some resources are remaining: {}", list.join(", ")),
        );
    }
    if content.finalizers.is_empty() {
        set(
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished",
        );
    } else {
        let list: Vec<String> =
            content.finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
        set(
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            &format!("Some content in the namespace has finalizers remaining: {}", list.join(", ")),
        );
    }
    conditions
}

/// Reconciles one namespace; `Some(seconds)` asks to look again while content is going away.
pub fn reconcile(api: &dyn Api, key: &ObjectKey) -> Result<Option<i64>, ApiError> {
    let Some(namespace) = api.get(&kinds::namespace(), key)? else { return Ok(None) };
    if !meta::is_terminating(&namespace) {
        return Ok(None);
    }
    let name = meta::name(&namespace).to_owned();
    let spec_finalizers: Vec<String> = namespace
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if spec_finalizers.iter().any(|f| f == FINALIZER) {
        let (content, discovery_error) = match api.discover() {
            Ok(resources) => (delete_content(api, &resources, &name), None),
            Err(e) => (Content::default(), Some(e.message)),
        };
        let conditions = conditions(&namespace, &content, discovery_error.as_deref(), meta::now_seconds());
        if namespace.pointer("/status/conditions") != Some(&json!(conditions)) {
            let mut updated = namespace.clone();
            updated["status"]["conditions"] = json!(conditions);
            match api.update_status(&kinds::namespace(), &updated) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) if e.is_conflict() => return Ok(Some(0)),
                Err(e) => return Err(e),
            }
        }
        if let Some(error) = discovery_error {
            return Err(ApiError { code: 503, reason: "ServiceUnavailable".into(), message: error });
        }
        if !content.remaining.is_empty() || !content.errors.is_empty() {
            return Ok(Some(RECHECK_SECONDS));
        }
        let rest: Vec<&String> = spec_finalizers.iter().filter(|f| *f != FINALIZER).collect();
        let patch = json!({"spec": {"finalizers": rest}});
        match api.patch(&kinds::namespace(), key, PatchType::Merge, &patch, Some("finalize")) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        }
        if !rest.is_empty() {
            // Another finalizer's owner finishes the namespace.
            return Ok(None);
        }
    } else if !spec_finalizers.is_empty() {
        return Ok(None);
    }
    // No spec finalizer left: deleting again removes the namespace (once its metadata
    // finalizers, if any, are gone too).
    match api.delete(&kinds::namespace(), key, &DeleteOptions::plain()) {
        Ok(()) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
