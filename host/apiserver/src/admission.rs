//! The admission chain: every create, update and delete (Plugins themselves excepted) passes the
//! loaded admission policies whose rules match it — mutating ones first, in order, their patches
//! applied; then, after schema validation, the validating ones. A denial or a failed policy (under
//! `failurePolicy: Fail`) refuses the request; warnings go back to the client.

use std::sync::Arc;

use capstan_api::ResourceInfo;
use capstan_api::plugin::FailurePolicy;
pub(crate) use capstan_wasm::admission::Operation;
use capstan_wasm::admission::{AdmissionRequest, AdmissionResponse, GroupVersionKind, GroupVersionResource, UserInfo};
use serde_json::Value;

use crate::handlers::Call;
use crate::meta;
use crate::plugins::LoadedPolicy;
use crate::status::{ApiError, ApiResult};

/// What is being admitted, besides the objects.
pub(crate) struct Attributes<'a> {
    /// The write.
    pub operation: Operation,
    /// The resource written.
    pub info: &'a ResourceInfo,
    /// The object's namespace.
    pub namespace: Option<&'a str>,
    /// The object's name.
    pub name: &'a str,
}

impl Attributes<'_> {
    fn operation_name(&self) -> &'static str {
        match self.operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// Whether writes to `info` pass admission: everything but the policies themselves, so a broken
/// policy can always be fixed or removed.
fn admitted(info: &ResourceInfo) -> bool {
    !(info.gvk.group == "capstan.io" && info.plural == "plugins")
}

/// Runs the matching mutating policies over `object`; returns the object (patched or not) and
/// whether any policy changed it.
pub(crate) async fn mutate(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    object: Value,
    old: Option<&Value>,
) -> ApiResult<(Value, bool)> {
    let mut object = object;
    let mut changed = false;
    if !admitted(attributes.info) {
        return Ok((object, false));
    }
    for policy in matching(call, attributes, true) {
        let request = request(call, attributes, Some(&object), old)?;
        let Some(response) = run(call, &policy, request, true).await? else { continue };
        if let Some(patch) = response.patch.as_deref().filter(|p| !p.trim().is_empty()) {
            let patch: Value = serde_json::from_str(patch).map_err(|e| {
                ApiError::Internal(format!("admission plugin {:?} returned a patch that is not JSON: {e}", policy.name))
            })?;
            let patched = capstan_api::patch::json_patch(&object, &patch).map_err(|e| {
                ApiError::Internal(format!(
                    "admission plugin {:?} returned a patch that does not apply: {e}",
                    policy.name
                ))
            })?;
            changed |= patched != object;
            object = patched;
        }
    }
    Ok((object, changed))
}

/// Runs the matching mutating policies on a deletion: they may deny it; there is no object to
/// patch.
pub(crate) async fn mutate_on_delete(call: &Call<'_>, attributes: &Attributes<'_>, old: &Value) -> ApiResult<()> {
    if !admitted(attributes.info) {
        return Ok(());
    }
    for policy in matching(call, attributes, true) {
        let request = request(call, attributes, None, Some(old))?;
        run(call, &policy, request, true).await?;
    }
    Ok(())
}

/// Runs the matching validating policies; `object` is absent on delete.
pub(crate) async fn validate(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<()> {
    if !admitted(attributes.info) {
        return Ok(());
    }
    for policy in matching(call, attributes, false) {
        let request = request(call, attributes, object, old)?;
        run(call, &policy, request, false).await?;
    }
    Ok(())
}

fn matching(call: &Call<'_>, attributes: &Attributes<'_>, mutating: bool) -> Vec<Arc<LoadedPolicy>> {
    let gvk = &attributes.info.gvk;
    let subresource = call.path.subresource.as_deref();
    call.server
        .plugins
        .admission_policies(mutating)
        .into_iter()
        .filter(|policy| {
            policy.settings.rules.iter().any(|rule| {
                rule.matches(attributes.operation_name(), gvk.group, gvk.version, attributes.info.plural, subresource)
            })
        })
        .collect()
}

fn request(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<AdmissionRequest> {
    let info = attributes.info;
    let user_info = call.identity.map_or_else(
        || UserInfo { username: String::new(), uid: String::new(), groups: Vec::new(), extra: Vec::new() },
        |identity| UserInfo {
            username: identity.user.clone(),
            uid: String::new(),
            groups: identity.groups.clone(),
            extra: Vec::new(),
        },
    );
    Ok(AdmissionRequest {
        uid: meta::new_uid(),
        kind: GroupVersionKind {
            group: info.gvk.group.to_string(),
            version: info.gvk.version.to_string(),
            kind: info.gvk.kind.to_string(),
        },
        resource: GroupVersionResource {
            group: info.gvk.group.to_string(),
            version: info.gvk.version.to_string(),
            resource: info.plural.to_string(),
        },
        sub_resource: call.path.subresource.clone(),
        request_kind: None,
        request_resource: None,
        name: attributes.name.to_string(),
        namespace: attributes.namespace.map(str::to_string),
        operation: attributes.operation,
        user_info,
        object: object.map(Value::to_string),
        old_object: old.map(Value::to_string),
        dry_run: call.query.dry_run()?,
        options: None,
    })
}

/// Calls one policy off the async runtime and applies its answer: `Some` response when it
/// allowed the request, `None` when it failed and its failure policy ignores that, an error
/// when it denied the request or failed under `Fail`.
async fn run(
    call: &Call<'_>,
    policy: &Arc<LoadedPolicy>,
    request: AdmissionRequest,
    mutating: bool,
) -> ApiResult<Option<AdmissionResponse>> {
    let handle = policy.handle.clone();
    let answer = tokio::task::spawn_blocking(move || {
        if mutating { handle.mutate(&request) } else { handle.validate(&request) }.map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("the call did not finish: {e}")));
    let response = match answer {
        Ok(response) => response,
        Err(message) => {
            return match policy.settings.failure_policy {
                FailurePolicy::Fail => {
                    Err(ApiError::Internal(format!("failed calling admission plugin {:?}: {message}", policy.name)))
                }
                FailurePolicy::Ignore => {
                    tracing::warn!(plugin = %policy.name, error = %message, "admission plugin failed; ignored");
                    Ok(None)
                }
            };
        }
    };
    call.add_warnings(&response.warnings);
    if !response.allowed {
        let mut message = format!("admission webhook {:?} denied the request", policy.name);
        if let Some(reason) = response.message.as_deref().filter(|m| !m.is_empty()) {
            message.push_str(": ");
            message.push_str(reason);
        } else {
            message.push_str(" without explanation");
        }
        return Err(ApiError::Denied(response.code.unwrap_or(403), message));
    }
    Ok(Some(response))
}
