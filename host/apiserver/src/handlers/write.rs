//! Writes: create, update, patch (JSON, merge, strategic) and server-side apply, with the
//! metadata rules, defaulting, validation and field tracking every write shares.

#[allow(clippy::wildcard_imports, reason = "the verb modules share the parent's imports")]
use super::*;
use crate::admission;

/// How many times a write without a resourceVersion precondition is retried on conflict.
const WRITE_RETRIES: usize = 8;

/// `fieldValidation`: what to do with fields the schema does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

fn field_validation(query: &Query) -> ApiResult<FieldValidation> {
    match query.get("fieldValidation") {
        None | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::BadRequest(format!(
            "fieldValidation {other:?} is invalid: must be one of Strict, Warn, Ignore"
        ))),
    }
}

/// Checks `apiVersion`/`kind`, decodes through the typed model, and applies `fieldValidation`.
/// Returns the normalised object and the warnings to send.
fn normalise(info: &ResourceInfo, mut object: Value, query: &Query) -> ApiResult<(Value, Vec<String>)> {
    let want_version = info.group_version();
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or(info.gvk.kind).to_string();
    let version = object.get("apiVersion").and_then(Value::as_str).unwrap_or(&want_version).to_string();
    if kind != info.gvk.kind || version != want_version {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({version}) and kind ({kind}) do not match the endpoint ({want_version}, {})",
            info.gvk.kind
        )));
    }
    object["kind"] = json!(info.gvk.kind);
    object["apiVersion"] = json!(want_version);
    let decoded = decode(info, object)?;
    let unknown: Vec<String> = decoded.unknown_fields.iter().map(|f| format!("unknown field {f:?}")).collect();
    match field_validation(query)? {
        FieldValidation::Strict if !unknown.is_empty() => {
            Err(ApiError::BadRequest(format!("strict decoding error: {}", unknown.join(", "))))
        }
        FieldValidation::Ignore => Ok((decoded.object, Vec::new())),
        _ => Ok((decoded.object, unknown)),
    }
}

/// Decodes an object through its kind's model: the typed model for built-ins (400 on a wrong
/// type, as kube-apiserver's decoder), the CRD schema for custom resources (422 with causes).
fn decode(info: &ResourceInfo, object: Value) -> ApiResult<capstan_api::registry::Decoded> {
    match &info.model {
        capstan_api::Model::Typed { decode, .. } => {
            decode(object).map_err(|e| ApiError::BadRequest(format!("{} in body: {e}", info.gvk.kind)))
        }
        capstan_api::Model::Custom(custom) => {
            let name = meta::meta_str(&object, "name").unwrap_or_default().to_string();
            let checked = capstan_api::custom::validate(&custom.schema, object);
            if !checked.errors.is_empty() {
                let causes = checked
                    .errors
                    .into_iter()
                    .map(|e| Cause { reason: e.reason, field: e.field, message: e.message })
                    .collect();
                return Err(ApiError::Invalid(objects::target(info, &name), causes));
            }
            Ok(capstan_api::registry::Decoded { object: checked.object, unknown_fields: checked.unknown_fields })
        }
    }
}

/// Decodes an object a mutating policy patched, as the client's object was: a policy cannot
/// smuggle in fields or types the schema refuses.
fn renormalise(call: &Call<'_>, object: Value) -> ApiResult<Value> {
    let (object, warnings) = normalise(call.path.info, object, call.query)?;
    call.add_warnings(&warnings);
    Ok(object)
}

/// `POST` a new object.
pub async fn create(call: &Call<'_>) -> ApiResult<Response> {
    let Call { path, query, headers, body, .. } = *call;
    if path.name.is_some() {
        return Err(ApiError::NotImplemented(format!(
            "{}/{} is served by a later part of Capstan",
            path.info.plural,
            path.subresource.as_deref().unwrap_or_default()
        )));
    }
    let (object, warnings) = normalise(path.info, body::decode_object(headers, body)?, query)?;
    let manager = field_manager(call);
    let created = insert_new(call, object, |object| Ok(track_fields(call, &manager, None, object))).await?;
    Ok(json_response(StatusCode::CREATED, &created, &warnings))
}

/// Stores a new object: namespace and name rules, server-owned fields, defaults, validation,
/// then `finish` (field tracking), honouring dryRun.
async fn insert_new(
    call: &Call<'_>,
    mut object: Value,
    finish: impl FnOnce(&Value) -> ApiResult<Value>,
) -> ApiResult<Value> {
    let Call { server, path, query, .. } = *call;
    let info = path.info;
    let namespace = resolve_namespace(path, &object)?;
    let generated = meta::meta_str(&object, "name").is_none_or(str::is_empty);
    let name = assign_name(info, &mut object)?;
    if let Some(ns) = &namespace {
        meta::metadata_mut(&mut object).insert("namespace".into(), json!(ns));
        server.check_namespace_accepts(ns).await?;
    }
    prepare_for_create(info, &mut object);
    server.defaults.apply(info, &mut object);
    let attributes = admission::Attributes {
        operation: admission::Operation::Create,
        info,
        namespace: namespace.as_deref(),
        name: &name,
        kind: None,
    };
    let (mutated, changed) = admission::mutate(call, &attributes, object, None).await?;
    object = mutated;
    if changed {
        object = renormalise(call, object)?;
        server.defaults.apply(info, &mut object);
    }
    let causes = crate::validation::validate(info, &object, None);
    if !causes.is_empty() {
        return Err(ApiError::Invalid(objects::target(info, &name), causes));
    }
    admission::validate(call, &attributes, Some(&object), None).await?;
    let mut object = finish(&object)?;
    let mut target = ObjectRef { info, namespace, name };
    if query.dry_run()? {
        return Ok(object);
    }
    // A generated name that happens to be taken is generated again, a few times, as
    // kube-apiserver does (five random characters collide within a few thousand objects).
    let mut attempts = 1;
    loop {
        match server.objects.create(&target, &object).await {
            Err(ApiError::AlreadyExists(_)) if generated && attempts < GENERATE_NAME_ATTEMPTS => {
                attempts += 1;
                let prefix = meta::meta_str(&object, "generateName").unwrap_or_default().to_string();
                target.name = format!("{prefix}{}", meta::generated_suffix());
                meta::metadata_mut(&mut object).insert("name".into(), json!(target.name));
            }
            other => return other,
        }
    }
}

/// How many names a create with `generateName` tries before answering 409 (upstream's count).
const GENERATE_NAME_ATTEMPTS: u32 = 8;

/// The field manager of a write: `fieldManager`, or the client's user agent up to its first `/`
/// (kube-apiserver's default).
pub(crate) fn field_manager(call: &Call<'_>) -> String {
    if let Some(manager) = call.query.get("fieldManager") {
        return manager.to_string();
    }
    call.headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|agent| agent.split('/').next())
        .filter(|agent| !agent.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// The paths a write through `subresource` may not change (upstream's reset fields).
fn reset_fields(info: &ResourceInfo, subresource: Option<&str>) -> &'static [&'static [&'static str]] {
    match subresource {
        Some("status") => &[&["spec"]],
        None if info.subresource("status").is_some() => &[&["status"]],
        _ => &[],
    }
}

/// `object` with `metadata.managedFields` updated for a non-apply write by `manager`.
pub(crate) fn track_fields(call: &Call<'_>, manager: &str, old: Option<&Value>, object: &Value) -> Value {
    let info = call.path.info;
    let api_version = info.group_version();
    let time = meta::now();
    let writer = capstan_api::apply::Writer {
        manager,
        api_version: &api_version,
        subresource: call.path.subresource.as_deref(),
        time: &time,
        schema: capstan_api::apply::Schema::definition(call.catalog.openapi.definitions(), info.definition),
        reset_fields: reset_fields(info, call.path.subresource.as_deref()),
    };
    capstan_api::apply::track_update(old, object, &writer)
}

/// The namespace an object goes to: the path's; a different one in the body is refused.
fn resolve_namespace(path: &ResourcePath<'_>, object: &Value) -> ApiResult<Option<String>> {
    if !path.info.namespaced {
        return Ok(None);
    }
    let from_body = meta::meta_str(object, "namespace").filter(|s| !s.is_empty());
    match (&path.namespace, from_body) {
        (Some(path_ns), Some(body_ns)) if path_ns != body_ns => Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request".into(),
        )),
        (Some(path_ns), _) => Ok(Some(path_ns.clone())),
        (None, _) => Err(ApiError::NoRoute),
    }
}

/// The object's name, generated from `generateName` when absent; 422 when invalid.
fn assign_name(info: &ResourceInfo, object: &mut Value) -> ApiResult<String> {
    let name = match meta::meta_str(object, "name").filter(|n| !n.is_empty()) {
        Some(name) => name.to_string(),
        None => match meta::meta_str(object, "generateName").filter(|n| !n.is_empty()) {
            Some(prefix) => format!("{prefix}{}", meta::generated_suffix()),
            None => {
                return Err(ApiError::Invalid(
                    objects::target(info, ""),
                    vec![Cause {
                        reason: "FieldValueRequired",
                        field: "metadata.name".into(),
                        message: "Required value: name or generateName is required".into(),
                    }],
                ));
            }
        },
    };
    let causes = meta::name_causes(info, &name);
    if !causes.is_empty() {
        return Err(ApiError::Invalid(objects::target(info, &name), causes));
    }
    meta::metadata_mut(object).insert("name".into(), json!(name));
    Ok(name)
}

/// Sets the fields the server owns on a new object.
fn prepare_for_create(info: &ResourceInfo, object: &mut Value) {
    let has_spec = object.get("spec").is_some();
    let metadata = meta::metadata_mut(object);
    for owned in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        metadata.remove(owned);
    }
    metadata.insert("uid".into(), json!(meta::new_uid()));
    metadata.insert("creationTimestamp".into(), json!(meta::now()));
    if has_spec {
        metadata.insert("generation".into(), json!(1));
    } else {
        metadata.remove("generation");
    }
    if info.subresource("status").is_some()
        && info.gvk.kind != "Pod"
        && info.gvk.kind != "Namespace"
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
}

/// Combines an incoming object with the stored one under the update rules: server-owned
/// metadata is kept, status only changes through `/status` (and only status does), generation
/// follows spec changes, and no finalizer may be added to an object being deleted.
fn merge_for_update(info: &ResourceInfo, old: &Value, mut new: Value, subresource: Option<&str>) -> ApiResult<Value> {
    let has_status_subresource = info.subresource("status").is_some();
    if subresource == Some("finalize") {
        // `namespaces/<name>/finalize` changes `spec.finalizers` and nothing else.
        let finalizers = new.pointer("/spec/finalizers").cloned();
        new = old.clone();
        match finalizers {
            Some(list) => new["spec"]["finalizers"] = list,
            None => {
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("finalizers");
                }
            }
        }
    } else if subresource == Some("status") {
        let status = new.get("status").cloned();
        new = old.clone();
        match status {
            Some(status) => new["status"] = status,
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    } else if has_status_subresource {
        match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    let name = meta::meta_str(old, "name").unwrap_or_default().to_string();
    if meta::meta_str(&new, "name").is_some_and(|n| n != name) {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::meta_str(&new, "name").unwrap_or_default()
        )));
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    let deleting = old_meta.get("deletionTimestamp").is_some();
    let added_finalizer = {
        let before = meta::finalizers(old);
        meta::finalizers(&new).into_iter().any(|f| !before.contains(&f))
    };
    if deleting && added_finalizer {
        return Err(ApiError::Invalid(
            objects::target(info, &name),
            vec![Cause {
                reason: "FieldValueForbidden",
                field: "metadata.finalizers".into(),
                message: "Forbidden: no new finalizers can be added if the object is being deleted".into(),
            }],
        ));
    }
    let generation = old_meta.get("generation").and_then(Value::as_i64);
    let spec_changed = !meta::same_spec(old, &new);
    let metadata = meta::metadata_mut(&mut new);
    for owned in ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        match old_meta.get(owned) {
            Some(value) => metadata.insert(owned.into(), value.clone()),
            None => metadata.remove(owned),
        };
    }
    if let Some(generation) = generation {
        metadata.insert("generation".into(), json!(if spec_changed { generation + 1 } else { generation }));
    }
    metadata.remove("resourceVersion");
    Ok(new)
}

/// `PUT` an object (or its status).
pub async fn update(call: &Call<'_>) -> ApiResult<Response> {
    let Call { path, query, headers, body, .. } = *call;
    let target = path.named()?;
    reject_unserved_subresource(path)?;
    let (object, warnings) = normalise(path.info, body::decode_object(headers, body)?, query)?;
    let precondition = meta::meta_str(&object, "resourceVersion")
        .filter(|v| !v.is_empty())
        .map(objects::parse_resource_version)
        .transpose()?;
    let updated =
        write_with_retries(call, &target, precondition, |_| Ok(object.clone()), Some(&field_manager(call))).await?;
    Ok(json_response(StatusCode::OK, &updated, &warnings))
}

fn reject_unserved_subresource(path: &ResourcePath<'_>) -> ApiResult<()> {
    match path.subresource.as_deref() {
        None | Some("status") => Ok(()),
        Some("finalize") if path.info.gvk.kind == "Namespace" && path.info.gvk.group.is_empty() => Ok(()),
        Some(other) => {
            Err(ApiError::NotImplemented(format!("{}/{other} is served by a later part of Capstan", path.info.plural)))
        }
    }
}

/// Reads, transforms and conditionally writes an object, retrying on conflicts when the
/// caller gave no resourceVersion precondition. Finishes a deletion whose last finalizer is gone.
async fn write_with_retries(
    call: &Call<'_>,
    target: &ObjectRef<'_>,
    precondition: Option<capstan_store::Revision>,
    transform: impl Fn(&Value) -> ApiResult<Value>,
    manager: Option<&str>,
) -> ApiResult<Value> {
    let server = call.server;
    let subresource = call.path.subresource.as_deref();
    let dry_run = call.query.dry_run()?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (current, revision) =
            server.objects.get_kv(target).await?.ok_or_else(|| ApiError::NotFound(target.target()))?;
        if precondition.is_some_and(|p| p != revision) {
            return Err(ApiError::Conflict(
                target.target(),
                "the object has been modified; please apply your changes to the latest version and try again".into(),
            ));
        }
        let wanted = transform(&current)?;
        let mut next = merge_for_update(target.info, &current, wanted, subresource)?;
        if (target.info.gvk.group, target.info.gvk.kind) == ("", "Secret") {
            crate::defaults::merge_string_data(&mut next);
        }
        let attributes = admission::Attributes::new(admission::Operation::Update, target);
        let old = strip_version(&current);
        let (mutated, changed) = admission::mutate(call, &attributes, next, Some(&old)).await?;
        next = mutated;
        if changed {
            next = merge_for_update(target.info, &current, renormalise(call, next)?, subresource)?;
        }
        let causes = crate::validation::validate(target.info, &next, Some(&current));
        if !causes.is_empty() {
            return Err(ApiError::Invalid(target.target(), causes));
        }
        admission::validate(call, &attributes, Some(&next), Some(&old)).await?;
        // Applies track their own fields; every other write is tracked here.
        let next = match manager {
            Some(manager) => track_fields(call, manager, Some(&strip_version(&current)), &next),
            None => next,
        };
        if next == strip_version(&current) || dry_run {
            return Ok(if dry_run { next } else { current });
        }
        // (A namespace also waits for its `spec.finalizers`, the namespace controller's.)
        let finished = capstan_api::meta::deletion_finished(target.info.gvk.group, target.info.gvk.kind, &next);
        let result = if finished {
            server.objects.remove(target, revision).await.map(|_| next.clone())
        } else {
            server.objects.replace(target, revision, &next).await
        };
        match result {
            Err(ApiError::Conflict(..)) if precondition.is_none() && attempts < WRITE_RETRIES => {}
            other => return other,
        }
    }
}

/// `PATCH` an object (or its status) with one of the three patch formats.
pub async fn patch(call: &Call<'_>) -> ApiResult<Response> {
    let Call { path, query, headers, body, .. } = *call;
    let target = path.named()?;
    reject_unserved_subresource(path)?;
    if body.len() > body::MAX_BODY {
        return Err(ApiError::TooLarge(body::MAX_BODY));
    }
    let kind = body::content_type(headers);
    if kind == "application/strategic-merge-patch+json" && capstan_api::Registry::is_custom(path.info) {
        return Err(ApiError::UnsupportedMediaType(
            "application/json-patch+json, application/merge-patch+json (strategic merge patch is not supported for custom resources)".into(),
        ));
    }
    let patch_body: Value = match kind.as_str() {
        "application/json-patch+json" | "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("the patch is not valid JSON: {e}")))?
        }
        "application/apply-patch+yaml" => return apply_patch(call, &target).await,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other})"
            )));
        }
    };
    let precondition = patch_body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(objects::parse_resource_version)
        .transpose()?;
    let info = path.info;
    let warnings = std::sync::Mutex::new(Vec::new());
    let transform = |current: &Value| -> ApiResult<Value> {
        let original = strip_version(current);
        let patched = match kind.as_str() {
            "application/json-patch+json" => capstan_api::patch::json_patch(&original, &patch_body),
            "application/merge-patch+json" => capstan_api::patch::json_merge(&original, &patch_body),
            _ => {
                let schema =
                    capstan_api::patch::SchemaNode::definition(call.catalog.openapi.definitions(), info.definition);
                capstan_api::patch::strategic_merge(&original, &patch_body, schema)
            }
        }
        .map_err(|e| patch_error(info, &target.name, &e))?;
        let (normalised, found) = normalise(info, patched, query)?;
        if let Ok(mut w) = warnings.lock() {
            *w = found;
        }
        Ok(normalised)
    };
    let updated = write_with_retries(call, &target, precondition, transform, Some(&field_manager(call))).await?;
    let warnings = warnings.lock().map(|w| w.clone()).unwrap_or_default();
    Ok(json_response(StatusCode::OK, &updated, &warnings))
}

fn patch_error(info: &ResourceInfo, name: &str, error: &capstan_api::patch::PatchError) -> ApiError {
    if error.status_code() == 422 {
        ApiError::Invalid(
            objects::target(info, name),
            vec![Cause { reason: "FieldValueInvalid", field: "patch".into(), message: error.to_string() }],
        )
    } else {
        ApiError::BadRequest(error.to_string())
    }
}

fn apply_error(error: capstan_api::apply::ApplyError) -> ApiError {
    use capstan_api::apply::ApplyError;
    match error {
        ApplyError::Conflicts(conflicts) => {
            let causes = conflicts
                .iter()
                .map(|c| Cause { reason: "FieldManagerConflict", field: c.field_path.clone(), message: c.message() })
                .collect();
            ApiError::ApplyConflict(ApplyError::Conflicts(conflicts).to_string(), causes)
        }
        ApplyError::Invalid(message) => ApiError::BadRequest(message),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Server-side apply (`application/apply-patch+yaml`): merges the applied configuration under
/// field ownership, creating the object when it does not exist.
async fn apply_patch(call: &Call<'_>, target: &ObjectRef<'_>) -> ApiResult<Response> {
    let Call { server, path, query, body, .. } = *call;
    let info = path.info;
    let config = body::yaml(body)?;
    if !config.is_object() {
        return Err(ApiError::BadRequest("the applied configuration must be an object".into()));
    }
    let manager = query
        .get("fieldManager")
        .ok_or_else(|| ApiError::BadRequest("PATCH: fieldManager is required for apply requests".into()))?;
    let force = query.flag("force");
    let api_version = info.group_version();
    let time = meta::now();
    let writer = capstan_api::apply::Writer {
        manager,
        api_version: &api_version,
        subresource: path.subresource.as_deref(),
        time: &time,
        schema: capstan_api::apply::Schema::definition(call.catalog.openapi.definitions(), info.definition),
        reset_fields: reset_fields(info, path.subresource.as_deref()),
    };
    if server.objects.get_kv(target).await?.is_none() && path.subresource.is_none() {
        let applied = capstan_api::apply::apply(None, &config, &writer, force).map_err(apply_error)?;
        let (object, warnings) = normalise(info, applied, query)?;
        match insert_new(call, object, |o| Ok(o.clone())).await {
            Ok(created) => return Ok(json_response(StatusCode::CREATED, &created, &warnings)),
            // Created concurrently: apply to what is there now.
            Err(ApiError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let transform = |current: &Value| -> ApiResult<Value> {
        let applied =
            capstan_api::apply::apply(Some(&strip_version(current)), &config, &writer, force).map_err(apply_error)?;
        normalise(info, applied, query).map(|(object, _)| object)
    };
    let updated = write_with_retries(call, target, None, transform, None).await?;
    Ok(json_response(StatusCode::OK, &updated, &[]))
}
