//! The admission chain: every create, update and delete (Plugins themselves excepted), and the
//! subresource writes `status`, `scale`, `binding` and `eviction`, and the connect requests
//! `exec`, `attach` and `portforward` (from [`crate::node_proxy`]), pass the loaded admission
//! policies whose rules, scope and selectors match it — mutating ones first, in order, their
//! patches applied (and `IfNeeded` policies called again when a later one changed the object);
//! then, after schema validation, the validating ones. A denial or a failed policy (under
//! `failurePolicy: Fail`) refuses the request before anything is written; warnings go back to
//! the client; audit annotations go to the server's audit log (`target: "audit"`).
//!
//! Policies read the cluster through [`StoreCluster`], the host side of the WIT `cluster`
//! import, and on dry-run requests it refuses writes. Reads are served from the watch cache
//! (upstream's admission plugins read informer caches too), with a store read when the cache
//! does not have the object or lists nothing (upstream's "live lookup"). A live lookup that
//! lists nothing either is remembered for [`LIVE_LOOKUP_TTL`], as upstream's quota and
//! `LimitRanger` plugins remember theirs: until then, lists the cache answers with nothing are
//! nothing, and a namespace without quotas or limit ranges costs its creates no store read. An
//! object created meanwhile is seen once the cache has it (milliseconds), the same window
//! upstream has. `ResourceQuotas` the cache does list are read from the store: the quota
//! policy charges them by compare-and-swap and must see every charge; and once a call has read
//! the store, its later cached reads are at least as new as that read, so usage computed from
//! cached objects is never older than the quota it is written to.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use capstan_api::ResourceInfo;
use capstan_api::plugin::{FailurePolicy, ReinvocationPolicy};
use capstan_store::Revision;
pub(crate) use capstan_wasm::admission::Operation;
use capstan_wasm::admission::{
    AdmissionRequest, AdmissionResponse, Cluster, ClusterError, GroupVersionKind, GroupVersionResource, UserInfo,
};
use serde_json::Value;

use crate::cache::{ListRv, WatchCache};
use crate::conditions::{Scope, Variables};
use crate::handlers::Call;
use crate::meta;
use crate::objects::{ObjectRef, Objects};
use crate::plugins::LoadedPolicy;
use crate::server::ApiServer;
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
    /// The kind of the admitted object when it is not the resource's own (`Scale`, `Binding`,
    /// `Eviction` for those subresources): group, version, kind.
    pub kind: Option<(&'static str, &'static str, &'static str)>,
}

impl<'a> Attributes<'a> {
    /// A write of the resource's own kind.
    pub(crate) fn new(operation: Operation, target: &'a ObjectRef<'a>) -> Self {
        Attributes {
            operation,
            info: target.info,
            namespace: target.namespace.as_deref(),
            name: &target.name,
            kind: None,
        }
    }

    /// The admitted object's group, version and kind: the subresource's kind, else the
    /// resource's own.
    fn admitted_kind(&self) -> (&'static str, &'static str, &'static str) {
        let gvk = &self.info.gvk;
        self.kind.unwrap_or((gvk.group, gvk.version, gvk.kind))
    }

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
    if !admitted(attributes.info) {
        return Ok((object, false));
    }
    timed(call, attributes, true, None, mutate_all(call, attributes, object, old)).await
}

async fn mutate_all(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    object: Value,
    old: Option<&Value>,
) -> ApiResult<(Value, bool)> {
    let mut object = object;
    let policies = matching(call, attributes, true, Some(&object), old).await?;
    if policies.is_empty() {
        return Ok((object, false));
    }
    // One request for the phase: the object is serialised again only after a policy changed it.
    let mut request = request(call, attributes, Some(&object), old)?;
    // For each policy, the number of changes made when it last ran: an `IfNeeded` policy runs
    // again when a later policy changed the object after it.
    let mut changes = 0usize;
    let mut seen_at = Vec::with_capacity(policies.len());
    for policy in &policies {
        if mutate_once(call, attributes, policy, &mut request, &mut object).await? {
            changes += 1;
        }
        seen_at.push(changes);
    }
    for (policy, seen) in policies.iter().zip(seen_at) {
        if policy.settings.reinvocation_policy == ReinvocationPolicy::IfNeeded
            && changes > seen
            && mutate_once(call, attributes, policy, &mut request, &mut object).await?
        {
            changes += 1;
        }
    }
    Ok((object, changes > 0))
}

/// Calls one mutating policy with `request` (whose object is `object`) and applies its patch to
/// both; true when the object changed.
async fn mutate_once(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    policy: &Arc<LoadedPolicy>,
    request: &mut AdmissionRequest,
    object: &mut Value,
) -> ApiResult<bool> {
    let apply = async {
        let Some(response) = run(call, policy, request, true).await? else { return Ok(false) };
        let Some(patch) = response.patch.as_deref().filter(|p| !p.trim().is_empty()) else { return Ok(false) };
        let patch: Value = serde_json::from_str(patch).map_err(|e| {
            ApiError::Internal(format!("admission plugin {:?} returned a patch that is not JSON: {e}", policy.name))
        })?;
        let patched = capstan_api::patch::json_patch(object, &patch).map_err(|e| {
            ApiError::Internal(format!("admission plugin {:?} returned a patch that does not apply: {e}", policy.name))
        })?;
        if patched == *object {
            return Ok(false);
        }
        request.object = Some(crate::body::json_text(&patched));
        *object = patched;
        Ok(true)
    };
    timed(call, attributes, true, Some(&policy.name), apply).await
}

/// Runs the matching mutating policies on a deletion: they may deny it; there is no object to
/// patch.
pub(crate) async fn mutate_on_delete(call: &Call<'_>, attributes: &Attributes<'_>, old: &Value) -> ApiResult<()> {
    if !admitted(attributes.info) {
        return Ok(());
    }
    timed(call, attributes, true, None, call_each(call, attributes, true, None, Some(old))).await
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
    timed(call, attributes, false, None, call_each(call, attributes, false, object, old)).await
}

/// Calls each matching policy of one kind, none of which may change the object.
async fn call_each(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    mutating: bool,
    object: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<()> {
    let policies = matching(call, attributes, mutating, object, old).await?;
    if policies.is_empty() {
        return Ok(());
    }
    let mut request = request(call, attributes, object, old)?;
    for policy in policies {
        timed(call, attributes, mutating, Some(&policy.name), run(call, &policy, &mut request, mutating)).await?;
    }
    Ok(())
}

/// Awaits one admission phase (`policy` absent) or one policy's part in it, and records how long
/// it took in the server's metrics.
async fn timed<T>(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    mutating: bool,
    policy: Option<&str>,
    work: impl Future<Output = ApiResult<T>>,
) -> ApiResult<T> {
    let started = Instant::now();
    let result = work.await;
    let key = (if mutating { "admit" } else { "validate" }, attributes.operation_name(), result.is_err());
    call.server.metrics.record_admission(policy, key, started.elapsed());
    result
}

/// Mutates then validates an object that has no schema validation of its own in between
/// (`Scale`, `Binding`, `Eviction`, connect options); returns the admitted object.
pub(crate) async fn admit(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    object: Value,
    old: Option<&Value>,
) -> ApiResult<Value> {
    let (object, _) = mutate(call, attributes, object, old).await?;
    validate(call, attributes, Some(&object), old).await?;
    Ok(object)
}

/// The policies of one kind whose rules, scope, namespace selector and object selector cover
/// this request, in the order they run.
async fn matching(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    mutating: bool,
    object: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<Vec<Arc<LoadedPolicy>>> {
    let info = attributes.info;
    let subresource = call.path.subresource.as_deref();
    let by_rules: Vec<_> = call
        .server
        .plugins
        .admission_policies(mutating)
        .into_iter()
        .filter(|policy| {
            policy.settings.rules.iter().any(|rule| {
                rule.scope_matches(info.namespaced)
                    && rule.matches(
                        attributes.operation_name(),
                        info.gvk.group,
                        info.gvk.version,
                        info.plural,
                        subresource,
                    )
            })
        })
        .collect();
    let mut namespace: Option<Value> = None;
    let mut matched = Vec::with_capacity(by_rules.len());
    for policy in by_rules {
        if let Some(selector) = &policy.object_selector {
            let labelled = |o: Option<&Value>| o.is_some_and(|o| selector.matches_object(o));
            if !labelled(object) && !labelled(old) {
                continue;
            }
        }
        if let Some(selector) = &policy.namespace_selector {
            let has_namespace = info.namespaced || (info.gvk.group.is_empty() && info.plural == "namespaces");
            if has_namespace {
                let namespace = match &namespace {
                    Some(namespace) => namespace,
                    None => namespace.insert(namespace_of(call, attributes, object, old).await?),
                };
                if !selector.matches_object(namespace) {
                    continue;
                }
            }
        }
        matched.push(policy);
    }
    by_conditions(call, attributes, object, old, matched)
}

/// The `policies` whose match conditions the request meets; the request's CEL scope is bound
/// once, for the first policy that has conditions.
fn by_conditions(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
    policies: Vec<Arc<LoadedPolicy>>,
) -> ApiResult<Vec<Arc<LoadedPolicy>>> {
    let mut scope: Option<Scope> = None;
    let mut matched = Vec::with_capacity(policies.len());
    for policy in policies {
        if !policy.conditions.is_empty() {
            if scope.is_none() {
                let variables = Variables { object, old_object: old, request: request_variable(call, attributes)? };
                let bound = Scope::new(&variables).map_err(|e| {
                    ApiError::Internal(format!("cannot evaluate the match conditions of {:?}: {e}", policy.name))
                })?;
                scope = Some(bound);
            }
            let Some(scope) = &scope else { continue };
            match policy.conditions.matches(scope) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(message) if policy.settings.failure_policy == FailurePolicy::Ignore => {
                    tracing::warn!(plugin = %policy.name, error = %message, "match condition failed; policy skipped");
                    continue;
                }
                Err(message) => {
                    return Err(ApiError::Internal(format!(
                        "failed calling admission plugin {:?}: failed to evaluate match condition {message}",
                        policy.name
                    )));
                }
            }
        }
        matched.push(policy);
    }
    Ok(matched)
}

/// The `request` a match condition sees: the admission request's attributes (the objects are
/// `object` and `oldObject`).
fn request_variable(call: &Call<'_>, attributes: &Attributes<'_>) -> ApiResult<Value> {
    let info = attributes.info;
    let (group, version, kind) = attributes.admitted_kind();
    let (username, groups) = call.identity.map_or((String::new(), Vec::new()), |i| (i.user.clone(), i.groups.clone()));
    Ok(serde_json::json!({
        "operation": attributes.operation_name(),
        "name": attributes.name,
        "namespace": attributes.namespace.unwrap_or_default(),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": info.gvk.group, "version": info.gvk.version, "resource": info.plural},
        "subResource": call.path.subresource.as_deref().unwrap_or_default(),
        "userInfo": {"username": username, "groups": groups},
        "dryRun": call.query.dry_run()?,
    }))
}

/// What a namespace selector is matched against: the request's namespace, or a Namespace object
/// itself (other cluster-scoped objects are matched against no labels, as upstream); `Null` when
/// there is none.
async fn namespace_of(
    call: &Call<'_>,
    attributes: &Attributes<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<Value> {
    let info = attributes.info;
    if info.gvk.group.is_empty() && info.plural == "namespaces" {
        return Ok(object.or(old).cloned().unwrap_or_default());
    }
    let Some(namespace) = attributes.namespace else { return Ok(Value::Null) };
    let namespaces = ApiServer::resource("", "v1", "namespaces")?;
    let target = ObjectRef { info: namespaces, namespace: None, name: namespace.to_string() };
    Ok(call.server.objects.get_kv(&target).await?.map(|(ns, _)| ns).unwrap_or_default())
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
    let (group, version, kind) = attributes.admitted_kind();
    Ok(AdmissionRequest {
        // Set for each call by `run`.
        uid: String::new(),
        kind: GroupVersionKind { group: group.to_string(), version: version.to_string(), kind: kind.to_string() },
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
        object: object.map(crate::body::json_text),
        old_object: old.map(crate::body::json_text),
        dry_run: call.query.dry_run()?,
        options: options(call, attributes.operation)?.as_ref().map(crate::body::json_text),
    })
}

/// The request's options object, as upstream hands it to admission: `CreateOptions`,
/// `UpdateOptions` (`PatchOptions` for a patch) or `DeleteOptions` (the request body's, with the
/// query's parameters), from the query string; none for a connect (its options are the object).
fn options(call: &Call<'_>, operation: Operation) -> ApiResult<Option<Value>> {
    let query = call.query;
    let patch = call
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("patch"));
    let mut options = match operation {
        Operation::Connect => return Ok(None),
        Operation::Create => serde_json::json!({"kind": "CreateOptions"}),
        Operation::Update if patch => serde_json::json!({"kind": "PatchOptions"}),
        Operation::Update => serde_json::json!({"kind": "UpdateOptions"}),
        Operation::Delete => {
            let mut options = serde_json::from_slice::<Value>(call.body)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| serde_json::json!({}));
            options["kind"] = "DeleteOptions".into();
            if let (None, Some(grace)) = (options.get("gracePeriodSeconds"), query.number("gracePeriodSeconds")?) {
                options["gracePeriodSeconds"] = grace.into();
            }
            if let (None, Some(policy)) = (options.get("propagationPolicy"), query.get("propagationPolicy")) {
                options["propagationPolicy"] = policy.into();
            }
            options
        }
    };
    options["apiVersion"] = "meta.k8s.io/v1".into();
    if query.dry_run()? {
        options["dryRun"] = serde_json::json!(["All"]);
    }
    if operation != Operation::Delete {
        if let Some(manager) = query.get("fieldManager") {
            options["fieldManager"] = manager.into();
        }
        if patch && query.flag("force") {
            options["force"] = true.into();
        }
    }
    Ok(Some(options))
}

/// Calls one policy off the async runtime and applies its answer: `Some` response when it
/// allowed the request, `None` when it failed and its failure policy ignores that, an error
/// when it denied the request or failed under `Fail`.
async fn run(
    call: &Call<'_>,
    policy: &Arc<LoadedPolicy>,
    request: &mut AdmissionRequest,
    mutating: bool,
) -> ApiResult<Option<AdmissionResponse>> {
    // Each call is its own request to the policy, as each webhook call is upstream.
    request.uid = meta::new_uid();
    let cluster: Arc<dyn Cluster> = Arc::new(StoreCluster {
        objects: call.server.objects.clone(),
        cache: Arc::clone(&call.server.cache),
        runtime: tokio::runtime::Handle::current(),
        dry_run: request.dry_run,
        seen: std::sync::Mutex::new(None),
        empty_lookups: Arc::clone(&call.server.empty_lookups),
    });
    let answer = if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        call_on_worker(policy, request, cluster, mutating)
    } else {
        // Elsewhere (tests on a current-thread runtime), on the blocking pool.
        let handle = policy.handle.clone();
        let request = request.clone();
        let call_policy = move || {
            let cluster = Some(cluster);
            if mutating { handle.mutate_with(&request, cluster) } else { handle.validate_with(&request, cluster) }
                .map_err(|e| e.to_string())
        };
        tokio::task::spawn_blocking(call_policy).await.unwrap_or_else(|e| Err(format!("the call did not finish: {e}")))
    };
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
    for (key, value) in &response.audit_annotations {
        tracing::info!(target: "audit", request = %request.uid, annotation = %format!("{}/{key}", policy.name), %value);
    }
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

/// How long a policy call may run on a worker thread before it is moved off it: a little over
/// one epoch tick of the plugin runtime.
const INLINE_BUDGET: Duration = Duration::from_millis(5);

/// How many calls of a policy go straight to a blocking thread after one needed it.
const BLOCKING_STREAK: u32 = 64;

/// Calls a policy from a worker thread of the multi-threaded runtime. A call that needs nothing
/// but the CPU (most policies, most of the time: tens of microseconds) runs right here; handing
/// the worker's other tasks to another thread first, as `block_in_place` does, would cost as
/// much as the call. One that outlasts [`INLINE_BUDGET`], or blocks in a way only a blocking
/// thread may (its cluster reads and writes, WASI's stdio and poll imports), is abandoned unseen
/// before that and made again in `block_in_place`, with its whole deadline; the policy's next
/// [`BLOCKING_STREAK`] calls go there directly, and the one after is tried here again. A read
/// that waits once (a cache starting, a quota list's periodic store read) so costs a policy
/// its place on the worker only for a while, and a policy that always blocks wastes one
/// abandoned attempt in 65 calls.
fn call_on_worker(
    policy: &LoadedPolicy,
    request: &AdmissionRequest,
    cluster: Arc<dyn Cluster>,
    mutating: bool,
) -> Result<AdmissionResponse, String> {
    let handle = &policy.handle;
    let in_place = policy
        .blocking_calls_left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
        .is_err();
    if in_place {
        match handle.try_admit_within(INLINE_BUDGET, mutating, request, Some(Arc::clone(&cluster))) {
            Ok(Some(response)) => return Ok(response),
            Ok(None) => {
                tracing::debug!(plugin = %policy.name, "policy call needs a blocking thread; its next calls run on one");
                policy.blocking_calls_left.store(BLOCKING_STREAK, Ordering::Relaxed);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    tokio::task::block_in_place(|| {
        let cluster = Some(cluster);
        if mutating { handle.mutate_with(request, cluster) } else { handle.validate_with(request, cluster) }
            .map_err(|e| e.to_string())
    })
}

/// The host side of the WIT `cluster` import for one admission call: reads (from the watch
/// cache where that stays correct, see the module doc) and status compare-and-swaps on the
/// store, run from the policy's blocking thread. Writes are refused on dry-run requests.
struct StoreCluster {
    objects: Objects,
    cache: Arc<WatchCache>,
    runtime: tokio::runtime::Handle,
    dry_run: bool,
    /// The newest store revision this call has read at: cached reads are at least that new.
    seen: std::sync::Mutex<Option<Revision>>,
    empty_lookups: Arc<EmptyLookups>,
}

/// How long a live lookup that listed nothing stands (upstream's `liveTTL`).
pub(crate) const LIVE_LOOKUP_TTL: Duration = Duration::from_secs(30);

/// Live lookups that listed nothing: by resource, then namespace (`""` for cluster scope), when.
#[derive(Default)]
pub(crate) struct EmptyLookups(std::sync::Mutex<HashMap<&'static str, HashMap<String, Instant>>>);

impl EmptyLookups {
    fn lookups(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, HashMap<String, Instant>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a lookup of `resource` in `namespace` listed nothing within the TTL.
    fn recent(&self, resource: &'static str, namespace: Option<&str>) -> bool {
        let lookups = self.lookups();
        let at = lookups.get(resource).and_then(|namespaces| namespaces.get(namespace.unwrap_or_default()));
        at.is_some_and(|at| at.elapsed() < LIVE_LOOKUP_TTL)
    }

    fn record(&self, resource: &'static str, namespace: Option<&str>) {
        let mut lookups = self.lookups();
        let namespaces = lookups.entry(resource).or_default();
        // Namespaces come and go: expired entries are dropped whenever one is added.
        namespaces.retain(|_, at| at.elapsed() < LIVE_LOOKUP_TTL);
        namespaces.insert(namespace.unwrap_or_default().to_string(), Instant::now());
    }
}

impl StoreCluster {
    fn info(resource: &GroupVersionResource) -> Result<&'static ResourceInfo, ClusterError> {
        ApiServer::resource(&resource.group, &resource.version, &resource.resource).map_err(|_| {
            ClusterError::Forbidden(format!(
                "{}/{}/{} is not a built-in resource policies may read",
                resource.group, resource.version, resource.resource
            ))
        })
    }

    /// Whether reads of `info` may come from the watch cache: all but `ResourceQuotas`.
    fn cached(info: &ResourceInfo) -> bool {
        !(info.gvk.group.is_empty() && info.plural == "resourcequotas")
    }

    fn saw(&self, revision: Revision) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *seen = (*seen).max(Some(revision));
    }

    /// The cache's objects of `info` in `namespace`, as new as what this call read from the
    /// store; `None` when the cache cannot answer (the store must).
    fn cached_objects(&self, info: &ResourceInfo, namespace: Option<&str>) -> Option<Vec<Arc<Value>>> {
        let seen = *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let rv = seen.map_or(ListRv::Any, ListRv::NotOlderThan);
        let namespace = namespace.filter(|_| info.namespaced);
        self.wait(self.cache.list(info.storage_resource, namespace, rv)).ok().map(|listed| listed.items)
    }

    /// Runs `work` to its end: in place when it needs no waiting (the cache holds what it asks
    /// for), so a policy call attempt on a worker thread goes on; otherwise the attempt ends (the
    /// call is made again on a blocking thread) and this blocks on the runtime.
    fn wait<F: Future>(&self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        if let Some(done) = futures::FutureExt::now_or_never(work.as_mut()) {
            return done;
        }
        capstan_wasm::leave_attempt();
        self.runtime.block_on(work)
    }
}

fn failed(error: &ApiError) -> ClusterError {
    ClusterError::Failed(error.to_string())
}

/// A cached object as the store would have returned it.
fn presented(info: &ResourceInfo, object: &Value) -> String {
    match info.conversion {
        Some(_) => crate::body::json_text(&crate::objects::present(info, object.clone())),
        None => crate::body::json_text(object),
    }
}

impl Cluster for StoreCluster {
    fn get(
        &self,
        resource: &GroupVersionResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<String>, ClusterError> {
        let info = Self::info(resource)?;
        let cached = self.cached_objects(info, namespace).filter(|_| Self::cached(info)).and_then(|items| {
            items.into_iter().find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
        });
        if let Some(object) = cached {
            return Ok(Some(presented(info, &object)));
        }
        let target = ObjectRef { info, namespace: namespace.map(str::to_string), name: name.to_string() };
        let found = self.wait(self.objects.get_kv(&target)).map_err(|e| failed(&e))?;
        if let Some((_, revision)) = &found {
            self.saw(*revision);
        }
        Ok(found.map(|(object, _)| crate::body::json_text(&object)))
    }

    fn list(&self, resource: &GroupVersionResource, namespace: Option<&str>) -> Result<Vec<String>, ClusterError> {
        let info = Self::info(resource)?;
        let cached = self.cached_objects(info, namespace);
        let none_cached = cached.as_ref().is_some_and(Vec::is_empty);
        if let Some(items) = cached.filter(|items| !items.is_empty() && Self::cached(info)) {
            return Ok(items.iter().map(|o| presented(info, o)).collect());
        }
        let resource = info.storage_resource;
        if none_cached && self.empty_lookups.recent(resource, namespace) {
            return Ok(Vec::new());
        }
        let listed = self.wait(self.objects.list(info, namespace, None, None, None)).map_err(|e| failed(&e))?;
        self.saw(listed.revision);
        if none_cached && listed.items.is_empty() {
            self.empty_lookups.record(resource, namespace);
        }
        Ok(listed.items.iter().map(crate::body::json_text).collect())
    }
    fn replace_status(
        &self,
        resource: &GroupVersionResource,
        namespace: Option<&str>,
        name: &str,
        resource_version: &str,
        status: &str,
    ) -> Result<String, ClusterError> {
        if self.dry_run {
            return Err(ClusterError::Forbidden("a dry-run request must not write".to_string()));
        }
        let info = Self::info(resource)?;
        let status: Value = serde_json::from_str(status)
            .map_err(|e| ClusterError::Failed(format!("the status is not valid JSON: {e}")))?;
        let expected = crate::objects::parse_resource_version(resource_version).map_err(|e| failed(&e))?;
        let target = ObjectRef { info, namespace: namespace.map(str::to_string), name: name.to_string() };
        // A write: never within an attempt, whose call made again would write again.
        capstan_wasm::leave_attempt();
        self.runtime.block_on(async {
            let Some((mut object, revision)) = self.objects.get_kv(&target).await.map_err(|e| failed(&e))? else {
                return Err(ClusterError::Conflict(format!("{name} no longer exists")));
            };
            if revision != expected {
                return Err(ClusterError::Conflict(format!(
                    "{name} changed since resource version {resource_version}"
                )));
            }
            meta::metadata_mut(&mut object).remove("resourceVersion");
            object["status"] = status;
            match self.objects.replace(&target, revision, &object).await {
                Ok(stored) => Ok(crate::body::json_text(&stored)),
                Err(ApiError::Conflict(..) | ApiError::NotFound(_)) => {
                    Err(ClusterError::Conflict(format!("{name} changed since resource version {resource_version}")))
                }
                Err(e) => Err(failed(&e)),
            }
        })
    }
}
