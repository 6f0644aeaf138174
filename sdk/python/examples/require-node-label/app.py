"""Scheduler plugin in Python (Filter): only nodes carrying a configured label take pods.

Pods that fit nowhere stay Pending with a `FailedScheduling` event naming the plugin, and are
scheduled as soon as a node gets the label (`kubectl label node ...`).

Configuration: `{"label": "capstan.io/ready", "value": "true"}` (value optional: any value
matches). The host pushes node changes through `update_nodes`; the plugin keeps each node's
labels between calls and is then asked about nodes by id. The pod comes the same way: `set_pod`
hands over the pod the later calls act on.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.scheduler import (
    Code,
    Description,
    ExtensionPoints,
    NodeChange_Remove,
    NodeChange_Upsert,
    NodeStatus,
    PermitResult,
    PostFilterResult,
    PreFilterResult,
    Status,
)

LABEL = ""
VALUE = None
# node id -> {label key: value}
NODES = {}

SUCCESS = Status(code=Code.SUCCESS, reasons=[])


class Lifecycle(exports.Lifecycle):
    def configure(self, config: str) -> None:
        global LABEL, VALUE
        try:
            parsed = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"invalid configuration: {e}")
        LABEL = parsed.get("label") or ""
        VALUE = parsed.get("value")
        if not LABEL:
            raise Err("configuration needs a `label`")


class Scheduler(exports.Scheduler):
    def describe(self) -> Description:
        return Description(extension_points=ExtensionPoints.FILTER, wants_node_objects=False, wants_node_pods=False)

    def update_nodes(self, generation, reset, changes) -> None:
        if reset:
            NODES.clear()
        for change in changes:
            if isinstance(change, NodeChange_Upsert):
                NODES[change.value.id] = {label.key: label.value for label in change.value.labels}
            elif isinstance(change, NodeChange_Remove):
                NODES.pop(change.value, None)
            # NodeChange_Usage: only the node's pods changed; its labels stay.

    def set_pod(self, pod) -> None:
        # The pod the calls below act on; this filter looks only at nodes.
        pass

    def filter(self, state, nodes):
        # Only the nodes that do not fit are returned, with why; the others fit.
        wanted = LABEL if VALUE is None else f"{LABEL}={VALUE}"
        refused = Status(code=Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons=[f"node(s) lacked label {wanted}"])
        misfits = []
        for node in nodes:
            labels = NODES.get(node, {})
            if not (LABEL in labels and (VALUE is None or labels[LABEL] == VALUE)):
                misfits.append(NodeStatus(node=node, status=refused))
        return misfits

    # The extension points below are not in `describe`; the host never calls them.
    def queue_sort_key(self):
        return 0

    def pre_filter(self):
        return PreFilterResult(status=SUCCESS, nodes=None, state=b"")

    def post_filter(self, state, filtered):
        return PostFilterResult(status=Status(code=Code.UNSCHEDULABLE, reasons=[]), nominated_node=None, victims=[])

    def pre_score(self, state, nodes):
        return state

    def score(self, state, nodes):
        return [0 for _ in nodes]

    def normalize_score(self, state, nodes, scores):
        return scores

    def reserve(self, state, node):
        return SUCCESS

    def unreserve(self, state, node):
        pass

    def permit(self, state, node):
        return PermitResult(status=SUCCESS, timeout_ms=0)

    def pre_bind(self, state, node):
        return SUCCESS

    def bind(self, state, node):
        return Status(code=Code.SKIP, reasons=[])

    def post_bind(self, state, node):
        pass
