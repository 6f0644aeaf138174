//! Admission policy: every object written must carry a label.
//!
//! Configuration: `{"label": "team"}` (the default). Objects without the label are denied with a
//! message naming it; deletions are always allowed.

use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, parse_config};
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
        let object: serde_json::Value = match request.object() {
            Ok(Some(object)) => object,
            Ok(None) => return AdmissionResponse::allow(),
            Err(e) => return AdmissionResponse::deny(format!("object is not valid JSON: {e}")).with_code(400),
        };
        if has_label(&object, &self.label) {
            AdmissionResponse::allow()
        } else {
            AdmissionResponse::deny(format!(
                "{} {:?} must have the label `{}`",
                request.kind.kind, request.name, self.label
            ))
        }
    }
}

fn has_label(object: &serde_json::Value, label: &str) -> bool {
    object.pointer("/metadata/labels").and_then(|labels| labels.get(label)).is_some()
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
            (json!({"metadata": {}}), false),
            (json!({}), false),
        ];
        for (object, expected) in cases {
            assert_eq!(has_label(&object, "team"), expected, "{object}");
        }
    }
}
