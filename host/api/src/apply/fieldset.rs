//! Field sets: which fields of an object a manager owns, and their `FieldsV1` encoding.
//!
//! A set is a trie of path elements. `FieldsV1` writes each node as a JSON object keyed by its
//! children's elements (`f:spec`, `k:{"name":"nginx"}`, `v:"a"`, `i:0`); a child that is itself
//! in the set and also has children carries `".": {}`, and a child that is only itself in the set
//! is an empty object. This is the encoding structured-merge-diff writes into
//! `metadata.managedFields[].fieldsV1`, which kubectl and client-go read back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Why a `fieldsV1` value could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    /// A node of the trie is not a JSON object.
    #[error("fieldsV1 must be a tree of JSON objects, found {found} under {at:?}")]
    NotAnObject {
        /// The key whose value had the wrong shape (empty for the root).
        at: String,
        /// What was found instead.
        found: &'static str,
    },
    /// A key has a known prefix (`f:`, `k:`, `v:`, `i:`) but malformed content.
    #[error("fieldsV1 key {key:?} is malformed: {reason}")]
    BadKey {
        /// The key as written.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One step of a field path, kept in its canonical `FieldsV1` spelling so that equal steps compare
/// equal as strings and a set sorts the way it serializes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PathElement(String);

impl PathElement {
    /// A field of a struct or an entry of a map.
    pub(crate) fn field(name: &str) -> Self {
        Self(format!("f:{name}"))
    }

    /// An item of an associative list, identified by the values of its key fields.
    pub(crate) fn key<'v>(fields: impl IntoIterator<Item = (&'v str, &'v Value)>) -> Self {
        let mut fields: Vec<(&str, &Value)> = fields.into_iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = String::from("k:{");
        for (index, (name, value)) in fields.into_iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            write_json_string(&mut out, name);
            out.push(':');
            write_canonical_json(&mut out, value);
        }
        out.push('}');
        Self(out)
    }

    /// An item of a set-typed list of primitives, identified by its value.
    pub(crate) fn value(value: &Value) -> Self {
        let mut out = String::from("v:");
        write_canonical_json(&mut out, value);
        Self(out)
    }

    /// An item of a list identified only by its position.
    pub(crate) fn index(index: usize) -> Self {
        Self(format!("i:{index}"))
    }

    /// Reads a `FieldsV1` key. Keys with an unknown prefix are `None`: structured-merge-diff
    /// drops them rather than fail, so a newer encoding does not break an older reader.
    fn parse(key: &str) -> Result<Option<Self>, FieldsError> {
        let bad = |reason| FieldsError::BadKey { key: key.to_string(), reason };
        let Some((kind, content)) = key.split_once(':') else {
            return Err(bad("expected a one-letter prefix and a colon, such as f:name"));
        };
        match kind {
            "f" => Ok(Some(Self::field(content))),
            "k" => match serde_json::from_str::<Value>(content) {
                Ok(Value::Object(fields)) => Ok(Some(Self::key(fields.iter().map(|(k, v)| (k.as_str(), v))))),
                _ => Err(bad("k: must be followed by a JSON object of key fields")),
            },
            "v" => serde_json::from_str::<Value>(content)
                .map(|value| Some(Self::value(&value)))
                .map_err(|_| bad("v: must be followed by a JSON value")),
            "i" => content
                .parse()
                .map(|index| Some(Self::index(index)))
                .map_err(|_| bad("i: must be followed by an index")),
            _ if kind.len() == 1 => Ok(None),
            _ => Err(bad("expected a one-letter prefix and a colon, such as f:name")),
        }
    }

    /// Appends this step as kube-apiserver prints it in conflict messages: `.name`,
    /// `[name="nginx"]`, `[=value]`, `[0]`.
    fn write_display(&self, out: &mut String) {
        let (kind, content) = self.0.split_at(2);
        match kind {
            "f:" => {
                out.push('.');
                out.push_str(content);
            }
            "k:" => {
                out.push('[');
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(content) {
                    // structured-merge-diff prints key fields sorted by name, whatever the map order.
                    let mut sorted: Vec<(&String, &Value)> = fields.iter().collect();
                    sorted.sort_by(|a, b| a.0.cmp(b.0));
                    for (index, (name, value)) in sorted.into_iter().enumerate() {
                        if index > 0 {
                            out.push(',');
                        }
                        out.push_str(name);
                        out.push('=');
                        write_display_value(out, value);
                    }
                }
                out.push(']');
            }
            "v:" => {
                out.push_str("[=");
                if let Ok(value) = serde_json::from_str::<Value>(content) {
                    write_display_value(out, &value);
                }
                out.push(']');
            }
            _ => {
                out.push('[');
                out.push_str(content);
                out.push(']');
            }
        }
    }
}

/// Formats a path the way kube-apiserver names fields in apply conflicts:
/// `.spec.template.spec.containers[name="nginx"].image`.
pub(crate) fn display_path(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        element.write_display(&mut out);
    }
    out
}

/// A set of field paths, stored as a trie.
///
/// The root stands for the whole object and is never itself a member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// Whether the path leading to this node is in the set.
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// Reads the `fieldsV1` value of a managed-fields entry.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, FieldsError> {
        let Value::Object(object) = value else {
            return Err(FieldsError::NotAnObject { at: String::new(), found: json_type(value) });
        };
        let mut set = Self::decode(object)?;
        set.member = false;
        Ok(set)
    }

    /// The `fieldsV1` value of a managed-fields entry owning this set.
    #[must_use]
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode())
    }

    /// Whether the set has no paths.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Every path in the set, in the order structured-merge-diff iterates: at each level the
    /// members first, then the paths below.
    pub(crate) fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut paths = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut paths);
        paths
    }

    /// Whether the path leading to this node is in the set.
    pub(crate) fn is_member(&self) -> bool {
        self.member
    }

    /// Puts (or takes) the path leading to this node into the set.
    pub(crate) fn set_member(&mut self, member: bool) {
        self.member = member;
    }

    /// Whether this node has paths below it.
    pub(crate) fn has_children(&self) -> bool {
        !self.children.is_empty()
    }

    /// The subset below `element`.
    pub(crate) fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Puts `child` (and its membership) below `element`, unless it holds nothing.
    pub(crate) fn attach(&mut self, element: PathElement, child: FieldSet) {
        if child.member || child.has_children() {
            self.children.insert(element, child);
        }
    }

    /// Adds every path of `other`.
    pub(crate) fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (element, theirs) in &other.children {
            self.children.entry(element.clone()).or_default().union(theirs);
        }
    }

    /// Removes every path of `other`; paths below a removed one stay unless `other` has them too.
    pub(crate) fn difference(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        self.children.retain(|element, mine| {
            if let Some(theirs) = other.children.get(element) {
                mine.difference(theirs);
            }
            mine.member || mine.has_children()
        });
    }

    /// The paths in both sets.
    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && other.member, children: BTreeMap::new() };
        for (element, mine) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                out.attach(element.clone(), mine.intersection(theirs));
            }
        }
        out
    }

    /// Removes `path` itself, leaving paths below it.
    pub(crate) fn remove_path(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else { return };
        let Some(child) = self.children.get_mut(first) else { return };
        if rest.is_empty() {
            child.member = false;
        } else {
            child.remove_path(rest);
        }
        if !child.member && !child.has_children() {
            self.children.remove(first);
        }
    }

    /// Removes `path` and every path below it.
    pub(crate) fn remove_subtree(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else { return };
        if rest.is_empty() {
            self.children.remove(first);
            return;
        }
        if let Some(child) = self.children.get_mut(first) {
            child.remove_subtree(rest);
            if !child.member && !child.has_children() {
                self.children.remove(first);
            }
        }
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for (element, child) in &self.children {
            if child.member {
                let mut path = prefix.clone();
                path.push(element.clone());
                out.push(path);
            }
        }
        for (element, child) in &self.children {
            if child.has_children() {
                prefix.push(element.clone());
                child.collect_paths(prefix, out);
                prefix.pop();
            }
        }
    }

    fn encode(&self) -> Map<String, Value> {
        let mut object = Map::new();
        for (element, child) in &self.children {
            let mut encoded = child.encode();
            if child.member && child.has_children() {
                encoded.insert(".".into(), Value::Object(Map::new()));
            }
            object.insert(element.0.clone(), Value::Object(encoded));
        }
        object
    }

    /// Decodes one node. Its membership is `"."` or, as for a leaf, having no children.
    fn decode(object: &Map<String, Value>) -> Result<FieldSet, FieldsError> {
        let mut set = FieldSet::default();
        for (key, value) in object {
            let Value::Object(child) = value else {
                return Err(FieldsError::NotAnObject { at: key.clone(), found: json_type(value) });
            };
            if key == "." {
                set.member = true;
                continue;
            }
            let Some(element) = PathElement::parse(key)? else { continue };
            let decoded = Self::decode(child)?;
            set.children.entry(element).or_default().union(&decoded);
        }
        if set.children.is_empty() {
            set.member = true;
        }
        Ok(set)
    }
}

/// Writes `value` as compact JSON with object keys sorted, so equal values spell the same.
fn write_canonical_json(out: &mut String, value: &Value) {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(&String, &Value)> = object.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json_string(out, key);
                out.push(':');
                write_canonical_json(out, value);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical_json(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_json_string(out: &mut String, text: &str) {
    out.push_str(&Value::from(text).to_string());
}

/// Appends a key value as structured-merge-diff's `value.ToString` renders it: strings quoted,
/// lists bracketed, maps as `key=value` pairs.
fn write_display_value(out: &mut String, value: &Value) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_display_value(out, item);
            }
            out.push(']');
        }
        Value::Object(object) => {
            for (key, value) in object {
                let _ = write!(out, "{key}=");
                write_display_value(out, value);
            }
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(elements: &[PathElement]) -> Vec<PathElement> {
        elements.to_vec()
    }

    fn f(name: &str) -> PathElement {
        PathElement::field(name)
    }

    fn set_of(paths: &[Vec<PathElement>]) -> FieldSet {
        let mut set = FieldSet::default();
        for path in paths {
            let mut node = &mut set;
            for element in path {
                node = node.children.entry(element.clone()).or_default();
            }
            node.member = true;
        }
        set
    }

    #[test]
    fn path_elements_spell_canonically() {
        let cases = [
            (f("replicas"), "f:replicas"),
            (PathElement::key([("name", &json!("nginx"))]), r#"k:{"name":"nginx"}"#),
            (
                PathElement::key([("protocol", &json!("TCP")), ("containerPort", &json!(80))]),
                r#"k:{"containerPort":80,"protocol":"TCP"}"#,
            ),
            (PathElement::value(&json!("kubernetes.io/pvc-protection")), r#"v:"kubernetes.io/pvc-protection""#),
            (PathElement::value(&json!({"b": 1, "a": [true, null]})), r#"v:{"a":[true,null],"b":1}"#),
            (PathElement::index(3), "i:3"),
        ];
        for (element, expected) in cases {
            assert_eq!(element.0, expected);
            assert_eq!(PathElement::parse(expected), Ok(Some(element)), "{expected}");
        }
    }

    #[test]
    fn parse_reorders_key_fields_and_rejects_malformed_keys() {
        assert_eq!(
            PathElement::parse(r#"k:{"protocol":"TCP","containerPort":80}"#),
            Ok(Some(PathElement::key([("containerPort", &json!(80)), ("protocol", &json!("TCP"))])))
        );
        assert_eq!(PathElement::parse("x:future"), Ok(None));
        for bad in ["k:[1]", "k:{", "v:nope", "i:-1", "name", "fx:name"] {
            assert!(matches!(PathElement::parse(bad), Err(FieldsError::BadKey { .. })), "{bad}");
        }
    }

    #[test]
    fn paths_display_like_kube_apiserver() {
        let cases = [
            (path(&[f("spec"), f("replicas")]), ".spec.replicas"),
            (
                path(&[
                    f("spec"),
                    f("template"),
                    f("spec"),
                    f("containers"),
                    PathElement::key([("name", &json!("nginx"))]),
                    f("image"),
                ]),
                r#".spec.template.spec.containers[name="nginx"].image"#,
            ),
            (
                path(&[f("ports"), PathElement::key([("containerPort", &json!(80)), ("protocol", &json!("TCP"))])]),
                r#".ports[containerPort=80,protocol="TCP"]"#,
            ),
            (path(&[f("metadata"), f("finalizers"), PathElement::value(&json!("a"))]), r#".metadata.finalizers[="a"]"#),
            (path(&[f("args"), PathElement::index(2)]), ".args[2]"),
        ];
        for (path, expected) in cases {
            assert_eq!(display_path(&path), expected);
        }
    }

    #[test]
    fn fields_v1_round_trips_a_deployment_and_iterates_members_before_children() {
        let nginx = PathElement::key([("name", &json!("nginx"))]);
        let port = PathElement::key([("containerPort", &json!(80)), ("protocol", &json!("TCP"))]);
        let container = path(&[f("spec"), f("template"), f("spec"), f("containers"), nginx.clone()]);
        let with = |tail: &[PathElement]| [container.clone(), tail.to_vec()].concat();
        let set = set_of(&[
            path(&[f("metadata"), f("labels"), f("app")]),
            path(&[f("spec"), f("replicas")]),
            path(&[f("spec"), f("selector")]),
            path(&[f("spec"), f("template"), f("metadata"), f("labels"), f("app")]),
            container.clone(),
            with(&[f("name")]),
            with(&[f("image")]),
            with(&[f("ports"), port.clone()]),
            with(&[f("ports"), port.clone(), f("containerPort")]),
            path(&[f("metadata"), f("finalizers"), PathElement::value(&json!("example.com/guard"))]),
        ]);
        let expected = json!({
            "f:metadata": {
                "f:finalizers": {r#"v:"example.com/guard""#: {}},
                "f:labels": {"f:app": {}}
            },
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {r#"k:{"name":"nginx"}"#: {
                        ".": {},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {r#"k:{"containerPort":80,"protocol":"TCP"}"#: {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }
        });
        assert_eq!(set.to_fields_v1(), expected);
        assert_eq!(FieldSet::from_fields_v1(&expected), Ok(set.clone()));
        let paths: Vec<String> = set.paths().iter().map(|path| display_path(path)).collect();
        assert_eq!(
            paths,
            [
                r#".metadata.finalizers[="example.com/guard"]"#,
                ".metadata.labels.app",
                ".spec.replicas",
                ".spec.selector",
                ".spec.template.metadata.labels.app",
                r#".spec.template.spec.containers[name="nginx"]"#,
                r#".spec.template.spec.containers[name="nginx"].image"#,
                r#".spec.template.spec.containers[name="nginx"].name"#,
                r#".spec.template.spec.containers[name="nginx"].ports[containerPort=80,protocol="TCP"]"#,
                r#".spec.template.spec.containers[name="nginx"].ports[containerPort=80,protocol="TCP"].containerPort"#,
            ]
        );
    }

    #[test]
    fn decode_rejects_non_objects_and_skips_unknown_prefixes() {
        assert!(matches!(FieldSet::from_fields_v1(&json!([])), Err(FieldsError::NotAnObject { .. })));
        assert!(matches!(FieldSet::from_fields_v1(&json!({"f:a": 1})), Err(FieldsError::NotAnObject { .. })));
        assert_eq!(FieldSet::from_fields_v1(&json!({"z:later": {}, "f:a": {}})), Ok(set_of(&[path(&[f("a")])])));
        assert_eq!(FieldSet::from_fields_v1(&json!({})), Ok(FieldSet::default()));
    }

    #[test]
    fn set_operations_work_on_members() {
        let a = path(&[f("spec"), f("a")]);
        let b = path(&[f("spec"), f("b")]);
        let item = path(&[f("list"), PathElement::value(&json!(1))]);
        let mut left = set_of(&[a.clone(), b.clone(), item.clone()]);
        let right = set_of(&[b.clone(), path(&[f("spec"), f("c")])]);
        assert_eq!(left.intersection(&right), set_of(std::slice::from_ref(&b)));
        left.difference(&right);
        assert_eq!(left, set_of(&[a.clone(), item.clone()]));
        left.union(&right);
        assert_eq!(left, set_of(&[a.clone(), b.clone(), item.clone(), path(&[f("spec"), f("c")])]));
        left.remove_subtree(&[f("spec")]);
        assert_eq!(left, set_of(std::slice::from_ref(&item)));
        let mut nested = set_of(&[path(&[f("m")]), path(&[f("m"), f("x")])]);
        nested.remove_path(&[f("m")]);
        assert_eq!(nested, set_of(&[path(&[f("m"), f("x")])]));
    }
}
