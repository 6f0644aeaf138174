//! Subresources with their own shapes: `scale` (autoscaling/v1 `Scale`), `pods/binding` and
//! `pods/eviction`.

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::admission::{self, Attributes, Operation};
use crate::body;
use crate::handlers::{Call, json_response};
use crate::meta;
use crate::objects::{self, ObjectRef};
use crate::routing::ResourcePath;
use crate::status::{ApiError, ApiResult, Cause};

/// How many times a subresource write retries on a conflicting concurrent write.
const RETRIES: usize = 8;

/// The `Scale` view of a workload.
fn scale_of(object: &Value) -> Value {
    let metadata = object.get("metadata").cloned().unwrap_or_default();
    let pick = |field: &str| metadata.get(field).cloned().unwrap_or(Value::Null);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_text(object.pointer("/spec/selector")),
        },
    })
}

/// A `LabelSelector` object in the query syntax (`app=web,tier in (a,b)`).
fn selector_text(selector: Option<&Value>) -> String {
    let Some(selector) = selector else { return String::new() };
    // ReplicationControllers use a plain map as their selector.
    let labels = selector
        .get("matchLabels")
        .or_else(|| selector.as_object().map(|_| selector).filter(|s| s.get("matchExpressions").is_none()));
    let mut parts: Vec<String> = labels
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}"))).collect())
        .unwrap_or_default();
    for expression in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> =
            expression["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        parts.push(match expression["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

fn target_of<'a>(path: &'a ResourcePath<'_>) -> ApiResult<ObjectRef<'a>> {
    let name = path.name.clone().ok_or(ApiError::MethodNotAllowed)?;
    Ok(ObjectRef { info: path.info, namespace: path.namespace.clone(), name })
}

/// `GET`, `PUT` or `PATCH` on `…/scale`.
pub async fn scale(call: &Call<'_>, method: &axum::http::Method) -> ApiResult<Response> {
    let Call { server, path, query, headers, body, .. } = *call;
    let target = target_of(path)?;
    if method == axum::http::Method::GET {
        let object = server.objects.get(&target).await?;
        return Ok(json_response(StatusCode::OK, &scale_of(&object), &[]));
    }
    let dry_run = query.dry_run()?;
    for _ in 0..RETRIES {
        let (object, revision) =
            server.objects.get_kv(&target).await?.ok_or_else(|| ApiError::NotFound(target.target()))?;
        let current = scale_of(&object);
        let wanted = if method == axum::http::Method::PUT {
            body::decode_object(headers, body)?
        } else {
            let patch_body: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("the patch is not valid JSON: {e}")))?;
            match body::content_type(headers).as_str() {
                "application/json-patch+json" => capstan_api::patch::json_patch(&current, &patch_body),
                _ => capstan_api::patch::json_merge(&current, &patch_body),
            }
            .map_err(|e| ApiError::BadRequest(e.to_string()))?
        };
        if let Some(rv) = wanted.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && objects::parse_resource_version(rv)? != revision
        {
            return Err(ApiError::Conflict(
                target.target(),
                "the object has been modified; please apply your changes to the latest version and try again".into(),
            ));
        }
        let attributes =
            Attributes { kind: Some(("autoscaling", "v1", "Scale")), ..Attributes::new(Operation::Update, &target) };
        let wanted = admission::admit(call, &attributes, wanted, Some(&current)).await?;
        let replicas = wanted.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::Invalid(
                objects::target(path.info, &target.name),
                vec![Cause {
                    reason: "FieldValueInvalid",
                    field: "spec.replicas".into(),
                    message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                }],
            ));
        }
        let mut updated = object.clone();
        meta::metadata_mut(&mut updated).remove("resourceVersion");
        updated["spec"]["replicas"] = json!(replicas);
        if updated.pointer("/spec/replicas") != object.pointer("/spec/replicas") {
            let generation = object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            meta::metadata_mut(&mut updated).insert("generation".into(), json!(generation + 1));
        }
        let updated =
            crate::handlers::track_fields(call, &crate::handlers::field_manager(call), Some(&object), &updated);
        if dry_run {
            return Ok(json_response(StatusCode::OK, &scale_of(&updated), &[]));
        }
        match server.objects.replace(&target, revision, &updated).await {
            Ok(written) => return Ok(json_response(StatusCode::OK, &scale_of(&written), &[])),
            Err(ApiError::Conflict(..)) => {}
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::Conflict(target.target(), "too many concurrent writes; try again".into()))
}

/// `POST pods/<name>/binding`: assigns a pending pod to a node, once.
pub async fn bind(call: &Call<'_>) -> ApiResult<Response> {
    let Call { server, path, headers, body, .. } = *call;
    let target = target_of(path)?;
    let binding = body::decode_object(headers, body)?;
    let attributes = Attributes { kind: Some(("", "v1", "Binding")), ..Attributes::new(Operation::Create, &target) };
    let binding = admission::admit(call, &attributes, binding, None).await?;
    let node = binding.pointer("/target/name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::Invalid(
            objects::target(path.info, &target.name),
            vec![Cause { reason: "FieldValueRequired", field: "target.name".into(), message: "Required value".into() }],
        )
    })?;
    for attempt in 0..RETRIES {
        // The first attempt starts from the watch cache; a refusal or a conflict reads the store.
        let fresh = attempt > 0;
        let (pod, revision) =
            server.get_for_update(&target, fresh).await?.ok_or_else(|| ApiError::NotFound(target.target()))?;
        if let Some(bound) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            if !fresh {
                continue;
            }
            return Err(ApiError::Conflict(
                target.target(),
                format!("pod {} is already assigned to node \"{bound}\"", target.name),
            ));
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            if !fresh {
                continue;
            }
            return Err(ApiError::Conflict(
                target.target(),
                "pod is being deleted, cannot be assigned to a host".into(),
            ));
        }
        if pod.pointer("/spec/schedulingGates").and_then(Value::as_array).is_some_and(|gates| !gates.is_empty()) {
            if !fresh {
                continue;
            }
            return Err(ApiError::Conflict(
                target.target(),
                format!("pod {} has non-empty .spec.schedulingGates", target.name),
            ));
        }
        let mut bound = pod;
        meta::metadata_mut(&mut bound).remove("resourceVersion");
        bound["spec"]["nodeName"] = json!(node);
        set_condition(
            &mut bound,
            json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now()}),
        );
        if call.query.dry_run()? {
            return Ok(json_response(StatusCode::CREATED, &success(), &[]));
        }
        match server.objects.replace_for_revision(&target, revision, &bound).await {
            Ok(_) => return Ok(json_response(StatusCode::CREATED, &success(), &[])),
            Err(ApiError::Conflict(..)) => {}
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::Conflict(target.target(), "too many concurrent writes; try again".into()))
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

fn set_condition(pod: &mut Value, condition: Value) {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let conditions = &mut pod["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    if let Some(list) = conditions.as_array_mut() {
        list.retain(|c| c["type"] != condition["type"]);
        list.push(condition);
    }
}

/// `POST pods/<name>/eviction`: deletes the pod unless a `PodDisruptionBudget` forbids it.
pub async fn evict(call: &Call<'_>) -> ApiResult<Response> {
    let Call { server, path, headers, body, .. } = *call;
    let target = target_of(path)?;
    let eviction = body::decode_object(headers, body)?;
    let attributes =
        Attributes { kind: Some(("policy", "v1", "Eviction")), ..Attributes::new(Operation::Create, &target) };
    admission::admit(call, &attributes, eviction, None).await?;
    let pod = server.objects.get(&target).await?;
    let Some(pdbs) = call.catalog.registry.lookup("policy", "v1", "poddisruptionbudgets") else {
        return Err(ApiError::Internal("poddisruptionbudgets are not registered".into()));
    };
    let listed = server.objects.list(pdbs, target.namespace.as_deref(), None, None, None).await?;
    for pdb in listed.items {
        let Some(selector) = pdb.pointer("/spec/selector") else { continue };
        let Ok(selector) = capstan_api::selector::LabelSelector::from_json(selector) else { continue };
        if selector.is_empty() || !selector.matches_object(&pod) {
            continue;
        }
        let allowed = pdb.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
        if allowed < 1 {
            return Err(ApiError::TooManyRequests(format!(
                "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {} needs more healthy pods",
                meta::meta_str(&pdb, "name").unwrap_or_default()
            )));
        }
        let pdb_target = ObjectRef {
            info: pdbs,
            namespace: target.namespace.clone(),
            name: meta::meta_str(&pdb, "name").unwrap_or_default().to_string(),
        };
        let expected = meta::meta_str(&pdb, "resourceVersion")
            .map(objects::parse_resource_version)
            .transpose()?
            .unwrap_or_default();
        let mut spent = pdb.clone();
        meta::metadata_mut(&mut spent).remove("resourceVersion");
        spent["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !call.query.dry_run()? {
            server.objects.replace(&pdb_target, expected, &spent).await?;
        }
    }
    let pod_path = path_without_subresource(path);
    // The eviction's own query carries `dryRun`, which the deletion honours.
    let delete = Call { path: &pod_path, body: &Bytes::new(), ..*call };
    crate::handlers::delete(&delete).await?;
    Ok(json_response(StatusCode::CREATED, &success(), &[]))
}

/// `POST serviceaccounts/<name>/token` (a TokenRequest): a signed token for the account,
/// valid for `spec.expirationSeconds` (3600 by default, at least 600) for `spec.audiences`
/// (the API server by default), bound to `spec.boundObjectRef` when given.
pub async fn create_token(call: &Call<'_>) -> ApiResult<Response> {
    let Call { server, path, headers, body, .. } = *call;
    let target = target_of(path)?;
    let mut request = body::decode_object(headers, body)?;
    let account = server.objects.get(&target).await?;
    let namespace = target.namespace.clone().unwrap_or_default();
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
    if expiration < 600 {
        let about = crate::status::Target {
            resource: "serviceaccounts".into(),
            group: "authentication.k8s.io".into(),
            kind: "TokenRequest".into(),
            name: target.name.clone(),
        };
        let cause = crate::status::Cause {
            reason: "FieldValueInvalid",
            field: "spec.expirationSeconds".into(),
            message: format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        };
        return Err(ApiError::Invalid(about, vec![cause]));
    }
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| vec![crate::sa_tokens::ISSUER.to_owned()]);
    let bound = match spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        Some(reference) => Some(bound_object(server, &namespace, reference).await?),
        None => None,
    };
    let attributes = Attributes {
        kind: Some(("authentication.k8s.io", "v1", "TokenRequest")),
        ..Attributes::new(Operation::Create, &target)
    };
    request = admission::admit(call, &attributes, request, None).await?;
    let issued_at = k8s_openapi::jiff::Timestamp::now().as_second();
    let token = server.service_account_tokens.issue(&crate::sa_tokens::TokenClaims {
        namespace: &namespace,
        name: &target.name,
        uid: meta::meta_str(&account, "uid").unwrap_or_default(),
        audiences: &audiences,
        issued_at,
        expiration_seconds: expiration,
        bound: bound.as_ref(),
    });
    let expires = k8s_openapi::jiff::Timestamp::from_second(issued_at + expiration)
        .map_err(|e| ApiError::Internal(format!("cannot compute the token's expiry: {e}")))?;
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({"name": target.name, "namespace": namespace, "creationTimestamp": meta::now()});
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(expiration);
    request["status"] = json!({"token": token, "expirationTimestamp": expires.to_string()});
    Ok(json_response(StatusCode::CREATED, &request, &[]))
}

/// The object a token is bound to, which must exist (its UID, when given, must match).
async fn bound_object(
    server: &crate::server::ApiServer,
    namespace: &str,
    reference: &Value,
) -> ApiResult<crate::sa_tokens::BoundObject> {
    let text = |field: &str| reference.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (kind, name, uid) = (text("kind"), text("name"), text("uid"));
    let plural = match kind.as_str() {
        "Pod" => "pods",
        "Secret" => "secrets",
        other => {
            return Err(ApiError::BadRequest(format!(
                "cannot bind a token to a {other:?}: only Pod and Secret are supported"
            )));
        }
    };
    let info = crate::server::ApiServer::resource("", "v1", plural)?;
    let target = ObjectRef { info, namespace: Some(namespace.to_owned()), name: name.clone() };
    let object = server.objects.get(&target).await?;
    let actual = meta::meta_str(&object, "uid").unwrap_or_default().to_owned();
    if !uid.is_empty() && uid != actual {
        return Err(ApiError::BadRequest(format!(
            "the UID in the bound object reference ({uid}) does not match the {kind}'s ({actual})"
        )));
    }
    Ok(crate::sa_tokens::BoundObject { kind, name, uid: actual })
}

fn path_without_subresource<'a>(path: &ResourcePath<'a>) -> ResourcePath<'a> {
    ResourcePath { subresource: None, ..path.clone() }
}
