//! Lists: from the watch cache for first pages, from the store at a fixed revision for later
//! pages, with label and field selectors, `limit` and `continue`.

#[allow(clippy::wildcard_imports, reason = "the verb modules share the parent's imports")]
use super::*;

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
        return Ok(list_response(path, query, headers, &items.iter().collect::<Vec<_>>(), listed.revision, None, 0));
    }
    // With selectors, read pages until `limit` matching items are found.
    let mut items = Vec::new();
    let page = if selectors.filtering() { limit.map(|l| l.max(500)) } else { limit };
    loop {
        let listed = server.objects.list(info, namespace, revision, from.take(), page).await?;
        revision = Some(listed.revision);
        let count = listed.items.len();
        let mut page_full = None;
        for (index, item) in listed.items.into_iter().enumerate() {
            if !selectors.matches(&item) {
                continue;
            }
            items.push(item);
            if limit.is_some_and(|l| items.len() >= l) && (index + 1 < count || listed.more) {
                page_full = Some(index);
                break;
            }
        }
        let (token, remaining) = match (page_full, listed.last_key) {
            (Some(index), _) => {
                let key = ObjectRef::of(info, &items[items.len() - 1]).key();
                let remaining = if selectors.filtering() { 0 } else { listed.remaining + (count - index - 1) as u64 };
                (Some(encode_continue(listed.revision, &key)), remaining)
            }
            (None, Some(mut key)) if listed.more => {
                key.push(0);
                from = Some(key);
                continue;
            }
            (None, _) => (None, 0),
        };
        let items: Vec<&Value> = items.iter().collect();
        return Ok(list_response(path, query, headers, &items, listed.revision, token, remaining));
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
    // As kube-apiserver's watch cache does, `resourceVersion=0` (what informers list with) is
    // answered whole, `limit` ignored: later pages would have to read the store at the first
    // page's revision.
    let limit = if matches!(rv, ListRv::Any) { None } else { limit };
    let cached = match server.cache.list(path.info.storage_resource, path.namespace.as_deref(), rv).await {
        Ok(cached) => cached,
        Err(CacheError::NotCached(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Converted resources are presented before selectors see them; the others are served from
    // the cache's own objects without copying them.
    let presented: Vec<Value> = match path.info.conversion {
        Some(_) => cached.items.iter().map(|o| objects::present(path.info, Value::clone(o))).collect(),
        None => Vec::new(),
    };
    let all: Vec<&Value> = match path.info.conversion {
        Some(_) => presented.iter().collect(),
        None => cached.items.iter().map(|o| &**o).collect(),
    };
    let matching: Vec<&Value> = all.into_iter().filter(|o| selectors.matches(o)).collect();
    let (page, token) = match limit {
        Some(limit) if matching.len() > limit => {
            let key = ObjectRef::of(path.info, matching[limit - 1]).key();
            (&matching[..limit], Some(encode_continue(cached.revision, &key)))
        }
        _ => (&matching[..], None),
    };
    let remaining = (matching.len() - page.len()) as u64;
    Ok(Some(list_response(path, query, headers, page, cached.revision, token, remaining)))
}

/// A list body, serialised straight from borrowed objects.
#[derive(serde::Serialize)]
struct List<'a> {
    kind: &'a str,
    #[serde(rename = "apiVersion")]
    api_version: String,
    metadata: Value,
    items: &'a [&'a Value],
}

fn list_response(
    path: &ResourcePath<'_>,
    query: &Query,
    headers: &HeaderMap,
    items: &[&Value],
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
        let owned: Vec<Value> = items.iter().map(|o| (*o).clone()).collect();
        let table = table::table(path.info, &owned, metadata, &table_options(query));
        return json_response(StatusCode::OK, &table, &[]);
    }
    let list = List { kind: path.info.list_kind, api_version: path.info.group_version(), metadata, items };
    match serde_json::to_vec(&list) {
        Ok(body) => raw_json_response(StatusCode::OK, body),
        Err(e) => ApiError::Internal(format!("cannot encode the list: {e}")).into_response(),
    }
}
