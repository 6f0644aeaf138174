//! Admission policies' `matchConditions`: CEL expressions over the request, compiled when a
//! policy loads (and checked when its Plugin object is written) and evaluated before the policy
//! is called, as upstream evaluates a webhook's match conditions.
//!
//! In scope: `object` and `oldObject` (null when the request has none) and `request`, the
//! admission request's attributes (`operation`, `name`, `namespace`, `kind`, `resource`,
//! `subResource`, `userInfo`, `dryRun`).

use capstan_api::plugin::MatchCondition;
use serde_json::Value;

use crate::status::Cause;

/// Upstream's limit on a webhook's match conditions.
pub const MAX_CONDITIONS: usize = 64;

/// A policy's compiled match conditions.
pub struct Conditions(Vec<(String, cel::Program)>);

impl std::fmt::Debug for Conditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

/// What a request looks like to the conditions.
pub struct Variables<'a> {
    /// The object written; none (null) on delete.
    pub object: Option<&'a Value>,
    /// The object before the request; none (null) on create.
    pub old_object: Option<&'a Value>,
    /// The request's attributes.
    pub request: Value,
}

impl Conditions {
    /// Compiles `conditions`; the error names each condition that does not compile and why.
    ///
    /// # Errors
    ///
    /// `(index, message)` for each expression that is not valid CEL.
    pub fn compile(conditions: &[MatchCondition]) -> Result<Self, Vec<(usize, String)>> {
        let mut compiled = Vec::with_capacity(conditions.len());
        let mut errors = Vec::new();
        for (index, condition) in conditions.iter().enumerate() {
            match cel::Program::compile(&condition.expression) {
                Ok(program) => compiled.push((condition.name.clone(), program)),
                Err(e) => errors.push((index, format!("compilation failed: {e}"))),
            }
        }
        if errors.is_empty() { Ok(Self(compiled)) } else { Err(errors) }
    }

    /// Whether there are none (the policy is always called).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the request in `scope` matches: false as soon as one condition is false;
    /// otherwise an error when a condition failed to evaluate or gave something other than a
    /// bool.
    ///
    /// # Errors
    ///
    /// The first condition that failed, by name, with why.
    pub fn matches(&self, scope: &Scope) -> Result<bool, String> {
        let mut failure = None;
        for (name, program) in &self.0 {
            match program.execute(&scope.0) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => return Ok(false),
                Ok(other) => {
                    failure.get_or_insert_with(|| format!("{name}: the expression gave {other:?}, not a bool"));
                }
                Err(e) => {
                    failure.get_or_insert_with(|| format!("{name}: {e}"));
                }
            }
        }
        failure.map_or(Ok(true), Err)
    }
}

/// The variables of one request bound for evaluation, built once and shared by every policy's
/// conditions (binding converts the whole object).
pub struct Scope(cel::Context<'static, 'static>);

impl Scope {
    /// Binds `object`, `oldObject` and `request`.
    ///
    /// # Errors
    ///
    /// A variable that cannot be converted to a CEL value.
    pub fn new(variables: &Variables<'_>) -> Result<Self, String> {
        let mut context = cel::Context::default();
        let request = Some(&variables.request);
        for (name, value) in [("object", variables.object), ("oldObject", variables.old_object), ("request", request)] {
            context.add_variable(name, value).map_err(|e| format!("cannot bind {name}: {e}"))?;
        }
        Ok(Self(context))
    }
}

/// The `spec.admission.matchConditions` problems of a Plugin object, as validation causes.
#[must_use]
pub fn problems(conditions: &[MatchCondition]) -> Vec<Cause> {
    let cause = |reason, field: String, message: String| Cause { reason, field, message };
    let field = |index: usize, part: &str| format!("spec.admission.matchConditions[{index}].{part}");
    let mut problems = Vec::new();
    if conditions.len() > MAX_CONDITIONS {
        let message = format!("Too many: {}: must have at most {MAX_CONDITIONS} items", conditions.len());
        problems.push(cause("FieldValueTooMany", "spec.admission.matchConditions".to_owned(), message));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, condition) in conditions.iter().enumerate() {
        if condition.name.is_empty() {
            problems.push(cause("FieldValueRequired", field(index, "name"), "Required value".to_owned()));
        } else if !seen.insert(condition.name.as_str()) {
            let message = format!("Duplicate value: {:?}", condition.name);
            problems.push(cause("FieldValueDuplicate", field(index, "name"), message));
        }
        if condition.expression.trim().is_empty() {
            problems.push(cause("FieldValueRequired", field(index, "expression"), "Required value".to_owned()));
        }
    }
    if let Err(errors) = Conditions::compile(conditions) {
        for (index, message) in errors {
            let expression = &conditions[index].expression;
            if expression.trim().is_empty() {
                continue; // reported as required above
            }
            let message = format!("Invalid value: {expression:?}: {message}");
            problems.push(cause("FieldValueInvalid", field(index, "expression"), message));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::{Conditions, MatchCondition, Scope, Variables, problems};
    use serde_json::{Value, json};

    fn conditions(expressions: &[&str]) -> Conditions {
        let listed: Vec<MatchCondition> = expressions
            .iter()
            .enumerate()
            .map(|(i, e)| MatchCondition { name: format!("c{i}"), expression: (*e).to_owned() })
            .collect();
        Conditions::compile(&listed).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn request(operation: &str, object: &Value) -> Scope {
        let variables = Variables {
            object: Some(object),
            old_object: None,
            request: json!({"operation": operation, "namespace": "web", "userInfo": {"username": "alice"}}),
        };
        Scope::new(&variables).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn conditions_select_requests_by_fields_labels_and_user() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {"hostNetwork": true}});
        // (expressions, matches)
        let cases: [(&[&str], bool); 7] = [
            (&["object.metadata.labels.app == 'web'"], true),
            (&["'app' in object.metadata.labels", "request.operation == 'CREATE'"], true),
            (&["request.userInfo.username != 'alice'"], false),
            (&["has(object.spec.hostNetwork) && object.spec.hostNetwork"], true),
            (&["!has(object.metadata.annotations)"], true),
            (&["request.namespace.startsWith('kube-')"], false),
            // One false decides even past a condition that fails.
            (&["object.spec.missing == 1", "request.operation == 'DELETE'"], false),
        ];
        for (expressions, expected) in cases {
            assert_eq!(conditions(expressions).matches(&request("CREATE", &pod)), Ok(expected), "{expressions:?}");
        }
    }

    #[test]
    fn a_condition_that_fails_or_is_not_a_bool_is_an_error_naming_it() {
        let pod = json!({"metadata": {"name": "p"}});
        let failed = conditions(&["true", "object.spec.missing == 1"]).matches(&request("CREATE", &pod));
        assert!(failed.as_ref().is_err_and(|e| e.starts_with("c1: ")), "{failed:?}");
        let not_bool = conditions(&["object.metadata.name"]).matches(&request("CREATE", &pod));
        assert!(not_bool.as_ref().is_err_and(|e| e.contains("not a bool")), "{not_bool:?}");
    }

    #[test]
    fn invalid_conditions_are_reported_by_field() {
        let listed = [
            MatchCondition { name: "ok".into(), expression: "true".into() },
            MatchCondition { name: "ok".into(), expression: "object.metadata.(".into() },
            MatchCondition { name: String::new(), expression: String::new() },
        ];
        let fields: Vec<String> = problems(&listed).into_iter().map(|cause| cause.field).collect();
        assert_eq!(
            fields,
            [
                "spec.admission.matchConditions[1].name",
                "spec.admission.matchConditions[2].name",
                "spec.admission.matchConditions[2].expression",
                "spec.admission.matchConditions[1].expression",
            ]
        );
        assert!(problems(&listed[..1]).is_empty());
    }
}
