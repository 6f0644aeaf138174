// Admission policy in JavaScript: Pods (and workloads with a pod template) may only use images
// from registries on a configurable allow-list.
//
// Configuration: {"allowedRegistries": ["registry.example.com", "docker.io"]}. An image without
// a registry host ("busybox:1") is from docker.io, as container runtimes resolve it.

let allowed = ["docker.io"];

/// The registry host of an image reference.
function registryOf(image) {
  const slash = image.indexOf("/");
  if (slash < 0) return "docker.io";
  const first = image.slice(0, slash);
  return first.includes(".") || first.includes(":") || first === "localhost" ? first : "docker.io";
}

/// The pod spec inside a Pod, a workload's template, or a CronJob's job template.
function podSpec(object) {
  if (object.kind === "Pod") return object.spec;
  if (object.kind === "CronJob") return object.spec?.jobTemplate?.spec?.template?.spec;
  return object.spec?.template?.spec;
}

function allow(warnings = []) {
  return { allowed: true, message: undefined, code: undefined, warnings, patch: undefined, auditAnnotations: [] };
}

function deny(message) {
  return { ...allow(), allowed: false, message, code: 403 };
}

export const lifecycle = {
  configure(config) {
    const parsed = JSON.parse(config || "{}");
    if (parsed.allowedRegistries !== undefined) {
      if (!Array.isArray(parsed.allowedRegistries)) throw "allowedRegistries must be a list of registry hosts";
      allowed = parsed.allowedRegistries;
    }
  },
};

export const admission = {
  validate(request) {
    if (request.object === undefined || request.subResource !== undefined) return allow();
    const spec = podSpec(JSON.parse(request.object));
    if (!spec) return allow();
    const containers = [...(spec.initContainers ?? []), ...(spec.containers ?? []), ...(spec.ephemeralContainers ?? [])];
    const refused = containers
      .filter((c) => !allowed.includes(registryOf(c.image ?? "")))
      .map((c) => `container "${c.name}" uses image "${c.image}" from registry "${registryOf(c.image ?? "")}"`);
    if (refused.length === 0) return allow();
    return deny(`${refused.join("; ")}, which is not on the allow-list (${allowed.join(", ")})`);
  },
  mutate(_request) {
    return allow();
  },
};
