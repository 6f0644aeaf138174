//! PrioritySort (QueueSort): pods with a higher `spec.priority` leave the active queue first;
//! among equal priorities the host keeps arrival order, as upstream's `Less` does with the
//! queue timestamp.

use capstan_plugin_sdk::scheduler::{ExtensionPoints, PodInfo, SchedulerPlugin, Status};

/// Orders the queue by priority.
pub struct PrioritySort;

impl SchedulerPlugin for PrioritySort {
    type Cycle = ();

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn cycle(&self, _pod: &PodInfo, _state: &[u8]) -> Result<(), Status> {
        Ok(())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::QUEUE_SORT
    }

    fn queue_sort_key(&self, pod: &PodInfo) -> i64 {
        i64::from(pod.priority)
    }
}

capstan_plugin_sdk::scheduler_plugin!(PrioritySort);

#[cfg(test)]
mod tests {
    use super::{PodInfo, PrioritySort, SchedulerPlugin};

    #[test]
    fn higher_priority_sorts_first() {
        let cases = [(0, 0), (1000, 1000), (-5, -5), (2_000_000_000, 2_000_000_000)];
        for (priority, key) in cases {
            let mut pod = PodInfo::named("default", "p");
            pod.priority = priority;
            assert_eq!(PrioritySort.queue_sort_key(&pod), key, "priority {priority}");
        }
    }
}
