//! Built-in admission policy DefaultTolerationSeconds: pods tolerate `not-ready` and
//! `unreachable` nodes for 300 seconds (configurable) unless they say otherwise.
//!
//! Configuration: `{"notReadySeconds": 300, "unreachableSeconds": 300}`.

use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, parse_config};
use serde::Deserialize;
use serde_json::{Value, json};

/// The policy's configuration.
#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    not_ready_seconds: i64,
    unreachable_seconds: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self { not_ready_seconds: 300, unreachable_seconds: 300 }
    }
}

/// Adds the default NoExecute tolerations.
pub struct DefaultTolerationSeconds {
    config: Config,
}

/// The JSON patch adding the missing default tolerations to `pod`, if any are missing.
fn patch(pod: &Value, config: &Config) -> Option<Value> {
    let existing = pod.pointer("/spec/tolerations").and_then(Value::as_array);
    let tolerates = |key: &str| {
        existing.is_some_and(|list| {
            list.iter().any(|t| {
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
                let matches_key = t
                    .get("key")
                    .and_then(Value::as_str)
                    .map_or(t.get("operator").and_then(Value::as_str) == Some("Exists"), |k| k == key);
                matches_key && (effect.is_empty() || effect == "NoExecute")
            })
        })
    };
    let mut add = Vec::new();
    for (key, seconds) in [
        ("node.kubernetes.io/not-ready", config.not_ready_seconds),
        ("node.kubernetes.io/unreachable", config.unreachable_seconds),
    ] {
        if !tolerates(key) {
            add.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
    if add.is_empty() {
        return None;
    }
    let ops: Vec<Value> = if existing.is_some() {
        add.into_iter().map(|t| json!({"op": "add", "path": "/spec/tolerations/-", "value": t})).collect()
    } else {
        vec![json!({"op": "add", "path": "/spec/tolerations", "value": add})]
    };
    Some(Value::Array(ops))
}

impl AdmissionPolicy for DefaultTolerationSeconds {
    fn configure(config: &str) -> Result<Self, String> {
        Ok(Self { config: parse_config(config)? })
    }

    fn mutate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        if request.sub_resource.is_some() {
            return AdmissionResponse::allow();
        }
        match request.object::<Value>() {
            Ok(Some(pod)) => match patch(&pod, &self.config) {
                Some(ops) => AdmissionResponse::allow().with_patch(ops.to_string()),
                None => AdmissionResponse::allow(),
            },
            Ok(None) => AdmissionResponse::allow(),
            Err(e) => AdmissionResponse::deny(format!("the pod is not valid JSON: {e}")).with_code(400),
        }
    }
}

capstan_plugin_sdk::admission_policy!(DefaultTolerationSeconds);

#[cfg(test)]
mod tests {
    use super::{Config, patch};
    use serde_json::json;

    #[test]
    fn adds_only_missing_tolerations() {
        let config = Config::default();
        let bare = json!({"spec": {}});
        let ops = patch(&bare, &config).expect("a patch");
        assert_eq!(ops[0]["value"].as_array().map(Vec::len), Some(2), "{ops}");
        let one = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}});
        let ops = patch(&one, &config).expect("a patch");
        assert_eq!(ops.as_array().map(Vec::len), Some(1), "{ops}");
        let all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(patch(&all, &config), None);
    }
}
