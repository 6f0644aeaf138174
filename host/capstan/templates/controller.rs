//! A controller: ConfigMaps carrying a label get an annotation with a checksum of their data, so
//! whatever consumes them (a Deployment's pod template, a reloader) can tell when it changed.
//!
//! Configuration: `{"label": "capstan.io/checksum", "annotation": "capstan.io/data-checksum"}`
//! (the defaults). The checksum is FNV-1a (32-bit, hex) over the sorted `key NUL value NUL` of
//! `data`.

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, Controller, GroupVersionKind, ObjectKey, PatchType, ReconcileResult, Watches, meta, outcome,
};
use serde_json::{Value, json};

struct ConfigMapChecksum {
    label: String,
    annotation: String,
}

fn config_maps() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "ConfigMap")
}

fn checksum(data: &serde_json::Map<String, Value>) -> String {
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    let mut hash: u32 = 0x811c_9dc5;
    for key in keys {
        let value = data[key].as_str().unwrap_or_default();
        for byte in key.bytes().chain([0]).chain(value.bytes()).chain([0]) {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
    }
    format!("{hash:08x}")
}

impl Controller for ConfigMapChecksum {
    fn configure(config: &str) -> Result<Self, String> {
        let config: Value = serde_json::from_str(config).map_err(|e| format!("invalid configuration: {e}"))?;
        let text = |field: &str, default: &str| config.get(field).and_then(Value::as_str).unwrap_or(default).to_owned();
        Ok(Self { label: text("label", "capstan.io/checksum"), annotation: text("annotation", "capstan.io/data-checksum") })
    }

    fn watches(&self) -> Watches {
        Watches { primary: config_maps(), owned: Vec::new(), others: Vec::new() }
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        let annotate = || {
            let Some(config_map) = api.get(&config_maps(), key)? else { return Ok(None) };
            if meta::label(&config_map, &self.label).is_none() {
                return Ok(None);
            }
            let empty = serde_json::Map::new();
            let wanted = checksum(config_map.get("data").and_then(Value::as_object).unwrap_or(&empty));
            if meta::annotation(&config_map, &self.annotation) != Some(wanted.as_str()) {
                let patch = json!({"metadata": {"annotations": {&self.annotation: wanted}}});
                api.patch(&config_maps(), key, PatchType::Merge, &patch, None)?;
            }
            Ok(None::<u64>)
        };
        outcome(annotate())
    }
}

capstan_plugin_sdk::controller!(ConfigMapChecksum);
