"""Admission policy in Python: Pods get their namespace's `team` label when they lack one.

Mutating; needs the `cluster` import to read the Namespace. Configuration:
`{"label": "team"}` (the default) names the label.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.admission import AdmissionRequest, AdmissionResponse
from wit_world.imports import cluster
from wit_world.imports.types import GroupVersionResource

LABEL = "team"


def response(allowed=True, message=None, code=None, patch=None, warnings=None):
    return AdmissionResponse(
        allowed=allowed, message=message, code=code, warnings=warnings or [], patch=patch, audit_annotations=[]
    )


def escape(key):
    """A JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


class Lifecycle(exports.Lifecycle):
    def configure(self, config: str) -> None:
        global LABEL
        try:
            LABEL = json.loads(config or "{}").get("label", "team")
        except ValueError as e:
            raise Err(f"invalid configuration: {e}")


class Admission(exports.Admission):
    def validate(self, request: AdmissionRequest) -> AdmissionResponse:
        return response()

    def mutate(self, request: AdmissionRequest) -> AdmissionResponse:
        if request.object is None or request.namespace is None or request.sub_resource is not None:
            return response()
        pod = json.loads(request.object)
        labels = pod.get("metadata", {}).get("labels")
        if labels and LABEL in labels:
            return response()
        try:
            found = cluster.get(GroupVersionResource(group="", version="v1", resource="namespaces"), None, request.namespace)
        except Err as e:
            return response(False, f"cannot read namespace {request.namespace}: {e.value}", 500)
        if found is None:
            return response()
        team = json.loads(found).get("metadata", {}).get("labels", {}).get(LABEL)
        if team is None:
            return response()
        ops = [] if labels is not None else [{"op": "add", "path": "/metadata/labels", "value": {}}]
        ops.append({"op": "add", "path": "/metadata/labels/" + escape(LABEL), "value": team})
        return response(patch=json.dumps(ops))
