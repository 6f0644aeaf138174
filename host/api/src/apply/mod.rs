//! Kubernetes server-side apply and field ownership, as pure functions over JSON objects.
//!
//! Every object carries `metadata.managedFields`: which manager owns which fields, and whether
//! it got them by applying a configuration (`Apply`) or by another write (`Update`). Two entry
//! points keep it current:
//!
//! - [`apply`] merges an applied configuration into the live object (or creates it), removes
//!   what the manager applied before but no longer does, and refuses to change fields another
//!   manager owns unless forced: the `application/apply-patch+yaml` PATCH.
//! - [`track_update`] records which fields any other write (create, update, patch) changed, and
//!   gives them to its manager.
//!
//! Both are steered by the kind's schema ([`Schema`]): which lists merge by key or by value,
//! which maps are atomic. The field sets are encoded as `FieldsV1` ([`FieldSet`]), the format
//! kubectl and client-go read. Nothing here does I/O or decides defaults, validation,
//! preconditions or HTTP statuses beyond [`ApplyError::status_code`]: the API server does, and
//! passes the manager name (its own defaults such as `kubectl-client-side-apply` included).
//!
//! Semantics follow <https://kubernetes.io/docs/reference/using-api/server-side-apply/> and
//! structured-merge-diff; module docs note where they differ.

mod fieldset;
mod items;
mod managed;
mod merge;
mod ownership;
mod schema;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

pub use fieldset::{FieldSet, FieldsError};
pub use managed::Operation;
pub use schema::Schema;

use fieldset::{PathElement, display_path};
use managed::{Entry, describe_owner};
use ownership::{Changes, applied_fields, changes};

/// The manager kube-apiserver gives the fields of an object that had no managed fields when it
/// was first applied to.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Fields the server sets on every object. An applied configuration never changes them and no
/// manager owns them.
const SERVER_FIELDS: &[&[&str]] = &[
    &["metadata", "managedFields"],
    &["metadata", "resourceVersion"],
    &["metadata", "generation"],
    &["metadata", "uid"],
    &["metadata", "creationTimestamp"],
    &["metadata", "selfLink"],
];

/// The managed fields themselves, which the functions here read and write apart from the object.
const MANAGED_FIELDS: &[&[&str]] = &[&["metadata", "managedFields"]];

/// Paths kube-apiserver strips from the set a write records, leaving what is below them (its
/// `stripMeta` set): identity fields every configuration repeats, and server-set metadata.
const UNOWNED: &[&[&str]] = &[
    &["apiVersion"],
    &["kind"],
    &["metadata"],
    &["metadata", "name"],
    &["metadata", "namespace"],
    &["metadata", "creationTimestamp"],
    &["metadata", "selfLink"],
    &["metadata", "uid"],
    &["metadata", "clusterName"],
    &["metadata", "generation"],
    &["metadata", "managedFields"],
    &["metadata", "resourceVersion"],
];

/// Who makes a write, when, and how the kind's fields merge.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    /// The field manager (`fieldManager` query parameter, or the server's default for the client).
    pub manager: &'a str,
    /// The API version the request was made through (`apps/v1`).
    pub api_version: &'a str,
    /// The subresource written (`status`, `scale`); `None` for the object itself.
    pub subresource: Option<&'a str>,
    /// When the write happens, RFC 3339 in UTC (`2025-01-31T12:00:00Z`).
    pub time: &'a str,
    /// The kind's schema.
    pub schema: Schema<'a>,
    /// Top-level or nested paths this write may not change (upstream's reset fields): an apply
    /// leaves them as they are and no one gains or loses them. `&[&["status"]]` for the main
    /// resource of a kind with a status subresource; for the status subresource, the fields its
    /// strategy resets (such as `&[&["spec"], &["metadata", "labels"]]`).
    pub reset_fields: &'a [&'a [&'a str]],
}

/// A field an apply would change that another manager owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The owning manager's name.
    pub manager: String,
    /// How it came to own the field.
    pub operation: Operation,
    /// The API version of its entry.
    pub api_version: String,
    /// The subresource it wrote through, if any.
    pub subresource: Option<String>,
    /// The field, as kube-apiserver prints it: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="nginx"].image`.
    pub field_path: String,
}

impl Conflict {
    /// The owner as conflict messages name it: `"kubectl-client-side-apply" using apps/v1`.
    #[must_use]
    pub fn owner(&self) -> String {
        describe_owner(&self.manager, self.operation, &self.api_version, self.subresource.as_deref())
    }

    /// The message of this conflict's `FieldManagerConflict` status cause:
    /// `conflict with "kubectl-client-side-apply" using apps/v1`.
    #[must_use]
    pub fn message(&self) -> String {
        format!("conflict with {}", self.owner())
    }

    fn identity(&self) -> (&str, Operation, &str, Option<&str>) {
        (&self.manager, self.operation, &self.api_version, self.subresource.as_deref())
    }
}

/// Why an apply was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The configuration cannot be applied as written.
    #[error("{0}")]
    Invalid(String),
    /// The apply would change fields other managers own; nothing was changed. Apply again with
    /// `force`, drop the fields from the configuration, or set them to the live values.
    #[error("{}", conflict_summary(.0))]
    Conflicts(Vec<Conflict>),
    /// The stored object's `metadata.managedFields` cannot be read.
    #[error(
        "failed to decode managed fields: {0}; clear them with a merge patch setting metadata.managedFields to [{{}}]"
    )]
    CorruptManagedFields(String),
}

impl ApplyError {
    /// The HTTP status kube-apiserver answers with: 409 Conflict for conflicts, 400 Bad Request
    /// for an invalid configuration, 500 for a stored object it cannot read.
    #[must_use]
    pub fn status_code(&self) -> u16 {
        match self {
            ApplyError::Invalid(_) => 400,
            ApplyError::Conflicts(_) => 409,
            ApplyError::CorruptManagedFields(_) => 500,
        }
    }
}

/// kube-apiserver's conflict message: the one conflict inline, or the conflicts grouped by owner.
fn conflict_summary(conflicts: &[Conflict]) -> String {
    if let [conflict] = conflicts {
        return format!("Apply failed with 1 conflict: {}: {}", conflict.message(), conflict.field_path);
    }
    let mut sorted: Vec<&Conflict> = conflicts.iter().collect();
    sorted.sort_by(|a, b| a.identity().cmp(&b.identity()));
    let mut lines = Vec::new();
    let mut owner = None;
    for conflict in sorted {
        if owner != Some(conflict.identity()) {
            owner = Some(conflict.identity());
            lines.push(format!("conflicts with {}:", conflict.owner()));
        }
        lines.push(format!("- {}", conflict.field_path));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// Applies `config` for `writer.manager` and returns the object to store, with its managed
/// fields updated; `live` is the stored object, or `None` to create it from the configuration.
///
/// Fields the configuration sets take its values; maps and associative lists merge entry by
/// entry. Fields the manager applied before and leaves out now are removed unless another
/// manager owns them. A field whose value would change and that another manager owns is a
/// conflict: the apply fails unless `force`, which moves the field to this manager. Applying the
/// value a field already has shares its ownership instead.
///
/// Server-set metadata in the configuration (`uid`, `resourceVersion`, `generation`,
/// `creationTimestamp`) and the writer's reset fields are ignored: the result keeps the live
/// values, and preconditions such as a `resourceVersion` match are for the caller to check.
pub fn apply(live: Option<&Value>, config: &Value, writer: &Writer<'_>, force: bool) -> Result<Value, ApplyError> {
    check_config(config, writer.api_version)?;
    let config = without(config, SERVER_FIELDS.iter().chain(writer.reset_fields));
    let (live, mut entries) = match live {
        Some(live) => {
            let entries = managed::decode(managed_fields(live)).map_err(ApplyError::CorruptManagedFields)?;
            let live = without(live, MANAGED_FIELDS.iter());
            let entries = if entries.is_empty() { adopt(&live, writer) } else { entries };
            (live, entries)
        }
        None => (Value::Object(Map::new()), Vec::new()),
    };
    let applied = applied_fields(&config, writer.schema).map_err(ApplyError::Invalid)?;
    let mut object = merge::merge(Some(&live), &config, writer.schema).map_err(ApplyError::Invalid)?;

    let mine = entries
        .iter()
        .position(|entry| entry.is(writer.manager, Operation::Apply, writer.api_version, writer.subresource));
    let others = |index: usize| Some(index) != mine;
    let last = mine.map(|index| entries[index].fields.clone()).unwrap_or_default();
    let mut kept = applied.clone();
    entries.iter().enumerate().filter(|(index, _)| others(*index)).for_each(|(_, entry)| kept.union(&entry.fields));
    merge::prune(&mut object, writer.schema, &last, &kept);

    let changes = tracked_changes(&live, &object, writer);
    let touched = changes.touched();
    let conflicts = conflicts(entries.iter().enumerate().filter(|(index, _)| others(*index)).map(|(_, e)| e), &touched);
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for (_, entry) in entries.iter_mut().enumerate().filter(|(index, _)| others(*index)) {
        entry.fields.difference(&touched);
        entry.fields.difference(&changes.removed);
    }

    let mut fields = applied;
    strip_unowned(&mut fields);
    let object_changed = object != live;
    if let Some(entry) = mine.map(|index| &mut entries[index]) {
        if object_changed || entry.fields != fields {
            entry.time = Some(writer.time.to_string());
        }
        entry.fields = fields;
        entry.api_version = writer.api_version.to_string();
    } else {
        entries.push(new_entry(writer, Operation::Apply, fields));
    }
    entries.retain(|entry| !entry.fields.is_empty());
    set_managed_fields(&mut object, entries);
    Ok(object)
}

/// Records a write other than apply: the fields that changed from `old` (`None` on create) to
/// `new` move to `writer.manager`'s `Update` entry, and fields that were removed leave every
/// entry. Returns `new` with its managed fields updated.
///
/// A write may set `metadata.managedFields` itself: a list of entries replaces the stored ones,
/// and `[]` or `[{}]` clears them; otherwise, and always through a subresource, the stored
/// entries carry over. Entries that cannot be read are dropped, so tracking starts afresh.
#[must_use]
pub fn track_update(old: Option<&Value>, new: &Value, writer: &Writer<'_>) -> Value {
    let mut entries = entries_for_update(old, new, writer.subresource.is_some());
    let old = old.map_or_else(|| Value::Object(Map::new()), |old| without(old, MANAGED_FIELDS.iter()));
    let mut object = without(new, MANAGED_FIELDS.iter());
    record_update(&mut entries, &old, &object, writer);
    set_managed_fields(&mut object, entries);
    object
}

/// The entries an update starts from: those the write sets, else the stored ones.
fn entries_for_update(old: Option<&Value>, new: &Value, through_subresource: bool) -> Vec<Entry> {
    let stored = || old.and_then(|old| managed::decode(managed_fields(old)).ok()).unwrap_or_default();
    let requested = managed_fields(new);
    if through_subresource {
        return stored();
    }
    if managed::is_reset(requested) {
        return Vec::new();
    }
    match managed::decode(requested) {
        Ok(entries) if !entries.is_empty() => entries,
        _ => stored(),
    }
}

fn record_update(entries: &mut Vec<Entry>, old: &Value, new: &Value, writer: &Writer<'_>) {
    let changes = tracked_changes(old, new, writer);
    let mut touched = changes.touched();
    for entry in entries.iter_mut() {
        entry.fields.difference(&touched);
        entry.fields.difference(&changes.removed);
    }
    strip_unowned(&mut touched);
    if !touched.is_empty() {
        let mine = entries
            .iter_mut()
            .find(|entry| entry.is(writer.manager, Operation::Update, writer.api_version, writer.subresource));
        match mine {
            Some(entry) => {
                entry.fields.union(&touched);
                entry.time = Some(writer.time.to_string());
            }
            None => entries.push(new_entry(writer, Operation::Update, touched)),
        }
    }
    entries.retain(|entry| !entry.fields.is_empty());
}

/// Gives every field of an object that has no managed fields to [`BEFORE_FIRST_APPLY`], so
/// that the first apply conflicts with values it did not set rather than silently taking them.
fn adopt(live: &Value, writer: &Writer<'_>) -> Vec<Entry> {
    let mut entries = Vec::new();
    let adopter = Writer { manager: BEFORE_FIRST_APPLY, ..*writer };
    record_update(&mut entries, &Value::Object(Map::new()), live, &adopter);
    entries
}

/// What changed, leaving out server-set fields and the writer's reset fields.
fn tracked_changes(old: &Value, new: &Value, writer: &Writer<'_>) -> Changes {
    let mut changes = changes(old, new, writer.schema);
    for path in SERVER_FIELDS.iter().chain(writer.reset_fields) {
        changes.forget(&fields_path(path));
    }
    changes
}

/// The conflicts of `touched` with `entries`, ordered by owner then field.
fn conflicts<'e>(entries: impl Iterator<Item = &'e Entry>, touched: &FieldSet) -> Vec<Conflict> {
    let mut owners: Vec<&Entry> = entries.collect();
    owners.sort_by(|a, b| {
        (&a.manager, a.operation, &a.api_version, &a.subresource).cmp(&(
            &b.manager,
            b.operation,
            &b.api_version,
            &b.subresource,
        ))
    });
    let mut conflicts = Vec::new();
    for entry in owners {
        for path in entry.fields.intersection(touched).paths() {
            conflicts.push(Conflict {
                manager: entry.manager.clone(),
                operation: entry.operation,
                api_version: entry.api_version.clone(),
                subresource: entry.subresource.clone(),
                field_path: display_path(&path),
            });
        }
    }
    conflicts
}

fn new_entry(writer: &Writer<'_>, operation: Operation, fields: FieldSet) -> Entry {
    Entry {
        manager: writer.manager.to_string(),
        operation,
        api_version: writer.api_version.to_string(),
        time: Some(writer.time.to_string()),
        subresource: writer.subresource.map(str::to_string),
        fields,
    }
}

fn check_config(config: &Value, api_version: &str) -> Result<(), ApplyError> {
    let invalid = |message: String| Err(ApplyError::Invalid(message));
    if !config.is_object() {
        return invalid("an apply configuration must be an object (a YAML mapping) describing one object".into());
    }
    let text = |pointer: &str| config.pointer(pointer).and_then(Value::as_str).filter(|text| !text.is_empty());
    match text("/apiVersion") {
        None => return invalid(format!("the apply configuration has no apiVersion; set apiVersion: {api_version}")),
        Some(version) if version != api_version => {
            return invalid(format!(
                "Incorrect version specified in apply patch. Specified patch version: {version}, expected: {api_version}"
            ));
        }
        Some(_) => {}
    }
    if text("/kind").is_none() {
        return invalid("the apply configuration has no kind; set kind to the kind of the object".into());
    }
    if text("/metadata/name").is_none() {
        return invalid("the apply configuration has no metadata.name; set the name of the object to apply".into());
    }
    if config.pointer("/metadata/managedFields").is_some_and(|managed| !managed.is_null()) {
        return invalid("metadata.managedFields must be nil; remove it from the apply configuration".into());
    }
    Ok(())
}

fn managed_fields(object: &Value) -> Option<&Value> {
    object.pointer("/metadata/managedFields")
}

/// `value` without the fields at `paths`.
fn without<'p>(value: &Value, paths: impl Iterator<Item = &'p &'p [&'p str]>) -> Value {
    let mut value = value.clone();
    for path in paths {
        let Some((field, parents)) = path.split_last() else { continue };
        let parent = parents.iter().try_fold(&mut value, |node, name| node.get_mut(*name));
        if let Some(Value::Object(fields)) = parent {
            // `retain` keeps the order of the remaining keys, which `remove` may not.
            fields.retain(|name, _| name != field);
        }
    }
    value
}

fn strip_unowned(fields: &mut FieldSet) {
    for path in UNOWNED {
        fields.remove_path(&fields_path(path));
    }
}

fn fields_path(path: &[&str]) -> Vec<PathElement> {
    path.iter().map(|name| PathElement::field(name)).collect()
}

/// Stores `entries` as `metadata.managedFields`, or leaves the field out when there are none.
fn set_managed_fields(object: &mut Value, mut entries: Vec<Entry>) {
    if entries.is_empty() {
        return;
    }
    let Some(object) = object.as_object_mut() else { return };
    let metadata = object.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(metadata) = metadata {
        metadata.insert("managedFields".into(), managed::encode(&mut entries));
    }
}
