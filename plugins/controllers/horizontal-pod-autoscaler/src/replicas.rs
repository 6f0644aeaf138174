//! The arithmetic of the `HorizontalPodAutoscaler`, as Kubernetes documents it ("Algorithm
//! details" in the HPA task page): a replica count proposed from one resource metric, then
//! stabilised and rate-limited by the HPA's `behavior`, then clamped to `minReplicas` and
//! `maxReplicas`.

/// How far from the target a ratio may be before the HPA acts (upstream's default tolerance).
pub const TOLERANCE: f64 = 0.1;

/// One pod the scale target selects, as the resource metric sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodUsage {
    /// The pod's name.
    pub name: String,
    /// Whether the pod counts as ready (a not-ready pod is set aside on a scale-up).
    pub ready: bool,
    /// The pod's usage of the resource in thousandths (millicores, milli-bytes), if the metrics
    /// API has it.
    pub usage: Option<i128>,
    /// The sum of its containers' requests for the resource in thousandths; `None` when a
    /// container has none (a utilization target cannot be computed then).
    pub request: Option<i128>,
}

/// What the metric aims at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// A percentage of the pods' requests (`averageUtilization`).
    Utilization(i64),
    /// An average usage per pod in thousandths (`averageValue`).
    AverageValue(i128),
}

/// A replica count proposed from one metric, with the metric's current value for the status.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proposal {
    /// The proposed replica count.
    pub replicas: i64,
    /// The current average utilization in percent (utilization targets only).
    pub utilization: Option<i64>,
    /// The current average usage per pod in thousandths.
    pub average: i128,
}

/// Usage over target for `values` (pod → usage), or `None` when nothing can be computed.
fn ratio(values: &[(i128, i128)], target: Target) -> Option<(f64, Option<i64>, i128)> {
    if values.is_empty() {
        return None;
    }
    let usage: i128 = values.iter().map(|(u, _)| u).sum();
    let average = usage / values.len() as i128;
    match target {
        Target::Utilization(percent) => {
            let requests: i128 = values.iter().map(|(_, r)| r).sum();
            if requests <= 0 || percent <= 0 {
                return None;
            }
            let utilization = usage * 100 / requests;
            Some((utilization as f64 / percent as f64, Some(utilization as i64), average))
        }
        Target::AverageValue(value) => (value > 0).then(|| (average as f64 / value as f64, None, average)),
    }
}

/// The replica count one resource metric asks for, given `current` replicas and the pods.
pub fn propose(current: i64, pods: &[PodUsage], target: Target) -> Result<Proposal, String> {
    let request_of = |pod: &PodUsage| -> Result<i128, String> {
        match (target, pod.request) {
            (Target::Utilization(_), None) => Err(format!("missing request for the resource in pod {}", pod.name)),
            (_, request) => Ok(request.unwrap_or(0)),
        }
    };
    let mut measured = Vec::new();
    let mut unready = Vec::new();
    let mut missing = Vec::new();
    for pod in pods {
        let request = request_of(pod)?;
        match pod.usage {
            None => missing.push(request),
            Some(_) if !pod.ready => unready.push(request),
            Some(usage) => measured.push((usage, request)),
        }
    }
    let Some((usage_ratio, utilization, average)) = ratio(&measured, target) else {
        return Err("did not receive metrics for any ready pods".into());
    };
    let keep = Proposal { replicas: current, utilization, average };
    let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(keep);
        }
        let replicas = (usage_ratio * measured.len() as f64).ceil() as i64;
        return Ok(Proposal { replicas, ..keep });
    }
    // Missing pods count as using their whole request (or the target, if higher) on a scale-down
    // and nothing on a scale-up; unready pods as nothing on a scale-up. Then the ratio is
    // recomputed, and the HPA acts only if it still points the same way.
    let mut values = measured.clone();
    for request in &missing {
        let assumed = if usage_ratio < 1.0 {
            match target {
                Target::Utilization(percent) => request * i128::from(percent.max(100)) / 100,
                Target::AverageValue(value) => value,
            }
        } else {
            0
        };
        if (usage_ratio - 1.0).abs() > f64::EPSILON {
            values.push((assumed, *request));
        }
    }
    if scale_up_with_unready {
        values.extend(unready.iter().map(|request| (0, *request)));
    }
    let Some((new_ratio, _, _)) = ratio(&values, target) else { return Ok(keep) };
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(keep);
    }
    let replicas = (new_ratio * values.len() as f64).ceil() as i64;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(keep);
    }
    Ok(Proposal { replicas, ..keep })
}

/// A scaling policy: how much may change within a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// At most `value` pods per `period` seconds.
    Pods {
        /// How many pods.
        value: i64,
        /// The period in seconds.
        period: i64,
    },
    /// At most `value` percent of the replicas at the period's start per `period` seconds.
    Percent {
        /// The percentage.
        value: i64,
        /// The period in seconds.
        period: i64,
    },
}

impl Policy {
    fn period(self) -> i64 {
        match self {
            Policy::Pods { period, .. } | Policy::Percent { period, .. } => period,
        }
    }
}

/// How the policies of one direction combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the most change.
    Max,
    /// The policy allowing the least change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// One direction of `spec.behavior`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// Recommendations within this many seconds are considered together.
    pub stabilization: i64,
    /// The policies.
    pub policies: Vec<Policy>,
    /// How they combine.
    pub select: Select,
}

impl Rules {
    /// Upstream's default scale-up rules: no stabilization; double or add 4 pods per 15 s,
    /// whichever is more.
    #[must_use]
    pub fn default_up() -> Self {
        Rules {
            stabilization: 0,
            policies: vec![Policy::Percent { value: 100, period: 15 }, Policy::Pods { value: 4, period: 15 }],
            select: Select::Max,
        }
    }

    /// Upstream's default scale-down rules: the highest recommendation of the last 5 minutes;
    /// down to the minimum at once.
    #[must_use]
    pub fn default_down() -> Self {
        Rules { stabilization: 300, policies: vec![Policy::Percent { value: 100, period: 15 }], select: Select::Max }
    }
}

/// What the controller remembers about one HPA between syncs (upstream keeps the same in memory).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Past recommendations: (time in seconds, replicas).
    pub recommendations: Vec<(i64, i64)>,
    /// Past scale changes: (time in seconds, change in replicas).
    pub events: Vec<(i64, i64)>,
}

impl History {
    /// The history as the host keeps it, tied to the HPA's UID.
    #[must_use]
    pub fn encode(&self, uid: &str) -> String {
        serde_json::json!({"uid": uid, "recommendations": self.recommendations, "events": self.events}).to_string()
    }

    /// A kept history, if it belongs to the HPA with `uid` (not to a deleted one of that name).
    #[must_use]
    pub fn decode(text: &str, uid: &str) -> Option<Self> {
        let kept: serde_json::Value = serde_json::from_str(text).ok()?;
        let pairs = |field: &str| -> Option<Vec<(i64, i64)>> { serde_json::from_value(kept[field].clone()).ok() };
        if kept["uid"] != uid {
            return None;
        }
        Some(Self { recommendations: pairs("recommendations")?, events: pairs("events")? })
    }
}

/// The inputs of one decision.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// `minReplicas`.
    pub min: i64,
    /// `maxReplicas`.
    pub max: i64,
    /// Scale-up rules.
    pub up: Rules,
    /// Scale-down rules.
    pub down: Rules,
}

/// Why the final count differs from the stabilised recommendation, for the `ScalingLimited`
/// condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Within range.
    None,
    /// Held at `maxReplicas`.
    TooMany,
    /// Held at `minReplicas`.
    TooFew,
    /// Held by a scale-up policy.
    ScaleUpLimit,
    /// Held by a scale-down policy.
    ScaleDownLimit,
}

/// The replica count to set now, from `current` and the metrics' `desired`, updating `history`.
pub fn decide(current: i64, desired: i64, bounds: &Bounds, history: &mut History, now: i64) -> (i64, Limit) {
    // Stabilization: a scale-up follows the lowest recommendation within its window, a
    // scale-down the highest within its.
    let longest = bounds.up.stabilization.max(bounds.down.stabilization);
    history.recommendations.retain(|(at, _)| now - at <= longest);
    let mut up = desired;
    let mut down = desired;
    for &(at, replicas) in &history.recommendations {
        if now - at <= bounds.up.stabilization {
            up = up.min(replicas);
        }
        if now - at <= bounds.down.stabilization {
            down = down.max(replicas);
        }
    }
    history.recommendations.push((now, desired));
    let mut stabilized = current;
    if stabilized < up {
        stabilized = up;
    }
    if stabilized > down {
        stabilized = down;
    }
    // Rate limits, from the changes made within each policy's period.
    let longest_period = bounds.up.policies.iter().chain(&bounds.down.policies).map(|p| p.period()).max().unwrap_or(0);
    history.events.retain(|(at, _)| now - at <= longest_period);
    let changed_within = |period: i64, sign: i64| -> i64 {
        history
            .events
            .iter()
            .filter(|(at, change)| now - at < period && change.signum() == sign)
            .map(|(_, c)| c.abs())
            .sum()
    };
    let mut limit = Limit::None;
    let mut replicas = stabilized;
    if stabilized > current {
        let limits = bounds.up.policies.iter().map(|policy| {
            let start = current - changed_within(policy.period(), 1);
            match *policy {
                Policy::Pods { value, .. } => start + value,
                Policy::Percent { value, .. } => (start as f64 * (1.0 + value as f64 / 100.0)).ceil() as i64,
            }
        });
        let allowed = match bounds.up.select {
            Select::Max => limits.max().unwrap_or(current),
            Select::Min => limits.min().unwrap_or(current),
            Select::Disabled => current,
        };
        let allowed = allowed.max(current);
        if replicas > allowed {
            replicas = allowed;
            limit = Limit::ScaleUpLimit;
        }
    } else if stabilized < current {
        let limits = bounds.down.policies.iter().map(|policy| {
            let start = current + changed_within(policy.period(), -1);
            match *policy {
                Policy::Pods { value, .. } => start - value,
                Policy::Percent { value, .. } => (start as f64 * (1.0 - value as f64 / 100.0)).ceil() as i64,
            }
        });
        let allowed = match bounds.down.select {
            Select::Max => limits.min().unwrap_or(current),
            Select::Min => limits.max().unwrap_or(current),
            Select::Disabled => current,
        };
        let allowed = allowed.min(current);
        if replicas < allowed {
            replicas = allowed;
            limit = Limit::ScaleDownLimit;
        }
    }
    if replicas > bounds.max {
        replicas = bounds.max;
        limit = Limit::TooMany;
    } else if replicas < bounds.min {
        replicas = bounds.min;
        limit = Limit::TooFew;
    }
    if replicas != current {
        history.events.push((now, replicas - current));
    }
    (replicas, limit)
}
