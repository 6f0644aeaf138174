// Controller in JavaScript: ConfigMaps carrying a label get an annotation with a checksum of
// their data, so whatever consumes them (a Deployment's pod template, a reloader) can tell when
// it changed.
//
// Configuration: {"label": "capstan.io/checksum", "annotation": "capstan.io/data-checksum"} (the
// defaults). The checksum is FNV-1a (32-bit, hex) over the sorted `key NUL value NUL` of `data`.

import { get, patch } from "capstan:plugin/client@0.1.0";

let label = "capstan.io/checksum";
let annotation = "capstan.io/data-checksum";
const configMaps = { group: "", version: "v1", kind: "ConfigMap" };

function checksum(data) {
  const encoder = new TextEncoder();
  let h = 0x811c9dc5;
  for (const key of Object.keys(data).sort()) {
    for (const part of [key, String(data[key])]) {
      for (const byte of [...encoder.encode(part), 0]) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
    }
  }
  return h.toString(16).padStart(8, "0");
}

export const lifecycle = {
  configure(config) {
    const parsed = JSON.parse(config || "{}");
    label = parsed.label ?? label;
    annotation = parsed.annotation ?? annotation;
  },
};

export const reconciler = {
  describe() {
    return { primary: configMaps, owned: [], others: [] };
  },
  mapToKeys(_kind, _object) {
    return [];
  },
  reconcile(key) {
    let found;
    try {
      found = get(configMaps, key);
    } catch (e) {
      return { tag: "error", val: `cannot read ConfigMap ${key.name}: ${e.payload?.message ?? e}` };
    }
    if (found === undefined) return { tag: "done" };
    const object = JSON.parse(found);
    const metadata = object.metadata ?? {};
    if (!(label in (metadata.labels ?? {}))) return { tag: "done" };
    const wanted = checksum(object.data ?? {});
    if ((metadata.annotations ?? {})[annotation] === wanted) return { tag: "done" };
    try {
      patch(configMaps, key, "merge", JSON.stringify({ metadata: { annotations: { [annotation]: wanted } } }), undefined);
    } catch (e) {
      const code = e.payload?.code;
      if (code === 404 || code === 409) return { tag: "requeue-after", val: 200n };
      return { tag: "error", val: `cannot annotate ConfigMap ${key.name}: ${e.payload?.message ?? e}` };
    }
    return { tag: "done" };
  },
};
