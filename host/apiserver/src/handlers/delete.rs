//! Deletion: immediate, or marked with `deletionTimestamp` while finalizers or a pod's grace
//! period hold the object; `DeleteOptions` preconditions and propagation.

#[allow(clippy::wildcard_imports, reason = "the verb modules share the parent's imports")]
use super::*;

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
    let Call { path, query, headers, body, .. } = *call;
    let target = path.named()?;
    let options = delete_options(headers, body, query)?;
    let (object, code) = delete_object(call, &target, &options).await?;
    Ok(json_response(code, &object, &[]))
}

async fn delete_object(
    call: &Call<'_>,
    target: &ObjectRef<'_>,
    options: &DeleteOptions,
) -> ApiResult<(Value, StatusCode)> {
    let server = call.server;
    loop {
        let (current, revision) =
            server.objects.get_kv(target).await?.ok_or_else(|| ApiError::NotFound(target.target()))?;
        check_preconditions(target, &current, options)?;
        let attributes = crate::admission::Attributes::new(crate::admission::Operation::Delete, target);
        let old = strip_version(&current);
        crate::admission::mutate_on_delete(call, &attributes, &old).await?;
        crate::admission::validate(call, &attributes, None, Some(&old)).await?;
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
        // A namespace is emptied by the namespace controller, which then removes the `kubernetes`
        // finalizer (`namespaces/<name>/finalize`) and deletes it again: gone once no finalizer
        // of either kind is left.
        if target.info.gvk.group.is_empty() && target.info.gvk.kind == "Namespace" {
            // Propagation finalizers do not apply to a namespace: its content goes regardless.
            finalizers.retain(|f| f != "foregroundDeletion" && f != "orphan");
            if current.pointer("/metadata/deletionTimestamp").is_none() {
                let mut spec_finalizers: Vec<Value> =
                    current.pointer("/spec/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
                if !spec_finalizers.iter().any(|f| f == "kubernetes") {
                    spec_finalizers.push(json!("kubernetes"));
                }
                marked["spec"]["finalizers"] = json!(spec_finalizers);
            }
            marked["status"] = json!({"phase": "Terminating"});
        }
        let metadata = meta::metadata_mut(&mut marked);
        if finalizers.is_empty() {
            metadata.remove("finalizers");
        } else {
            metadata.insert("finalizers".into(), json!(finalizers));
        }
        let hold = graceful.is_some()
            || capstan_api::meta::held_by_finalizers(target.info.gvk.group, target.info.gvk.kind, &marked);
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
        if marked == strip_version(&current) {
            return Ok((current, StatusCode::ACCEPTED));
        }
        match server.objects.replace(target, revision, &marked).await {
            Ok(updated) => return Ok((updated, StatusCode::ACCEPTED)),
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
        let target = ObjectRef::of(path.info, item);
        match delete_object(call, &target, &options).await {
            Ok((object, _)) => deleted.push(object),
            Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let list =
        json!({"kind": path.info.list_kind, "apiVersion": path.info.group_version(), "metadata": {}, "items": deleted});
    Ok(json_response(StatusCode::OK, &list, &[]))
}
