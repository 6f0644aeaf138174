//! Test fixture: a scheduler plugin whose Filter traps (a panic, which aborts under
//! `panic = "abort"`), to prove a trapping plugin fails its cycle, not the scheduler.

use capstan_plugin_sdk::scheduler::{ExtensionPoints, NodeInfo, PodInfo, SchedulerPlugin, Status};

/// Traps on every filter call.
pub struct TrapFilter;

impl SchedulerPlugin for TrapFilter {
    type Cycle = ();

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn cycle(&self, _pod: &PodInfo, _state: &[u8]) -> Result<(), Status> {
        Ok(())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::FILTER
    }

    fn filter(&self, pod: &PodInfo, _cycle: &(), node: &NodeInfo) -> Status {
        panic!("fixture trap while filtering {} on {}", pod.name, node.name)
    }
}

capstan_plugin_sdk::scheduler_plugin!(TrapFilter);
