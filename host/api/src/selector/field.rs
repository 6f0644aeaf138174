//! Field selectors: `fieldSelector=spec.nodeName=node-1,status.phase!=Failed`.

use std::borrow::Cow;

use serde_json::Value;

use super::SelectorError;
use crate::registry::ResourceInfo;

/// Every kind can be selected on its name and namespace.
const DEFAULT_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// The kinds whose field selectors go beyond the default, as upstream's field label conversions
/// (`pkg/apis/*/v1/conversion.go`) list them. Cluster-scoped kinds with their own list drop
/// `metadata.namespace`, as upstream does.
const KIND_FIELDS: &[(&str, &str, &[&str])] = &[
    (
        "",
        "Pod",
        &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
            // Old v1 clients send spec.host; it means spec.nodeName.
            "spec.host",
        ],
    ),
    ("", "Node", &["metadata.name", "spec.unschedulable"]),
    ("", "Namespace", &["metadata.name", "status.phase"]),
    (
        "",
        "Event",
        &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    ),
    ("", "Secret", &["metadata.name", "metadata.namespace", "type"]),
    ("", "Service", &["metadata.name", "metadata.namespace", "spec.clusterIP", "spec.type"]),
    ("", "ReplicationController", &["metadata.name", "metadata.namespace", "status.replicas"]),
    ("apps", "ReplicaSet", &["metadata.name", "metadata.namespace", "status.replicas"]),
    ("batch", "Job", &["metadata.name", "metadata.namespace", "status.successful"]),
];

/// Selector fields that are not spelled as the path to their value.
const FIELD_PATHS: &[(&str, &str)] = &[("status.successful", "status.succeeded"), ("source", "source.component")];

/// Fields whose absence means a non-empty value: upstream reads them from typed objects, where
/// the zero value or the API default shows through.
const FIELD_DEFAULTS: &[(&str, &str)] = &[
    ("spec.hostNetwork", "false"),
    ("spec.unschedulable", "false"),
    ("spec.type", "ClusterIP"),
    ("status.replicas", "0"),
    ("status.successful", "0"),
];

/// Selector fields that are other names for a field.
const FIELD_ALIASES: &[(&str, &str)] = &[("spec.host", "spec.nodeName")];

/// The field selectors `info`'s kind supports.
#[must_use]
pub fn supported_fields(info: &ResourceInfo) -> Vec<&'static str> {
    KIND_FIELDS
        .iter()
        .find(|(group, kind, _)| *group == info.gvk.group && *kind == info.gvk.kind)
        .map_or(DEFAULT_FIELDS, |(_, _, fields)| fields)
        .to_vec()
}

/// Requirements on an object's fields that must all hold.
///
/// An empty selector matches every object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldRequirement {
    field: String,
    /// `=` and `==` when true, `!=` when false.
    equal: bool,
    value: String,
}

impl FieldSelector {
    /// Parses `fieldSelector`: `f=v`, `f==v` or `f!=v` terms joined by `,`. In values, `\,`,
    /// `\=` and `\\` stand for `,`, `=` and `\`. Only fields in `allowed` are accepted.
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Self, SelectorError> {
        let mut terms = split_terms(text);
        // Upstream sorts the terms, which fixes the order requirements are reported in.
        terms.sort_unstable();
        let mut requirements = Vec::new();
        for term in terms.into_iter().filter(|term| !term.is_empty()) {
            let (field, equal, raw) = split_term(term)
                .ok_or_else(|| SelectorError::FieldSyntax { selector: text.to_owned(), term: term.to_owned() })?;
            let value = unescape(raw)?;
            if !allowed.contains(&field) {
                return Err(SelectorError::UnsupportedField(field.to_owned()));
            }
            let field = FIELD_ALIASES.iter().find(|(alias, _)| *alias == field).map_or(field, |(_, name)| name);
            requirements.push(FieldRequirement { field: field.to_owned(), equal, value });
        }
        Ok(Self { requirements })
    }

    /// Whether `object` satisfies every requirement. Each field is a dotted path into the object;
    /// a missing field counts as its zero value ("" for strings), so `spec.nodeName=` selects
    /// unscheduled pods.
    #[must_use]
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements
            .iter()
            .all(|requirement| (field_value(object, &requirement.field) == requirement.value) == requirement.equal)
    }

    /// Whether the selector has no requirements, and so matches everything.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value `field` must equal, when a `=` or `==` requirement pins it.
    #[must_use]
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|requirement| requirement.equal && requirement.field == field)
            .map(|requirement| requirement.value.as_str())
    }
}

/// Splits on commas that are not escaped.
fn split_terms(text: &str) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

/// Splits `field<op>value` at the first operator, trying `!=` and `==` before `=`.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    term.char_indices().find_map(|(index, _)| {
        let rest = &term[index..];
        [("!=", false), ("==", true), ("=", true)]
            .into_iter()
            .find(|(operator, _)| rest.starts_with(operator))
            .map(|(operator, equal)| (&term[..index], equal, &rest[operator.len()..]))
    })
}

fn unescape(value: &str) -> Result<String, SelectorError> {
    let mut unescaped = String::with_capacity(value.len());
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::InvalidEscape(format!("\\{c}")));
            }
            unescaped.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => return Err(SelectorError::UnescapedCharacter(c)),
            _ => unescaped.push(c),
        }
    }
    if escaped {
        return Err(SelectorError::InvalidEscape("\\".to_owned()));
    }
    Ok(unescaped)
}

/// The value a selector field has on `object`, rendered as upstream's field sets render it.
fn field_value<'a>(object: &'a Value, field: &str) -> Cow<'a, str> {
    let path = FIELD_PATHS.iter().find(|(name, _)| *name == field).map_or(field, |(_, path)| path);
    match path.split('.').try_fold(object, |value, segment| value.get(segment)) {
        Some(Value::String(text)) => Cow::Borrowed(text),
        Some(Value::Bool(flag)) => Cow::Owned(flag.to_string()),
        Some(Value::Number(number)) => Cow::Owned(number.to_string()),
        // Lists and objects have no field-selector value upstream; missing fields are zero.
        _ => Cow::Borrowed(FIELD_DEFAULTS.iter().find(|(name, _)| *name == field).map_or("", |(_, zero)| zero)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    const POD_FIELDS: &[&str] = &["metadata.name", "spec.nodeName", "status.phase", "spec.hostNetwork", "spec.host"];

    #[test]
    fn terms_parse_with_escapes() {
        let cases = [
            ("metadata.name=web", "metadata.name", Some("web")),
            ("metadata.name==web", "metadata.name", Some("web")),
            ("metadata.name!=web", "metadata.name", None),
            (r"metadata.name=a\,b", "metadata.name", Some("a,b")),
            (r"metadata.name=a\=b", "metadata.name", Some("a=b")),
            (r"metadata.name=a\\b", "metadata.name", Some(r"a\b")),
            ("metadata.name=a!b", "metadata.name", Some("a!b")),
            ("metadata.name=", "metadata.name", Some("")),
            ("status.phase!=Failed,metadata.name=web", "metadata.name", Some("web")),
            ("metadata.name=web,,", "metadata.name", Some("web")),
            ("spec.host=node-1", "spec.nodeName", Some("node-1")),
        ];
        for (text, field, exact) in cases {
            let selector = FieldSelector::parse(text, POD_FIELDS).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(selector.exact(field), exact, "{text:?}");
        }
        assert!(FieldSelector::parse("", POD_FIELDS).expect("empty is allowed").is_empty());
    }

    #[test]
    fn malformed_terms_and_unknown_fields_are_rejected() {
        let cases = [
            ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
            ("metadata.name=a=b", "unescaped character in value: ="),
            (r"metadata.name=a\x", r"invalid escape sequence: \x"),
            (r"metadata.name=a\", r"invalid escape sequence: \"),
            ("spec.schedulerName=default", "field label not supported: spec.schedulerName"),
            ("metadata.name=a,status.podIP=1.2.3.4", "field label not supported: status.podIP"),
        ];
        for (text, message) in cases {
            let error = FieldSelector::parse(text, POD_FIELDS).expect_err(text).to_string();
            assert!(error.ends_with(message), "{text:?}: {error:?} should end with {message:?}");
        }
    }

    #[test]
    fn missing_fields_count_as_their_zero_value() {
        let scheduled = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "node-1", "hostNetwork": true},
            "status": {"phase": "Running"}});
        let pending = json!({"metadata": {"name": "b"}, "spec": {}, "status": {"phase": "Pending"}});
        let cases = [
            ("spec.nodeName=node-1", true, false),
            ("spec.nodeName=", false, true),
            ("spec.nodeName!=", true, false),
            ("spec.host=node-1", true, false),
            ("status.phase!=Running", false, true),
            ("spec.hostNetwork=false", false, true),
            ("spec.hostNetwork=true", true, false),
            ("metadata.name=a,status.phase=Running", true, false),
            ("", true, true),
        ];
        for (text, on_scheduled, on_pending) in cases {
            let selector = FieldSelector::parse(text, POD_FIELDS).expect(text);
            assert_eq!(selector.matches(&scheduled), on_scheduled, "{text:?} on the scheduled pod");
            assert_eq!(selector.matches(&pending), on_pending, "{text:?} on the pending pod");
        }
    }

    #[test]
    fn renamed_and_numeric_fields_read_their_source() {
        let job = json!({"status": {"succeeded": 2}});
        let event = json!({"source": {"component": "kubelet"}, "involvedObject": {"kind": "Pod"}});
        let fields = &["status.successful", "source", "involvedObject.kind", "status.replicas"];
        let cases = [
            (&job, "status.successful=2", true),
            (&json!({}), "status.successful=0", true),
            (&json!({}), "status.replicas=0", true),
            (&event, "source=kubelet,involvedObject.kind=Pod", true),
            (&event, "source=scheduler", false),
        ];
        for (object, text, expected) in cases {
            assert_eq!(FieldSelector::parse(text, fields).expect(text).matches(object), expected, "{text:?}");
        }
    }

    #[test]
    fn each_kind_supports_upstreams_fields() {
        let registry = Registry::builtin();
        let cases: &[(&str, &str, &[&str], &[&str])] = &[
            ("", "pods", &["metadata.namespace", "spec.nodeName", "status.podIP", "status.nominatedNodeName"], &[]),
            ("", "nodes", &["metadata.name", "spec.unschedulable"], &["metadata.namespace"]),
            ("", "namespaces", &["status.phase"], &["metadata.namespace"]),
            ("", "events", &["involvedObject.uid", "reportingComponent", "source", "type"], &[]),
            ("", "secrets", &["type"], &[]),
            ("apps", "replicasets", &["status.replicas"], &[]),
            ("", "replicationcontrollers", &["status.replicas"], &[]),
            ("batch", "jobs", &["status.successful"], &[]),
            ("apps", "deployments", &["metadata.name", "metadata.namespace"], &["status.replicas"]),
        ];
        for (group, plural, present, absent) in cases {
            let info = registry.lookup(group, "v1", plural).expect(plural);
            let fields = supported_fields(info);
            for field in *present {
                assert!(fields.contains(field), "{plural} supports {field}");
            }
            for field in *absent {
                assert!(!fields.contains(field), "{plural} does not support {field}");
            }
        }
    }
}
