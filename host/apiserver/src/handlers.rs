//! The REST verbs on stored resources, one function each, sharing the write rules in
//! [`crate::objects`].

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use capstan_api::ResourceInfo;
use capstan_api::selector::{FieldSelector, LabelSelector};
use capstan_api::table::{self, IncludeObject, TableOptions};
use serde_json::{Value, json};

use crate::body;
use crate::meta;
use crate::objects::{self, ObjectRef};
use crate::routing::{Query, ResourcePath};
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult, Cause};

/// One request to a resource: everything a verb handler needs.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// The server.
    pub server: &'a ApiServer,
    /// The catalog snapshot the request was routed with.
    pub catalog: &'a crate::server::Catalog,
    /// The resource, namespace, name and subresource.
    pub path: &'a ResourcePath<'a>,
    /// The query string.
    pub query: &'a Query,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request body.
    pub body: &'a Bytes,
}

/// How many times a write without a resourceVersion precondition is retried on conflict.
const WRITE_RETRIES: usize = 8;

/// A JSON response.
pub fn json_response(code: StatusCode, value: &Value, warnings: &[String]) -> Response {
    let mut response = (code, value.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for warning in warnings {
        let text = format!("299 - {}", serde_json::Value::String(warning.clone()));
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.append(header::WARNING, value);
        }
    }
    response
}

/// Whether the client asked for a `meta.k8s.io/v1` `Table`.
#[must_use]
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|part| part.replace(' ', "").contains("as=Table")))
}

/// Table options from the query string.
#[must_use]
pub fn table_options(query: &Query) -> TableOptions {
    let include_object = match query.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    TableOptions { include_object, now: jiff::Timestamp::now() }
}

impl ResourcePath<'_> {
    fn object_ref(&self, name: &str) -> ObjectRef<'_> {
        ObjectRef { info: self.info, namespace: self.namespace.clone(), name: name.to_string() }
    }

    fn named(&self) -> ApiResult<ObjectRef<'_>> {
        let name = self.name.as_deref().ok_or(ApiError::MethodNotAllowed)?;
        if self.info.namespaced && self.namespace.is_none() {
            return Err(ApiError::NoRoute);
        }
        Ok(self.object_ref(name))
    }
}

/// `GET` one object.
pub async fn get(call: &Call<'_>) -> ApiResult<Response> {
    let Call { server, path, query, headers, .. } = *call;
    let object = server.objects.get(&path.named()?).await?;
    if wants_table(headers) {
        let table = table::table(path.info, std::slice::from_ref(&object), json!({}), &table_options(query));
        return Ok(json_response(StatusCode::OK, &table, &[]));
    }
    Ok(json_response(StatusCode::OK, &object, &[]))
}

/// Continue tokens carry the list's revision and the key to resume after.
fn encode_continue(revision: capstan_store::Revision, last_key: &[u8]) -> String {
    use base64::Engine as _;
    // Resume just after the last key returned.
    let mut start = last_key.to_vec();
    start.push(0);
    let token = json!({"rv": revision.get(), "start": String::from_utf8_lossy(&start)});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(capstan_store::Revision, Vec<u8>)> {
    use base64::Engine as _;
    let invalid = || ApiError::BadRequest("continue key is not valid: re-list from the start".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let rv = value["rv"].as_i64().ok_or_else(invalid)?;
    let start = value["start"].as_str().ok_or_else(invalid)?;
    Ok((capstan_store::Revision(rv), start.as_bytes().to_vec()))
}

/// The label and field selectors of a list or watch.
pub struct Selectors {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Parses the selectors of `query` for resource `info`; 400 on bad syntax or unknown fields.
    pub fn parse(info: &ResourceInfo, query: &Query) -> ApiResult<Self> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let allowed = capstan_api::selector::supported_fields(info);
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), &allowed)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Selectors { labels, fields })
    }

    /// Whether an object matches both selectors.
    #[must_use]
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches_object(object) && self.fields.matches(object)
    }

    fn filtering(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }
}

/// `GET` a collection.
pub async fn list(call: &Call<'_>) -> ApiResult<Response> {
    let Call { server, path, query, headers, .. } = *call;
    let info = path.info;
    let selectors = Selectors::parse(info, query)?;
    let limit = query.number("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let (mut revision, mut from) = match query.get("continue") {
        Some(token) => {
            let (rv, start) = decode_continue(token)?;
            (Some(rv), Some(start))
        }
        None => (None, None),
    };
    if revision.is_none() && query.get("resourceVersionMatch") == Some("Exact") {
        revision = query.get("resourceVersion").map(objects::parse_resource_version).transpose()?;
    }
    let namespace = path.namespace.as_deref();
    // A first page comes from the watch cache; later pages read the store at the first page's
    // revision, so a paginated list is one consistent snapshot either way.
    if from.is_none()
        && let Some(response) = list_from_cache(call, &selectors, limit).await?
    {
        return Ok(response);
    }
    // A pinned metadata.name narrows the read to one key.
    if let Some(name) = selectors.fields.exact("metadata.name") {
        let listed = server.objects.list(info, namespace, revision, None, None).await?;
        let items: Vec<Value> = listed
            .items
            .into_iter()
            .filter(|o| meta::meta_str(o, "name") == Some(name) && selectors.matches(o))
            .collect();
        return Ok(list_response(path, query, headers, &items, listed.revision, None, 0));
    }
    // With selectors, read pages until `limit` matching items are found.
    let mut items = Vec::new();
    let page = if selectors.filtering() { limit.map(|l| l.max(500)) } else { limit };
    loop {
        let listed = server.objects.list(info, namespace, revision, from.take(), page).await?;
        revision = Some(listed.revision);
        let count = listed.items.len();
        for (index, item) in listed.items.into_iter().enumerate() {
            if !selectors.matches(&item) {
                continue;
            }
            items.push(item);
            if limit.is_some_and(|l| items.len() >= l) && (index + 1 < count || listed.more) {
                let last = &items[items.len() - 1];
                let key = ObjectRef {
                    info,
                    namespace: meta::meta_str(last, "namespace").map(str::to_string),
                    name: meta::meta_str(last, "name").unwrap_or_default().to_string(),
                }
                .key();
                let token = encode_continue(listed.revision, &key);
                let remaining = if selectors.filtering() { 0 } else { listed.remaining + (count - index - 1) as u64 };
                return Ok(list_response(path, query, headers, &items, listed.revision, Some(token), remaining));
            }
        }
        match listed.last_key {
            Some(mut key) if listed.more => {
                key.push(0);
                from = Some(key);
            }
            _ => return Ok(list_response(path, query, headers, &items, listed.revision, None, 0)),
        }
    }
}

/// The cache's answer to a list, or `None` when the store must answer it.
async fn list_from_cache(call: &Call<'_>, selectors: &Selectors, limit: Option<usize>) -> ApiResult<Option<Response>> {
    use crate::cache::{CacheError, ListRv};
    let Call { server, path, query, headers, .. } = *call;
    let rv = match (query.get("resourceVersion"), query.get("resourceVersionMatch")) {
        (None, _) => ListRv::Latest,
        (Some("0"), _) => ListRv::Any,
        (Some(rv), Some("Exact")) => ListRv::Exact(objects::parse_resource_version(rv)?),
        (Some(rv), _) => ListRv::NotOlderThan(objects::parse_resource_version(rv)?),
    };
    let cached = match server.cache.list(path.info.storage_resource, path.namespace.as_deref(), rv).await {
        Ok(cached) => cached,
        Err(CacheError::NotCached(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let presented: Vec<Value> = cached.items.iter().map(|o| objects::present(path.info, Value::clone(o))).collect();
    let matching: Vec<&Value> = presented.iter().filter(|o| selectors.matches(o)).collect();
    let (page, token) = match limit {
        Some(limit) if matching.len() > limit => {
            let last = matching[limit - 1];
            let key = ObjectRef {
                info: path.info,
                namespace: meta::meta_str(last, "namespace").map(str::to_string),
                name: meta::meta_str(last, "name").unwrap_or_default().to_string(),
            }
            .key();
            (&matching[..limit], Some(encode_continue(cached.revision, &key)))
        }
        _ => (&matching[..], None),
    };
    let remaining = (matching.len() - page.len()) as u64;
    let items: Vec<Value> = page.iter().map(|o| (*o).clone()).collect();
    Ok(Some(list_response(path, query, headers, &items, cached.revision, token, remaining)))
}

fn list_response(
    path: &ResourcePath<'_>,
    query: &Query,
    headers: &HeaderMap,
    items: &[Value],
    revision: capstan_store::Revision,
    continue_token: Option<String>,
    remaining: u64,
) -> Response {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
        if remaining > 0 {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    if wants_table(headers) {
        let table = table::table(path.info, items, metadata, &table_options(query));
        return json_response(StatusCode::OK, &table, &[]);
    }
    let list = json!({
        "kind": path.info.list_kind,
        "apiVersion": path.info.group_version(),
        "metadata": metadata,
        "items": items,
    });
    json_response(StatusCode::OK, &list, &[])
}

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
    let name = assign_name(info, &mut object)?;
    if let Some(ns) = &namespace {
        meta::metadata_mut(&mut object).insert("namespace".into(), json!(ns));
        server.check_namespace_accepts(ns).await?;
    }
    prepare_for_create(info, &mut object);
    server.defaults.apply(info, &mut object);
    let causes = crate::validation::validate(info, &object, None);
    if !causes.is_empty() {
        return Err(ApiError::Invalid(objects::target(info, &name), causes));
    }
    let object = finish(&object)?;
    let target = ObjectRef { info, namespace, name };
    if query.dry_run()? {
        return Ok(object);
    }
    server.objects.create(&target, &object).await
}

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
    if subresource == Some("status") {
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

fn strip_version(object: &Value) -> Value {
    let mut object = object.clone();
    meta::metadata_mut(&mut object).remove("resourceVersion");
    object
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
        let next = merge_for_update(target.info, &current, wanted, subresource)?;
        let causes = crate::validation::validate(target.info, &next, Some(&current));
        if !causes.is_empty() {
            return Err(ApiError::Invalid(target.target(), causes));
        }
        // Applies track their own fields; every other write is tracked here.
        let next = match manager {
            Some(manager) => track_fields(call, manager, Some(&strip_version(&current)), &next),
            None => next,
        };
        if next == strip_version(&current) || dry_run {
            return Ok(if dry_run { next } else { current });
        }
        let finished = next.get("metadata").and_then(|m| m.get("deletionTimestamp")).is_some()
            && meta::finalizers(&next).is_empty();
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

/// `DeleteOptions` from the body or the query string.
struct DeleteOptions {
    propagation: Option<String>,
    grace_period: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn delete_options(headers: &HeaderMap, body: &Bytes, query: &Query) -> ApiResult<DeleteOptions> {
    let from_body =
        if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { body::decode_object(headers, body)? };
    let text = |field: &str| from_body.get(field).and_then(Value::as_str).map(str::to_string);
    let dry_run = query.dry_run()?
        || from_body.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        propagation: text("propagationPolicy").or_else(|| query.get("propagationPolicy").map(str::to_string)),
        grace_period: from_body
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or(query.number("gracePeriodSeconds")?),
        uid: from_body.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string),
        resource_version: from_body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
    })
}

/// `DELETE` one object: immediately, or by marking it when finalizers or a grace period hold it.
pub async fn delete(call: &Call<'_>) -> ApiResult<Response> {
    let Call { server, path, query, headers, body, .. } = *call;
    let target = path.named()?;
    let options = delete_options(headers, body, query)?;
    let (object, code) = delete_object(server, &target, &options).await?;
    Ok(json_response(code, &object, &[]))
}

async fn delete_object(
    server: &ApiServer,
    target: &ObjectRef<'_>,
    options: &DeleteOptions,
) -> ApiResult<(Value, StatusCode)> {
    loop {
        let (current, revision) =
            server.objects.get_kv(target).await?.ok_or_else(|| ApiError::NotFound(target.target()))?;
        check_preconditions(target, &current, options)?;
        let mut marked = strip_version(&current);
        let mut finalizers = meta::finalizers(&marked);
        match options.propagation.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into());
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => finalizers.push("orphan".into()),
            _ => {}
        }
        let graceful = graceful_seconds(target.info, &current, options.grace_period);
        if target.info.gvk.kind == "Namespace" {
            finalizers.clear();
            marked["spec"]["finalizers"] = json!(["kubernetes"]);
            marked["status"] = json!({"phase": "Terminating"});
        }
        let hold = !finalizers.is_empty() || graceful.is_some() || target.info.gvk.kind == "Namespace";
        if options.dry_run {
            return Ok((current, StatusCode::OK));
        }
        if !hold {
            match server.objects.remove(target, revision).await {
                Ok(_) => return Ok((current, StatusCode::OK)),
                Err(ApiError::Conflict(..)) => continue,
                Err(e) => return Err(e),
            }
        }
        let metadata = meta::metadata_mut(&mut marked);
        if !metadata.contains_key("deletionTimestamp") {
            metadata.insert("deletionTimestamp".into(), json!(meta::now()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(graceful.unwrap_or(0)));
        }
        if finalizers.is_empty() {
            metadata.remove("finalizers");
        } else {
            metadata.insert("finalizers".into(), json!(finalizers));
        }
        if marked == strip_version(&current) {
            return Ok((current, StatusCode::ACCEPTED));
        }
        match server.objects.replace(target, revision, &marked).await {
            Ok(updated) => {
                if target.info.gvk.kind == "Namespace" {
                    server.finalize_namespace_later(target.name.clone());
                }
                return Ok((updated, StatusCode::ACCEPTED));
            }
            Err(ApiError::Conflict(..)) => {}
            Err(e) => return Err(e),
        }
    }
}

fn check_preconditions(target: &ObjectRef<'_>, current: &Value, options: &DeleteOptions) -> ApiResult<()> {
    if let Some(uid) = &options.uid {
        let actual = meta::meta_str(current, "uid").unwrap_or_default();
        if uid != actual {
            return Err(ApiError::Conflict(
                target.target(),
                format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
            ));
        }
    }
    if let Some(rv) = &options.resource_version {
        let actual = meta::meta_str(current, "resourceVersion").unwrap_or_default();
        if rv != actual {
            return Err(ApiError::Conflict(
                target.target(),
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    Ok(())
}

/// A bound, running pod is deleted gracefully: marked, and removed by its node once its
/// containers stopped. Everything else goes at once.
fn graceful_seconds(info: &ResourceInfo, current: &Value, requested: Option<i64>) -> Option<i64> {
    if info.gvk.kind != "Pod" || !info.gvk.group.is_empty() {
        return None;
    }
    let bound = current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let terminal = matches!(current.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    let grace = requested
        .or_else(|| current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30);
    (bound && !terminal && grace > 0).then_some(grace)
}

/// `DELETE` a collection: every object matching the selectors.
pub async fn delete_collection(call: &Call<'_>) -> ApiResult<Response> {
    let Call { server, path, query, headers, body, .. } = *call;
    let selectors = Selectors::parse(path.info, query)?;
    let options = delete_options(headers, body, query)?;
    let listed = server.objects.list(path.info, path.namespace.as_deref(), None, None, None).await?;
    let mut deleted = Vec::new();
    for item in listed.items.iter().filter(|o| selectors.matches(o)) {
        let target = ObjectRef {
            info: path.info,
            namespace: meta::meta_str(item, "namespace").map(str::to_string),
            name: meta::meta_str(item, "name").unwrap_or_default().to_string(),
        };
        match delete_object(server, &target, &options).await {
            Ok((object, _)) => deleted.push(object),
            Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let list =
        json!({"kind": path.info.list_kind, "apiVersion": path.info.group_version(), "metadata": {}, "items": deleted});
    Ok(json_response(StatusCode::OK, &list, &[]))
}
