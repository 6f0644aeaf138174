// Scheduler plugin in JavaScript (Filter): only nodes carrying a configured label take pods.
// Pods that fit nowhere stay Pending with a `FailedScheduling` event naming the plugin, and are
// scheduled as soon as a node gets the label (`kubectl label node ...`).
//
// Configuration: {"label": "capstan.io/ready", "value": "true"} (value optional: any value
// matches). The host pushes node changes through `updateNodes`; the plugin keeps each node's
// labels between calls and is then asked about nodes by id. The pod comes the same way: `setPod`
// hands over the pod the later calls act on.

let label = "";
let value;
/** node id -> Map of label key -> value */
const nodes = new Map();

const success = { code: "success", reasons: [] };

export const lifecycle = {
  configure(config) {
    const parsed = JSON.parse(config || "{}");
    if (!parsed.label) throw "configuration needs a `label`";
    label = parsed.label;
    value = parsed.value;
  },
};

export const scheduler = {
  describe() {
    return { extensionPoints: { filter: true }, wantsNodeObjects: false, wantsNodePods: false };
  },
  updateNodes(_generation, reset, changes) {
    if (reset) nodes.clear();
    for (const change of changes) {
      if (change.tag === "upsert") {
        nodes.set(change.val.id, new Map(change.val.labels.map((l) => [l.key, l.value])));
      } else if (change.tag === "remove") {
        nodes.delete(change.val);
      }
      // "usage": only the node's pods changed; its labels stay.
    }
  },
  // The pod the calls below act on; this filter looks only at nodes.
  setPod(_pod) {},
  // Returns only the nodes that do not fit, with why; the others fit.
  filter(_state, ids) {
    const wanted = value === undefined ? label : `${label}=${value}`;
    const refused = { code: "unschedulable-and-unresolvable", reasons: [`node(s) lacked label ${wanted}`] };
    const fits = (id) => {
      const labels = nodes.get(id);
      return labels !== undefined && labels.has(label) && (value === undefined || labels.get(label) === value);
    };
    return ids.filter((id) => !fits(id)).map((node) => ({ node, status: refused }));
  },
  // The extension points below are not in `describe`; the host never calls them.
  queueSortKey() {
    return 0n;
  },
  preFilter() {
    return { status: success, nodes: undefined, state: new Uint8Array() };
  },
  postFilter(_state, _filtered) {
    return { status: { code: "unschedulable", reasons: [] }, nominatedNode: undefined, victims: [] };
  },
  preScore(state, _nodes) {
    return state;
  },
  score(_state, ids) {
    return ids.map(() => 0n);
  },
  normalizeScore(_state, _nodes, scores) {
    return scores;
  },
  reserve(_state, _node) {
    return success;
  },
  unreserve(_state, _node) {},
  permit(_state, _node) {
    return { status: success, timeoutMs: 0 };
  },
  preBind(_state, _node) {
    return success;
  },
  bind(_state, _node) {
    return { code: "skip", reasons: [] };
  },
  postBind(_state, _node) {},
};
