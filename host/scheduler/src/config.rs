//! What profiles the scheduler runs: the default profile, a `--scheduler-config` file shaped
//! like `KubeSchedulerConfiguration`, and how plugin names map to components.
//!
//! ```yaml
//! apiVersion: kubescheduler.config.k8s.io/v1
//! kind: KubeSchedulerConfiguration
//! percentageOfNodesToScore: 50
//! profiles:
//! - schedulerName: default-scheduler
//!   plugins:
//!     multiPoint:
//!       enabled: [{name: PreferLabel, weight: 5}]
//!       disabled: [{name: NodeResourcesBalancedAllocation}]
//!     score:
//!       enabled: [{name: NodeResourcesFit, weight: 2}]
//!   pluginConfig:
//!   - name: NodeResourcesFit
//!     args: {scoringStrategy: {type: MostAllocated}}
//!   - name: PreferLabel
//!     component: /opt/plugins/prefer_label.wasm
//!     args: {label: fast}
//! ```
//!
//! Each profile starts from the default plugins (unless `multiPoint.disabled` lists `*`);
//! `enabled` adds plugins or changes weights at any extension point, `disabled` removes a plugin
//! from the profile. A plugin's extension points are what its component says it implements.
//! Plugins not shipped with Capstan name their component in `pluginConfig[].component`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `default-scheduler`, the profile pods get without `spec.schedulerName`.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// The default plugins: (name, component crate, weight), upstream's default profile in order.
pub const DEFAULT_PLUGINS: &[(&str, &str, i64)] = &[
    ("PrioritySort", "priority-sort", 0),
    ("NodeUnschedulable", "node-unschedulable", 0),
    ("NodeName", "node-name", 0),
    ("TaintToleration", "taint-toleration", 3),
    ("NodeAffinity", "node-affinity", 2),
    ("NodePorts", "node-ports", 0),
    ("NodeResourcesFit", "node-resources-fit", 1),
    ("PodTopologySpread", "pod-topology-spread", 2),
    ("InterPodAffinity", "inter-pod-affinity", 2),
    ("DefaultPreemption", "default-preemption", 0),
    ("NodeResourcesBalancedAllocation", "node-resources-balanced-allocation", 1),
    ("ImageLocality", "image-locality", 1),
    ("DefaultBinder", "default-binder", 0),
];

/// Where a plugin's component comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComponentRef {
    /// A component shipped with Capstan, by crate name (`node-resources-fit`).
    Builtin(String),
    /// A `.wasm` file.
    File(PathBuf),
}

/// One plugin of a profile.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginRef {
    /// The plugin's name in the profile.
    pub name: String,
    /// Its component.
    pub component: ComponentRef,
    /// Its score weight.
    pub weight: i64,
    /// Its configuration (`args`), as JSON.
    pub args: serde_json::Value,
}

/// One profile.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileConfig {
    /// The `spec.schedulerName` it serves.
    pub scheduler_name: String,
    /// Its plugins, in order.
    pub plugins: Vec<PluginRef>,
}

/// The scheduler's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// The profiles.
    pub profiles: Vec<ProfileConfig>,
    /// `percentageOfNodesToScore`; 0 is adaptive.
    pub percentage_of_nodes_to_score: u32,
    /// `parallelism`: how many threads filter one pod's candidate nodes at once; `None` is one
    /// per core but one, and at least one (upstream's default is 16 goroutines, which Go
    /// multiplexes onto its cores). The core left out is the API server's: the scheduler runs in
    /// `capstan server`, and on two cores a cycle split in two was a third slower
    /// (the `PodAntiAffinity` workload, all-WASM profile: 193 against 282 pods/s), each share's instances
    /// being brought up to date apart while the API server waited for a core.
    pub parallelism: Option<u32>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            profiles: vec![default_profile(DEFAULT_SCHEDULER_NAME)],
            percentage_of_nodes_to_score: 0,
            parallelism: None,
        }
    }
}

impl SchedulerConfig {
    /// The threads a cycle filters with: `parallelism`, or one per core but one (at least one).
    #[must_use]
    pub fn filter_threads(&self) -> usize {
        match self.parallelism {
            Some(threads) => threads.max(1) as usize,
            None => cores().saturating_sub(1).max(1),
        }
    }
}

/// The cores this process may run on (1 when unknown).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The default profile under `scheduler_name`.
#[must_use]
pub fn default_profile(scheduler_name: &str) -> ProfileConfig {
    let plugins = DEFAULT_PLUGINS
        .iter()
        .map(|(name, component, weight)| PluginRef {
            name: (*name).to_owned(),
            component: ComponentRef::Builtin((*component).to_owned()),
            weight: *weight,
            args: serde_json::json!({}),
        })
        .collect();
    ProfileConfig { scheduler_name: scheduler_name.to_owned(), plugins }
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read scheduler configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("invalid scheduler configuration {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    percentage_of_nodes_to_score: Option<u32>,
    #[serde(default)]
    parallelism: Option<i64>,
    #[serde(default)]
    profiles: Vec<FileProfile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileProfile {
    #[serde(default)]
    scheduler_name: Option<String>,
    #[serde(default)]
    plugins: std::collections::BTreeMap<String, PluginSet>,
    #[serde(default)]
    plugin_config: Vec<PluginConfigEntry>,
}

#[derive(Deserialize, Default)]
struct PluginSet {
    #[serde(default)]
    enabled: Vec<NamedPlugin>,
    #[serde(default)]
    disabled: Vec<NamedPlugin>,
}

#[derive(Deserialize)]
struct NamedPlugin {
    name: String,
    #[serde(default)]
    weight: Option<i64>,
}

#[derive(Deserialize)]
struct PluginConfigEntry {
    name: String,
    #[serde(default)]
    args: Option<serde_json::Value>,
    #[serde(default)]
    component: Option<PathBuf>,
}

impl SchedulerConfig {
    /// Reads a `KubeSchedulerConfiguration` file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid { path: path.into(), message })
    }

    /// Parses a `KubeSchedulerConfiguration` document (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(kind) = file.kind.as_deref().filter(|k| *k != "KubeSchedulerConfiguration") {
            return Err(format!("kind is {kind}, expected KubeSchedulerConfiguration"));
        }
        let percentage = file.percentage_of_nodes_to_score.unwrap_or(0);
        if percentage > 100 {
            return Err("percentageOfNodesToScore must be between 0 and 100".to_owned());
        }
        // As upstream's validation: "should be greater than zero".
        let parallelism = file
            .parallelism
            .map(|n| {
                u32::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("parallelism: Invalid value: {n}: should be greater than zero"))
            })
            .transpose()?;
        let mut profiles = Vec::new();
        for profile in file.profiles {
            profiles.push(profile_from_file(profile)?);
        }
        if profiles.is_empty() {
            profiles.push(default_profile(DEFAULT_SCHEDULER_NAME));
        }
        Ok(Self { profiles, percentage_of_nodes_to_score: percentage, parallelism })
    }
}

fn profile_from_file(file: FileProfile) -> Result<ProfileConfig, String> {
    let name = file.scheduler_name.unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.to_owned());
    let mut profile = default_profile(&name);
    let disable_all = file.plugins.get("multiPoint").is_some_and(|set| set.disabled.iter().any(|p| p.name == "*"));
    if disable_all {
        profile.plugins.clear();
    }
    for set in file.plugins.values() {
        let disabled: Vec<&str> = set.disabled.iter().map(|p| p.name.as_str()).filter(|n| *n != "*").collect();
        profile.plugins.retain(|p| !disabled.contains(&p.name.as_str()));
    }
    for set in file.plugins.values() {
        for enabled in &set.enabled {
            match profile.plugins.iter_mut().find(|p| p.name == enabled.name) {
                Some(plugin) => plugin.weight = enabled.weight.unwrap_or(plugin.weight),
                None => profile.plugins.push(PluginRef {
                    name: enabled.name.clone(),
                    component: builtin(&enabled.name).map_or_else(
                        || ComponentRef::File(PathBuf::new()),
                        |crate_name| ComponentRef::Builtin(crate_name.to_owned()),
                    ),
                    weight: enabled.weight.unwrap_or(1),
                    args: serde_json::json!({}),
                }),
            }
        }
    }
    for entry in file.plugin_config {
        let Some(plugin) = profile.plugins.iter_mut().find(|p| p.name == entry.name) else {
            return Err(format!("pluginConfig names {}, which profile {name} does not enable", entry.name));
        };
        if let Some(args) = entry.args {
            plugin.args = args;
        }
        if let Some(component) = entry.component {
            plugin.component = ComponentRef::File(component);
        }
    }
    if let Some(plugin) = profile.plugins.iter().find(|p| p.component == ComponentRef::File(PathBuf::new())) {
        return Err(format!(
            "plugin {} of profile {name} is not shipped with Capstan: name its component in pluginConfig",
            plugin.name
        ));
    }
    Ok(profile)
}

fn builtin(name: &str) -> Option<&'static str> {
    DEFAULT_PLUGINS.iter().find(|(n, _, _)| *n == name).map(|(_, component, _)| *component)
}

#[cfg(test)]
mod tests {
    use super::{ComponentRef, DEFAULT_PLUGINS, SchedulerConfig, cores};

    #[test]
    fn parallelism_must_be_positive_as_upstream_validates() {
        for bad in ["0", "-2"] {
            let error = SchedulerConfig::parse(&format!("kind: KubeSchedulerConfiguration\nparallelism: {bad}"));
            assert_eq!(error, Err(format!("parallelism: Invalid value: {bad}: should be greater than zero")));
        }
        let default = SchedulerConfig::parse("kind: KubeSchedulerConfiguration").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(default.parallelism, None);
        assert_eq!(default.filter_threads(), cores().saturating_sub(1).max(1), "unset: one per core but one");
    }

    #[test]
    fn a_file_edits_the_default_profile() {
        let config = SchedulerConfig::parse(
            r"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 50
parallelism: 3
profiles:
- schedulerName: default-scheduler
  plugins:
    multiPoint:
      enabled: [{name: PreferLabel, weight: 5}]
      disabled: [{name: NodeResourcesBalancedAllocation}]
    score:
      enabled: [{name: NodeResourcesFit, weight: 2}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
  - name: PreferLabel
    component: /opt/prefer_label.wasm
- schedulerName: bare
  plugins:
    multiPoint:
      disabled: [{name: '*'}]
      enabled: [{name: NodeName}, {name: DefaultBinder}]
",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.percentage_of_nodes_to_score, 50);
        assert_eq!((config.parallelism, config.filter_threads()), (Some(3), 3));
        let default = &config.profiles[0];
        assert_eq!(default.plugins.len(), DEFAULT_PLUGINS.len());
        assert!(default.plugins.iter().all(|p| p.name != "NodeResourcesBalancedAllocation"));
        let fit = default.plugins.iter().find(|p| p.name == "NodeResourcesFit");
        assert!(fit.is_some_and(|p| p.weight == 2 && p.args["scoringStrategy"]["type"] == "MostAllocated"));
        let custom = default.plugins.iter().find(|p| p.name == "PreferLabel");
        assert!(
            custom.is_some_and(|p| p.weight == 5 && p.component == ComponentRef::File("/opt/prefer_label.wasm".into()))
        );
        let names: Vec<_> = config.profiles[1].plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["NodeName", "DefaultBinder"]);
    }

    #[test]
    fn unknown_plugins_need_a_component() {
        let error = SchedulerConfig::parse("profiles: [{plugins: {score: {enabled: [{name: Mine}]}}}]");
        assert!(error.is_err_and(|e| e.contains("Mine")));
        assert!(SchedulerConfig::parse("kind: Pod").is_err());
        assert_eq!(SchedulerConfig::parse("{}").map(|c| c.profiles.len()), Ok(1));
    }
}
