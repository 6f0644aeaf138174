//! DefaultBinder (Bind): has the host bind the pod by writing `pods/binding`, as upstream's
//! default binder does. A component cannot reach the API server itself; its success tells the
//! host to write the binding.

use capstan_plugin_sdk::scheduler::{ExtensionPoints, NodeInfo, PodInfo, SchedulerPlugin, Status};

/// Binds through the API.
pub struct DefaultBinder;

impl SchedulerPlugin for DefaultBinder {
    type Cycle = ();

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn cycle(&self, _pod: &PodInfo, _state: &[u8]) -> Result<(), Status> {
        Ok(())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::BIND
    }

    fn bind(&self, _pod: &PodInfo, _cycle: &(), _node: &NodeInfo) -> Status {
        Status::success()
    }
}

capstan_plugin_sdk::scheduler_plugin!(DefaultBinder);

#[cfg(test)]
mod tests {
    use super::{DefaultBinder, NodeInfo, PodInfo, SchedulerPlugin};

    #[test]
    fn every_pod_is_bound_by_the_host() {
        for name in ["a", "b"] {
            let status = DefaultBinder.bind(&PodInfo::named("default", name), &(), &NodeInfo::named(1, "n1"));
            assert!(status.is_success());
        }
    }
}
