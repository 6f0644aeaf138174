//! The arithmetic of a rolling update, as plain functions over counts.

use serde_json::Value;

/// Resolves `maxSurge` and `maxUnavailable` (integers or percentages of the desired replicas;
/// surge rounds up, unavailability down; both 25 % by default). Both zero would stall a
/// rollout, so unavailability is then 1.
#[must_use]
pub fn limits(deployment: &Value) -> (i64, i64) {
    let desired = deployment.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let field = |name: &str| deployment.pointer(&format!("/spec/strategy/rollingUpdate/{name}")).cloned();
    let surge = resolve(field("maxSurge").as_ref(), desired, true);
    let unavailable = resolve(field("maxUnavailable").as_ref(), desired, false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

fn resolve(value: Option<&Value>, desired: i64, round_up: bool) -> i64 {
    match value {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0).max(0),
        Some(Value::String(text)) => {
            let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(25);
            let scaled = desired * percent;
            if round_up { (scaled + 99) / 100 } else { scaled / 100 }
        }
        _ => {
            if round_up {
                (desired * 25 + 99) / 100
            } else {
                desired * 25 / 100
            }
        }
    }
}

/// The new ReplicaSet's replicas: up to `desired`, as far as the surge allows over the `total`
/// replicas of all ReplicaSets; down to `desired` if above.
#[must_use]
pub fn new_replicas(desired: i64, surge: i64, total: i64, current: i64) -> i64 {
    if current >= desired {
        return desired;
    }
    let room = desired + surge - total;
    if room <= 0 { current } else { current + room.min(desired - current) }
}

/// The replicas each old ReplicaSet (given as `(replicas, available)`, oldest first) should be
/// scaled down to, keeping `desired - max_unavailable` pods available: first the old pods that
/// are not available anyway, then available ones as far as availability allows.
#[must_use]
pub fn scale_down_old(
    desired: i64,
    max_unavailable: i64,
    total: i64,
    new_unavailable: i64,
    available: i64,
    olds: &[(i64, i64)],
) -> Vec<i64> {
    let mut targets: Vec<i64> = olds.iter().map(|(replicas, _)| *replicas).collect();
    let min_available = desired - max_unavailable;
    let mut budget = total - min_available - new_unavailable;
    if budget <= 0 {
        return targets;
    }
    for (target, (_, old_available)) in targets.iter_mut().zip(olds) {
        let unhealthy = (*target - old_available).max(0).min(budget);
        *target -= unhealthy;
        budget -= unhealthy;
    }
    let mut can_remove = (available - min_available).max(0);
    for target in &mut targets {
        let step = (*target).min(can_remove);
        *target -= step;
        can_remove -= step;
    }
    targets
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{limits, new_replicas, scale_down_old};

    #[test]
    fn limits_resolve_numbers_and_percentages() {
        let cases = [
            (json!({"replicas": 10}), (3, 2)),
            (json!({"replicas": 10, "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}), (0, 1)),
            (json!({"replicas": 4, "strategy": {"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 1}}}), (2, 1)),
            (
                json!({"replicas": 3, "strategy": {"rollingUpdate": {"maxSurge": "10%", "maxUnavailable": "10%"}}}),
                (1, 0),
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(limits(&json!({"spec": spec})), expected, "{spec}");
        }
    }

    #[test]
    fn the_new_replica_set_grows_within_the_surge() {
        // (desired, surge, total, current) → new replicas
        let cases =
            [(3, 1, 3, 0, 1), (3, 1, 4, 1, 1), (3, 1, 2, 1, 3), (3, 0, 3, 0, 0), (3, 1, 5, 5, 3), (200, 50, 0, 0, 200)];
        for (desired, surge, total, current, expected) in cases {
            assert_eq!(new_replicas(desired, surge, total, current), expected, "{desired} {surge} {total} {current}");
        }
    }

    #[test]
    fn old_replica_sets_shrink_without_breaking_availability() {
        // 3 desired, 1 unavailable allowed, 4 in total (1 new not yet available, 3 old available).
        assert_eq!(scale_down_old(3, 1, 4, 1, 3, &[(3, 3)]), vec![2]);
        // Nothing may go: availability is at its minimum.
        assert_eq!(scale_down_old(3, 0, 4, 1, 3, &[(3, 3)]), vec![3]);
        // Unavailable old pods go first, even beyond available headroom.
        assert_eq!(scale_down_old(3, 0, 5, 0, 3, &[(2, 0), (3, 3)]), vec![0, 3]);
        // Oldest first.
        assert_eq!(scale_down_old(4, 1, 6, 0, 5, &[(1, 1), (2, 2)]), vec![0, 1]);
    }
}
