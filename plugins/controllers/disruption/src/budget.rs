//! The arithmetic of a disruption budget, as plain functions over counts.

use capstan_plugin_sdk::controller::owned;
use serde_json::Value;

/// How many pods a budget expects, and how many of them must stay healthy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// `expectedPods`.
    pub expected_pods: i64,
    /// `desiredHealthy`.
    pub desired_healthy: i64,
}

/// The expected and desired counts of `pdb`, given how many pods it selects and (called only
/// when needed) the summed scale of their controllers.
pub fn expected(pdb: &Value, selected: i64, scale: impl FnOnce() -> Result<i64, String>) -> Result<Expected, String> {
    let percent = |v: &Value| v.as_str().is_some_and(|s| s.ends_with('%'));
    if let Some(max_unavailable) = pdb.pointer("/spec/maxUnavailable").filter(|v| !v.is_null()) {
        let expected_pods = scale()?;
        let allowed = owned::scaled_int_or_percent(Some(max_unavailable), expected_pods, true)
            .ok_or_else(|| format!("invalid maxUnavailable {max_unavailable}"))?;
        return Ok(Expected { expected_pods, desired_healthy: (expected_pods - allowed).max(0) });
    }
    match pdb.pointer("/spec/minAvailable").filter(|v| !v.is_null()) {
        Some(min) if percent(min) => {
            let expected_pods = scale()?;
            let desired_healthy = owned::scaled_int_or_percent(Some(min), expected_pods, true)
                .ok_or_else(|| format!("invalid minAvailable {min}"))?;
            Ok(Expected { expected_pods, desired_healthy })
        }
        Some(min) => {
            let desired_healthy = owned::scaled_int_or_percent(Some(min), selected, true)
                .ok_or_else(|| format!("invalid minAvailable {min}"))?;
            Ok(Expected { expected_pods: selected, desired_healthy })
        }
        None => Ok(Expected::default()),
    }
}

/// A computed budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// What it expects.
    pub expected: Expected,
    /// `disruptionsAllowed`.
    pub disruptions_allowed: i64,
}

impl Budget {
    /// The disruptions `healthy` pods leave room for: none when nothing is expected.
    #[must_use]
    pub fn compute(expected: &Expected, healthy: i64) -> Self {
        let room = healthy - expected.desired_healthy;
        let disruptions_allowed = if expected.expected_pods <= 0 || room <= 0 { 0 } else { room };
        Self { expected: *expected, disruptions_allowed }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Budget, Expected, expected};

    #[test]
    fn budgets_resolve_numbers_and_percentages() {
        // (spec, selected pods, controllers' scale, healthy, (expected, desired), allowed)
        let cases = [
            (json!({"minAvailable": 2}), 3, 3, 3, (3, 2), 1),
            (json!({"minAvailable": 2}), 3, 3, 2, (3, 2), 0),
            (json!({"minAvailable": "50%"}), 3, 4, 4, (4, 2), 2),
            (json!({"minAvailable": "100%"}), 3, 3, 3, (3, 3), 0),
            (json!({"maxUnavailable": 1}), 3, 5, 5, (5, 4), 1),
            (json!({"maxUnavailable": "25%"}), 3, 10, 9, (10, 7), 2),
            (json!({"maxUnavailable": 0}), 2, 2, 2, (2, 2), 0),
            (json!({"minAvailable": 1}), 0, 0, 0, (0, 1), 0),
        ];
        for (spec, selected, scale, healthy, (expected_pods, desired_healthy), allowed) in cases {
            let got = expected(&json!({"spec": spec}), selected, || Ok(scale)).unwrap();
            assert_eq!(got, Expected { expected_pods, desired_healthy }, "{spec}");
            assert_eq!(Budget::compute(&got, healthy).disruptions_allowed, allowed, "{spec} with {healthy} healthy");
        }
    }

    #[test]
    fn a_missing_scale_fails_only_when_it_is_needed() {
        let no_scale = || Err("no controller".to_owned());
        assert!(expected(&json!({"spec": {"maxUnavailable": 1}}), 3, no_scale).is_err());
        assert!(expected(&json!({"spec": {"minAvailable": 1}}), 3, no_scale).is_ok());
    }
}
