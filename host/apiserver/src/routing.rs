//! From an HTTP request to what it asks for: the resource, namespace, name, subresource and verb,
//! and the options in its query string.

use std::collections::HashMap;

use axum::http::Method;
use capstan_api::{Registry, ResourceInfo};

use crate::discovery::{self, VirtualResource};
use crate::status::{ApiError, ApiResult};

/// What a request path names.
pub enum Target<'r> {
    /// `/api/v1` or `/apis/<group>/<version>`: the resource list.
    GroupVersion(String, String),
    /// `/apis/<group>`.
    Group(String),
    /// A stored resource, collection or object.
    Resource(ResourcePath<'r>),
    /// A create-only review.
    Virtual(&'static VirtualResource),
}

/// A request under a stored resource.
#[derive(Clone, Debug)]
pub struct ResourcePath<'r> {
    /// The resource.
    pub info: &'r ResourceInfo,
    /// The namespace from the path.
    pub namespace: Option<String>,
    /// The object name, for object requests.
    pub name: Option<String>,
    /// The subresource (`status`, `scale`, …).
    pub subresource: Option<String>,
}

/// The Kubernetes verb of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Read one object.
    Get,
    /// Read a collection.
    List,
    /// Stream changes.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// The verb's name in Kubernetes terms (metrics, discovery).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// Parses a request path against the registry.
pub fn parse<'r>(registry: &'r Registry, path: &str) -> ApiResult<Target<'r>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group] => return Ok(Target::Group((*group).to_string())),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::NoRoute),
    };
    if rest.is_empty() {
        return Ok(Target::GroupVersion(group.to_string(), version.to_string()));
    }
    if let [plural] = rest
        && let Some(v) =
            discovery::VIRTUAL.iter().find(|v| v.gvk.group == group && v.gvk.version == version && v.plural == *plural)
    {
        return Ok(Target::Virtual(v));
    }
    // `namespaces/<ns>/<resource>/...` addresses a namespaced resource; anything else is a
    // cluster-scoped resource, the namespaces themselves, or a namespaced resource across all
    // namespaces.
    if let ["namespaces", namespace, plural, tail @ ..] = rest
        && let Some(info) = registry.lookup(group, version, plural).filter(|i| i.namespaced)
    {
        return resource_path(info, Some((*namespace).to_string()), tail);
    }
    let (plural, tail) = (rest[0], &rest[1..]);
    let info = registry.lookup(group, version, plural).ok_or(ApiError::NoRoute)?;
    resource_path(info, None, tail)
}

fn resource_path<'r>(info: &'r ResourceInfo, namespace: Option<String>, tail: &[&str]) -> ApiResult<Target<'r>> {
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some((*name).to_string()), None),
        [name, sub] => (Some((*name).to_string()), Some((*sub).to_string())),
        _ => return Err(ApiError::NoRoute),
    };
    if let Some(sub) = &subresource
        && info.subresource(sub).is_none()
    {
        return Err(ApiError::NoRoute);
    }
    Ok(Target::Resource(ResourcePath { info, namespace, name, subresource }))
}

/// The verb of a request on a resource path.
pub fn verb(method: &Method, path: &ResourcePath<'_>, query: &Query) -> ApiResult<Verb> {
    let watching = query.flag("watch");
    Ok(match (method.as_str(), path.name.is_some()) {
        ("GET", _) if watching => Verb::Watch,
        ("GET", true) => Verb::Get,
        ("GET", false) => Verb::List,
        ("POST", false) => Verb::Create,
        ("POST", true) if path.subresource.is_some() => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return Err(ApiError::MethodNotAllowed),
    })
}

/// The query string's parameters.
#[derive(Clone, Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
        Ok(Query(pairs.into_iter().collect()))
    }

    /// A parameter's value.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A boolean parameter (`watch=1`, `watch=true`).
    #[must_use]
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("1" | "true" | "True"))
    }

    /// A numeric parameter; 400 when it is not a number.
    pub fn number(&self, name: &str) -> ApiResult<Option<i64>> {
        self.get(name)
            .map(|v| v.parse().map_err(|_| ApiError::BadRequest(format!("{name}: {v:?} is not a number"))))
            .transpose()
    }

    /// `dryRun=All`.
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => {
                Err(ApiError::BadRequest(format!("unsupported dryRun value {other:?}: only \"All\" is allowed")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_resources_namespaces_and_subresources() {
        let registry = Registry::builtin();
        let cases = [
            ("/api/v1/namespaces/default/pods", "pods", Some("default"), None, None),
            ("/api/v1/namespaces/default/pods/web/status", "pods", Some("default"), Some("web"), Some("status")),
            ("/api/v1/pods", "pods", None, None, None),
            ("/api/v1/namespaces/default", "namespaces", None, Some("default"), None),
            ("/api/v1/namespaces", "namespaces", None, None, None),
            ("/api/v1/nodes/n1", "nodes", None, Some("n1"), None),
            ("/apis/apps/v1/namespaces/x/deployments/web/scale", "deployments", Some("x"), Some("web"), Some("scale")),
        ];
        for (path, plural, namespace, name, sub) in cases {
            let Ok(Target::Resource(p)) = parse(&registry, path) else { panic!("{path} did not parse to a resource") };
            assert_eq!(
                (p.info.plural, p.namespace.as_deref(), p.name.as_deref(), p.subresource.as_deref()),
                (plural, namespace, name, sub),
                "{path}"
            );
        }
        for unknown in ["/api/v1/widgets", "/apis/apps/v1/namespaces/x/deployments/web/exec", "/healthz/x"] {
            assert!(parse(&registry, unknown).is_err(), "{unknown} must not resolve");
        }
    }
}
