"""Controller in Python: ConfigMaps carrying a label get an annotation with a checksum of their
data, so whatever consumes them (a Deployment's pod template, a reloader) can tell when it changed.

Configuration: `{"label": "capstan.io/checksum", "annotation": "capstan.io/data-checksum"}` (the
defaults). The checksum is FNV-1a (32-bit, hex) over the sorted `key NUL value NUL` of `data`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.reconciler import (
    ReconcileResult_Done,
    ReconcileResult_Error,
    ReconcileResult_RequeueAfter,
    Watches,
)
from wit_world.imports import client
from wit_world.imports.types import GroupVersionKind

LABEL = "capstan.io/checksum"
ANNOTATION = "capstan.io/data-checksum"
CONFIG_MAPS = GroupVersionKind(group="", version="v1", kind="ConfigMap")


def checksum(data):
    h = 0x811C9DC5
    for key in sorted(data):
        for byte in key.encode() + b"\0" + str(data[key]).encode() + b"\0":
            h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


class Lifecycle(exports.Lifecycle):
    def configure(self, config: str) -> None:
        global LABEL, ANNOTATION
        try:
            parsed = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"invalid configuration: {e}")
        LABEL = parsed.get("label", LABEL)
        ANNOTATION = parsed.get("annotation", ANNOTATION)


class Reconciler(exports.Reconciler):
    def describe(self) -> Watches:
        return Watches(primary=CONFIG_MAPS, owned=[], others=[])

    def map_to_keys(self, kind, object):
        return []

    def reconcile(self, key):
        try:
            found = client.get(CONFIG_MAPS, key)
        except Err as e:
            return ReconcileResult_Error(f"cannot read ConfigMap {key.name}: {e.value.message}")
        if found is None:
            return ReconcileResult_Done()
        metadata = json.loads(found).get("metadata", {})
        if LABEL not in (metadata.get("labels") or {}):
            return ReconcileResult_Done()
        wanted = checksum(json.loads(found).get("data") or {})
        if (metadata.get("annotations") or {}).get(ANNOTATION) == wanted:
            return ReconcileResult_Done()
        patch = {"metadata": {"annotations": {ANNOTATION: wanted}}}
        try:
            client.patch(CONFIG_MAPS, key, client.PatchType.MERGE, json.dumps(patch), None)
        except Err as e:
            if e.value.code in (404, 409):
                return ReconcileResult_RequeueAfter(200)
            return ReconcileResult_Error(f"cannot annotate ConfigMap {key.name}: {e.value.message}")
        return ReconcileResult_Done()
