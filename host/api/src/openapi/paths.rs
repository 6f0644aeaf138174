//! The REST operations of each resource, laid out as kube-apiserver lists them, and their
//! rendering as OpenAPI 3.0 and Swagger 2.0 path items.
//!
//! kubectl reads operations, not just schemas: before sending `fieldValidation` it looks for the
//! PATCH operation whose `x-kubernetes-group-version-kind` is the object's kind and checks that
//! it takes a `fieldValidation` query parameter, and `kubectl apply` only computes a strategic
//! merge patch when that operation accepts `application/strategic-merge-patch+json`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::OpenApiError;
use super::schemas::{DELETE_OPTIONS, PATCH, STATUS, WATCH_EVENT, list_definition};
use crate::registry::{GroupVersionKind, ResourceInfo, Subresource};

/// The content types a PATCH accepts, each with its own semantics.
const PATCH_TYPES: [&str; 4] = [
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
/// What object responses can be encoded as.
const OBJECT_TYPES: [&str; 2] = ["application/json", "application/yaml"];
/// What watch responses are streamed as.
const WATCH_TYPES: [&str; 2] = ["application/json", "application/json;stream=watch"];

/// kube-apiserver's name for what an operation does (`x-kubernetes-action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Get,
    List,
    Watch,
    WatchList,
    Post,
    Put,
    Patch,
    Delete,
    DeleteCollection,
    Connect,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::List => "list",
            Action::Watch => "watch",
            Action::WatchList => "watchlist",
            Action::Post => "post",
            Action::Put => "put",
            Action::Patch => "patch",
            Action::Delete => "delete",
            Action::DeleteCollection => "deletecollection",
            Action::Connect => "connect",
        }
    }

    /// The start of the operation's description; the kind follows.
    fn summary(self) -> &'static str {
        match self {
            Action::Get => "read the specified",
            Action::List => "list or watch objects of kind",
            Action::Watch => "watch changes to an object of kind",
            Action::WatchList => "watch individual changes to a list of",
            Action::Post => "create a",
            Action::Put => "replace the specified",
            Action::Patch => "partially update the specified",
            Action::Delete => "delete a",
            Action::DeleteCollection => "delete collection of",
            Action::Connect => "connect to",
        }
    }
}

/// Where a parameter travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum In {
    Path,
    Query,
}

/// A path or query parameter.
#[derive(Debug)]
struct Param {
    name: &'static str,
    location: In,
    /// JSON type: `string`, `integer` or `boolean`.
    ty: &'static str,
    description: &'static str,
}

const fn query(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param { name, location: In::Query, ty, description }
}

const NAMESPACE: Param = Param {
    name: "namespace",
    location: In::Path,
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
};
const NAME: Param = Param { name: "name", location: In::Path, ty: "string", description: "name of the object" };
const PRETTY: Param = query("pretty", "string", "If 'true', then the output is pretty printed.");
const DRY_RUN: Param =
    query("dryRun", "string", "When present, indicates that modifications should not be persisted. Valid values: All.");
const FIELD_MANAGER: Param =
    query("fieldManager", "string", "A name associated with the actor or entity making these changes.");
const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    "string",
    "How the server handles unknown and duplicate fields in the request: Ignore, Warn or Strict.",
);
const FORCE: Param = query("force", "boolean", "Force an apply request to take fields owned by other managers.");
const LABEL_SELECTOR: Param = query("labelSelector", "string", "Restrict the returned objects by their labels.");
const FIELD_SELECTOR: Param = query("fieldSelector", "string", "Restrict the returned objects by their fields.");
const LIMIT: Param = query("limit", "integer", "The maximum number of objects to return in one list call.");
const CONTINUE: Param =
    query("continue", "string", "The continue token of a previous list call, to fetch the next chunk.");
const RESOURCE_VERSION: Param =
    query("resourceVersion", "string", "Which version of the objects to serve or watch from.");
const RESOURCE_VERSION_MATCH: Param =
    query("resourceVersionMatch", "string", "How resourceVersion is applied to list calls.");
const TIMEOUT_SECONDS: Param = query("timeoutSeconds", "integer", "Timeout for the list/watch call.");
const WATCH: Param =
    query("watch", "boolean", "Watch for changes to the described resources and return them as a stream.");
const ALLOW_WATCH_BOOKMARKS: Param =
    query("allowWatchBookmarks", "boolean", "Requests watch events with type BOOKMARK.");
const SEND_INITIAL_EVENTS: Param =
    query("sendInitialEvents", "boolean", "Start a watch with synthetic events for the objects that already exist.");
const GRACE_PERIOD_SECONDS: Param =
    query("gracePeriodSeconds", "integer", "Seconds before the object should be deleted.");
const PROPAGATION_POLICY: Param = query(
    "propagationPolicy",
    "string",
    "Whether and how garbage collection is performed: Orphan, Background or Foreground.",
);
const ORPHAN_DEPENDENTS: Param = query("orphanDependents", "boolean", "Deprecated: use propagationPolicy.");

const READ_PARAMS: &[&Param] = &[&PRETTY];
const LIST_PARAMS: &[&Param] = &[
    &PRETTY,
    &ALLOW_WATCH_BOOKMARKS,
    &CONTINUE,
    &FIELD_SELECTOR,
    &LABEL_SELECTOR,
    &LIMIT,
    &RESOURCE_VERSION,
    &RESOURCE_VERSION_MATCH,
    &SEND_INITIAL_EVENTS,
    &TIMEOUT_SECONDS,
    &WATCH,
];
const WRITE_PARAMS: &[&Param] = &[&PRETTY, &DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION];
const PATCH_PARAMS: &[&Param] = &[&PRETTY, &DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION, &FORCE];
const DELETE_PARAMS: &[&Param] = &[&PRETTY, &DRY_RUN, &GRACE_PERIOD_SECONDS, &ORPHAN_DEPENDENTS, &PROPAGATION_POLICY];
const DELETE_COLLECTION_PARAMS: &[&Param] = &[
    &PRETTY,
    &CONTINUE,
    &DRY_RUN,
    &FIELD_SELECTOR,
    &GRACE_PERIOD_SECONDS,
    &LABEL_SELECTOR,
    &LIMIT,
    &ORPHAN_DEPENDENTS,
    &PROPAGATION_POLICY,
    &RESOURCE_VERSION,
    &RESOURCE_VERSION_MATCH,
    &SEND_INITIAL_EVENTS,
    &TIMEOUT_SECONDS,
];

/// Where, relative to a resource, an operation is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// `…/namespaces/{namespace}/pods`
    Collection,
    /// `…/namespaces/{namespace}/pods/{name}`
    Item,
    /// `…/pods`, across namespaces.
    AllNamespaces,
    /// `…/watch/namespaces/{namespace}/pods`
    WatchCollection,
    /// `…/watch/namespaces/{namespace}/pods/{name}`
    WatchItem,
    /// `…/watch/pods`, across namespaces.
    WatchAllNamespaces,
}

/// How kube-apiserver serves one verb of a resource at one place, and how it names the
/// operation: `{op}{Group}{Version}{infix}[Namespaced]{Kind}{suffix}`.
struct Route {
    verb: &'static str,
    place: Place,
    method: &'static str,
    action: Action,
    op: &'static str,
    infix: &'static str,
    suffix: &'static str,
}

const fn route(verb: &'static str, place: Place, method: &'static str, action: Action, op: &'static str) -> Route {
    Route { verb, place, method, action, op, infix: "", suffix: "" }
}

const ROUTES: &[Route] = &[
    route("list", Place::Collection, "get", Action::List, "list"),
    route("create", Place::Collection, "post", Action::Post, "create"),
    Route {
        infix: "Collection",
        ..route("deletecollection", Place::Collection, "delete", Action::DeleteCollection, "delete")
    },
    route("get", Place::Item, "get", Action::Get, "read"),
    route("update", Place::Item, "put", Action::Put, "replace"),
    route("patch", Place::Item, "patch", Action::Patch, "patch"),
    route("delete", Place::Item, "delete", Action::Delete, "delete"),
    Route { suffix: "ForAllNamespaces", ..route("list", Place::AllNamespaces, "get", Action::List, "list") },
    Route { suffix: "List", ..route("watch", Place::WatchCollection, "get", Action::WatchList, "watch") },
    route("watch", Place::WatchItem, "get", Action::Watch, "watch"),
    Route {
        suffix: "ListForAllNamespaces",
        ..route("watch", Place::WatchAllNamespaces, "get", Action::WatchList, "watch")
    },
];

/// How a subresource verb is served when the subresource is an object (status, scale, binding).
const OBJECT_SUBRESOURCE_ROUTES: &[Route] = &[
    route("get", Place::Item, "get", Action::Get, "read"),
    route("update", Place::Item, "put", Action::Put, "replace"),
    route("patch", Place::Item, "patch", Action::Patch, "patch"),
    route("create", Place::Item, "post", Action::Post, "create"),
];

/// How a subresource verb is served when the subresource is a stream (log, exec, attach).
const STREAM_SUBRESOURCE_ROUTES: &[Route] = &[
    Route { infix: "Get", ..route("get", Place::Item, "get", Action::Connect, "connect") },
    Route { infix: "Post", ..route("create", Place::Item, "post", Action::Connect, "connect") },
];

/// What an operation sends in its request body.
#[derive(Debug)]
enum Body {
    /// An object of the named definition.
    Object(String),
    /// A patch, in any of [`PATCH_TYPES`].
    Patch,
    /// Optional `DeleteOptions`.
    DeleteOptions,
}

/// What an operation answers with.
#[derive(Debug)]
enum Reply {
    /// An object of the named definition.
    Object(String),
    /// A stream of watch events.
    Watch,
    /// Raw text or a stream (logs, exec).
    Text,
}

/// One HTTP operation of one resource.
#[derive(Debug)]
pub(super) struct Operation {
    method: &'static str,
    id: String,
    description: String,
    tag: String,
    action: Action,
    gvk: GroupVersionKind,
    params: Vec<&'static Param>,
    body: Option<Body>,
    reply: Reply,
    /// Status codes of a success.
    codes: &'static [&'static str],
}

/// The operations served at one path.
#[derive(Debug)]
pub(super) struct PathItem {
    pub path: String,
    pub operations: Vec<Operation>,
}

/// Every path a resource is served at, with its operations. `kinds` names the definition of
/// each kind a subresource accepts.
pub(super) fn resource_paths(
    info: &ResourceInfo,
    kinds: &HashMap<GroupVersionKind, String>,
) -> Result<Vec<PathItem>, OpenApiError> {
    let at = Locator::new(info);
    let mut items: Vec<PathItem> = Vec::new();
    for route in ROUTES.iter().filter(|r| info.supports(r.verb)) {
        let Some(path) = at.path(route.place) else { continue };
        let all_namespaces = matches!(route.place, Place::AllNamespaces | Place::WatchAllNamespaces);
        let operation = at.operation(route, info.gvk, info.definition, None, all_namespaces);
        push(&mut items, path, operation);
    }
    for subresource in info.subresources {
        let (gvk, definition, routes) = subresource_kind(info, subresource, kinds)?;
        let path = format!("{}/{}", at.item, subresource.name);
        for route in routes.iter().filter(|r| subresource.verbs.contains(&r.verb)) {
            push(&mut items, path.clone(), at.operation(route, gvk, &definition, Some(subresource.name), false));
        }
    }
    Ok(items)
}

/// The kind and definition a subresource exchanges, and how its verbs are served. A subresource
/// without its own kind is the parent object itself when it can be written (status), and a
/// stream otherwise (log, exec).
fn subresource_kind(
    info: &ResourceInfo,
    subresource: &Subresource,
    kinds: &HashMap<GroupVersionKind, String>,
) -> Result<(GroupVersionKind, String, &'static [Route]), OpenApiError> {
    match subresource.kind {
        Some(gvk) => {
            let definition = kinds.get(&gvk).ok_or_else(|| OpenApiError::UnknownSubresourceKind {
                resource: info.plural.to_string(),
                subresource: subresource.name.to_string(),
                kind: gvk.kind.to_string(),
            })?;
            Ok((gvk, definition.clone(), OBJECT_SUBRESOURCE_ROUTES))
        }
        None if subresource.verbs.iter().any(|v| matches!(*v, "update" | "patch")) => {
            Ok((info.gvk, info.definition.to_string(), OBJECT_SUBRESOURCE_ROUTES))
        }
        None => Ok((info.gvk, info.definition.to_string(), STREAM_SUBRESOURCE_ROUTES)),
    }
}

fn push(items: &mut Vec<PathItem>, path: String, operation: Operation) {
    match items.iter_mut().find(|item| item.path == path) {
        Some(item) => item.operations.push(operation),
        None => items.push(PathItem { path, operations: vec![operation] }),
    }
}

/// The paths of one resource and the names its operations are built from.
struct Locator<'a> {
    info: &'a ResourceInfo,
    /// `/api/v1` or `/apis/apps/v1`.
    prefix: String,
    /// `/namespaces/{namespace}` for namespaced resources.
    scope: &'static str,
    item: String,
    /// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`.
    group_version: String,
    /// `core_v1`, `rbacAuthorization_v1`.
    tag: String,
}

impl<'a> Locator<'a> {
    fn new(info: &'a ResourceInfo) -> Self {
        let gvk = info.gvk;
        let prefix = if gvk.group.is_empty() {
            format!("/api/{}", gvk.version)
        } else {
            format!("/apis/{}/{}", gvk.group, gvk.version)
        };
        let scope = if info.namespaced { "/namespaces/{namespace}" } else { "" };
        let item = format!("{prefix}{scope}/{}/{{name}}", info.plural);
        // kube-apiserver names groups without their `.k8s.io` suffix, in camel case.
        let words: Vec<&str> = if gvk.group.is_empty() {
            vec!["core"]
        } else {
            gvk.group.trim_end_matches(".k8s.io").split('.').collect()
        };
        let group: String = words.iter().map(|w| capitalize(w)).collect();
        let mut tag_group = group.clone();
        if let Some(first) = tag_group.get_mut(..1) {
            first.make_ascii_lowercase();
        }
        Locator {
            info,
            group_version: format!("{group}{}", capitalize(gvk.version)),
            tag: format!("{tag_group}_{}", gvk.version),
            prefix,
            scope,
            item,
        }
    }

    /// The path of `place`, if the resource's scope has one.
    fn path(&self, place: Place) -> Option<String> {
        let (prefix, scope, plural) = (&self.prefix, self.scope, self.info.plural);
        let namespaced = self.info.namespaced;
        Some(match place {
            Place::Collection => format!("{prefix}{scope}/{plural}"),
            Place::Item => self.item.clone(),
            Place::AllNamespaces if namespaced => format!("{prefix}/{plural}"),
            Place::WatchCollection => format!("{prefix}/watch{scope}/{plural}"),
            Place::WatchItem => format!("{prefix}/watch{scope}/{plural}/{{name}}"),
            Place::WatchAllNamespaces if namespaced => format!("{prefix}/watch/{plural}"),
            Place::AllNamespaces | Place::WatchAllNamespaces => return None,
        })
    }

    fn operation(
        &self,
        route: &Route,
        gvk: GroupVersionKind,
        definition: &str,
        subresource: Option<&str>,
        all_namespaces: bool,
    ) -> Operation {
        let namespaced = self.info.namespaced && !all_namespaces;
        let parent = self.info.gvk.kind;
        let id = format!(
            "{}{}{}{}{parent}{}{}",
            route.op,
            self.group_version,
            route.infix,
            if namespaced { "Namespaced" } else { "" },
            subresource.map(capitalize).unwrap_or_default(),
            route.suffix,
        );
        let description = match subresource {
            Some(name) => format!("{} {parent} {name}", route.action.summary()),
            None => format!("{} {parent}", route.action.summary()),
        };
        let mut params: Vec<&'static Param> = Vec::new();
        if namespaced {
            params.push(&NAMESPACE);
        }
        if matches!(route.place, Place::Item | Place::WatchItem) {
            params.push(&NAME);
        }
        let object = || definition.to_string();
        let (extra, body, reply, codes): (&[&Param], _, _, &[&str]) = match route.action {
            Action::Get => (READ_PARAMS, None, Reply::Object(object()), &["200"]),
            Action::List => {
                (LIST_PARAMS, None, Reply::Object(list_definition(definition, self.info.list_kind)), &["200"])
            }
            Action::Watch | Action::WatchList => (LIST_PARAMS, None, Reply::Watch, &["200"]),
            Action::Post => {
                (WRITE_PARAMS, Some(Body::Object(object())), Reply::Object(object()), &["200", "201", "202"])
            }
            Action::Put => (WRITE_PARAMS, Some(Body::Object(object())), Reply::Object(object()), &["200", "201"]),
            Action::Patch => (PATCH_PARAMS, Some(Body::Patch), Reply::Object(object()), &["200", "201"]),
            Action::Delete => (DELETE_PARAMS, Some(Body::DeleteOptions), Reply::Object(STATUS.into()), &["200", "202"]),
            Action::DeleteCollection => {
                (DELETE_COLLECTION_PARAMS, Some(Body::DeleteOptions), Reply::Object(STATUS.into()), &["200"])
            }
            Action::Connect => (&[], None, Reply::Text, &["200"]),
        };
        params.extend_from_slice(extra);
        Operation {
            method: route.method,
            id,
            description,
            tag: self.tag.clone(),
            action: route.action,
            gvk,
            params,
            body,
            reply,
            codes,
        }
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn status_text(code: &str) -> &'static str {
    match code {
        "201" => "Created",
        "202" => "Accepted",
        _ => "OK",
    }
}

/// Which OpenAPI dialect a path item is rendered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    /// OpenAPI 3.0: `requestBody`, `content`, `#/components/schemas/`.
    V3,
    /// Swagger 2.0: body parameters, `consumes`/`produces`, `#/definitions/`.
    V2,
}

impl Dialect {
    fn reference(self, definition: &str) -> Value {
        match self {
            Dialect::V3 => json!({"$ref": format!("#/components/schemas/{definition}")}),
            Dialect::V2 => json!({"$ref": format!("#/definitions/{definition}")}),
        }
    }
}

/// The path item object of `item` (method to operation).
pub(super) fn render(item: &PathItem, dialect: Dialect) -> Value {
    let operations: Map<String, Value> =
        item.operations.iter().map(|op| (op.method.to_string(), render_operation(op, dialect))).collect();
    Value::Object(operations)
}

fn render_operation(op: &Operation, dialect: Dialect) -> Value {
    let mut parameters: Vec<Value> = op.params.iter().map(|p| render_param(p, dialect)).collect();
    let mut rendered = json!({
        "operationId": op.id,
        "description": op.description,
        "tags": [op.tag],
        "x-kubernetes-action": op.action.name(),
        // Operations carry one GVK object, not the list definitions carry: kubectl's lookups
        // decode it as a single map.
        "x-kubernetes-group-version-kind": {"group": op.gvk.group, "version": op.gvk.version, "kind": op.gvk.kind},
    });
    let (reply_schema, produces): (Value, &[&str]) = match &op.reply {
        Reply::Object(definition) => (dialect.reference(definition), &OBJECT_TYPES),
        Reply::Watch => (dialect.reference(WATCH_EVENT), &WATCH_TYPES),
        Reply::Text => (json!({"type": "string"}), &["*/*"]),
    };
    let mut responses = Map::new();
    for code in op.codes {
        let response = match dialect {
            Dialect::V3 => {
                let content: Map<String, Value> =
                    produces.iter().map(|ty| ((*ty).to_string(), json!({"schema": reply_schema}))).collect();
                json!({"description": status_text(code), "content": content})
            }
            Dialect::V2 => json!({"description": status_text(code), "schema": reply_schema}),
        };
        responses.insert((*code).to_string(), response);
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    let body = op.body.as_ref().map(|body| match body {
        Body::Object(definition) => (dialect.reference(definition), &["*/*"][..], true),
        Body::Patch => (dialect.reference(PATCH), &PATCH_TYPES[..], true),
        Body::DeleteOptions => (dialect.reference(DELETE_OPTIONS), &["*/*"][..], false),
    });
    let Value::Object(fields) = &mut rendered else { return rendered };
    match dialect {
        Dialect::V3 => {
            if let Some((schema, consumes, required)) = body {
                let content: Map<String, Value> =
                    consumes.iter().map(|ty| ((*ty).to_string(), json!({"schema": schema}))).collect();
                fields.insert("requestBody".into(), json!({"content": content, "required": required}));
            }
        }
        Dialect::V2 => {
            let consumes = body.as_ref().map_or(&["*/*"][..], |(_, consumes, _)| consumes);
            if let Some((schema, _, required)) = &body {
                parameters.push(json!({"name": "body", "in": "body", "required": required, "schema": schema}));
            }
            fields.insert("consumes".into(), json!(consumes));
            fields.insert("produces".into(), json!(produces));
            fields.insert("schemes".into(), json!(["https"]));
        }
    }
    fields.insert("parameters".into(), Value::Array(parameters));
    fields.insert("responses".into(), Value::Object(responses));
    rendered
}

fn render_param(param: &Param, dialect: Dialect) -> Value {
    let mut schema = Map::new();
    schema.insert("type".into(), json!(param.ty));
    let mut fields = Map::new();
    fields.insert("name".into(), json!(param.name));
    fields.insert("description".into(), json!(param.description));
    match param.location {
        In::Path => {
            fields.insert("in".into(), json!("path"));
            fields.insert("required".into(), json!(true));
        }
        In::Query => {
            fields.insert("in".into(), json!("query"));
            // Query parameters are single-valued; kube-apiserver says so with `uniqueItems`.
            schema.insert("uniqueItems".into(), json!(true));
        }
    }
    match dialect {
        Dialect::V3 => {
            fields.insert("schema".into(), Value::Object(schema));
        }
        Dialect::V2 => fields.extend(schema),
    }
    Value::Object(fields)
}
