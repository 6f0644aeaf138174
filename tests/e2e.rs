//! The README's walkthrough, automated (issue 9): a cluster with a real node on containerd, the
//! example Deployment on real containers, a rolling update and undo, an admission policy in
//! Python and a scheduler filter in Rust applied with kubectl, the ReplicaSet controller replaced
//! while a Deployment scales, a restart that leaves the pods alone, and a delete that leaves
//! nothing behind. Everything goes through the real `kubectl` and the `capstan` binary.
//!
//! The steps run in one test because each builds on the cluster the previous one left. Step 8
//! (restart) runs before step 7 (delete) so that there are running pods to keep.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capstan_e2e::{
    CapstanServer, NodeServer, cgroups_of, http_get, json, kubectl, kubectl_stdin, point_plugin_at, rebuilt, sandboxes,
    sdk_example, start_node,
};

const NODE: &str = "e2e-node";
const OCTET: u8 = 121;

/// Polls `check` every 250 ms until it returns `Some`, or fails after `timeout` with `what` and
/// the cluster's pods and events.
fn eventually<T>(server: &CapstanServer, timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            let pods = server.kubectl(&["get", "pods", "-o", "wide"]);
            let events = server.kubectl(&["get", "events"]);
            panic!(
                "timed out after {timeout:?} waiting for {what}\npods:\n{}\nevents:\n{}",
                String::from_utf8_lossy(&pods.stdout),
                String::from_utf8_lossy(&events.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The pods of the web Deployment that are not being deleted.
fn web_pods(server: &CapstanServer) -> Vec<serde_json::Value> {
    let list = json(&kubectl(server, &["get", "pods", "-l", "app=web", "-o", "json"]));
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

fn is_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn name(pod: &serde_json::Value) -> String {
    pod["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

fn rollout(server: &CapstanServer) {
    let out = kubectl(server, &["rollout", "status", "deploy/web", "--timeout=180s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

/// Waits until the web Deployment has exactly `replicas` live pods, all Ready, and returns them.
fn ready_pods(server: &CapstanServer, replicas: usize) -> Vec<serde_json::Value> {
    eventually(server, Duration::from_mins(3), &format!("{replicas} Ready web pods"), || {
        let pods = web_pods(server);
        (pods.len() == replicas && pods.iter().all(is_ready)).then_some(pods)
    })
}

/// What `/etc/capstan-release` says in each pod (`1` for the `:latest` tag, `2` for `:2`).
fn releases(server: &CapstanServer) -> Vec<String> {
    web_pods(server)
        .iter()
        .map(|pod| kubectl(server, &["exec", &name(pod), "--", "cat", "/etc/capstan-release"]).trim().to_owned())
        .collect()
}

/// Waits until Plugin `plugin` reports `Loaded`, and returns it.
fn loaded(server: &CapstanServer, plugin: &str) -> serde_json::Value {
    eventually(server, Duration::from_mins(1), &format!("Plugin {plugin} loaded"), || {
        let run = server.kubectl(&["get", "plugin", plugin, "-o", "json"]);
        let object: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_default();
        (object["status"]["state"] == "Loaded").then_some(object)
    })
}

/// Container id and restart count of every web pod, by pod name.
fn containers(server: &CapstanServer) -> BTreeMap<String, (String, u64)> {
    web_pods(server)
        .iter()
        .map(|pod| {
            let status = &pod["status"]["containerStatuses"][0];
            let id = status["containerID"].as_str().unwrap_or_default().to_owned();
            (name(pod), (id, status["restartCount"].as_u64().unwrap_or(u64::MAX)))
        })
        .collect()
}

#[test]
#[allow(clippy::too_many_lines, reason = "the walkthrough reads top to bottom, step by step")]
fn from_a_fresh_cluster_to_a_rolling_update_with_every_plugin_in_wasm() {
    let web_yaml = capstan_testbed::repo_root().join("examples/web.yaml");
    let web_yaml = web_yaml.to_string_lossy().into_owned();

    // 1–2. The cluster: a Ready node on containerd; every shipped component loaded.
    let started = Instant::now();
    let server = NodeServer::new(start_node(None, NODE, OCTET)); // also imports the busybox image
    println!("cluster up with the node Ready and the image imported in {:?}", started.elapsed());
    for plugin in
        ["namespace-lifecycle", "service-account", "pod-security", "resource-quota", "deployment", "replicaset"]
    {
        loaded(&server, plugin);
    }
    let plugins = kubectl(&server, &["get", "plugins"]);
    assert!(plugins.contains("controller") && plugins.contains("admission"), "{plugins}");
    // The leader loads the controllers one after another: give the last ones time.
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let listed = json(&kubectl(&server, &["get", "plugins", "-o", "json"]));
        let states: Vec<(String, String)> = listed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (name(p), p["status"]["state"].as_str().unwrap_or("none").to_owned()))
            .collect();
        if states.iter().all(|(_, state)| state == "Loaded") {
            break;
        }
        assert!(Instant::now() < deadline, "every shipped component loads: {states:?}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // 3. The example Deployment: 3 pods Running on real containers, answering HTTP.
    let applied = Instant::now();
    kubectl(&server, &["apply", "-f", &web_yaml]);
    let pods = ready_pods(&server, 3);
    println!("3 web pods Running and Ready {:?} after kubectl apply", applied.elapsed());
    for pod in &pods {
        let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
        assert!(ip.starts_with(&format!("10.{OCTET}.")), "pod IP {ip} from the node's pod CIDR");
        let page = eventually(&server, Duration::from_secs(20), "HTTP from the pod", || {
            http_get(ip, 8080, "/").ok().filter(|page| page.contains("200 OK"))
        });
        assert!(page.contains(&format!("hello from {}", name(pod))), "{page}");
        let logs = kubectl(&server, &["logs", &name(pod)]);
        assert!(logs.contains("serving /www on :8080 (release 1)"), "{logs}");
    }
    let listing = kubectl(&server, &["exec", "deploy/web", "--", "ls", "/www"]);
    assert_eq!(listing.trim(), "index.html");
    // The service-account volume the admission policy added, filled by the node: a token bound
    // to the pod, the cluster CA and the namespace.
    let account = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token = kubectl(&server, &["exec", "deploy/web", "--", "cat", &format!("{account}/token")]);
    assert_eq!(token.split('.').count(), 3, "a JWT in the token file: {token}");
    let namespace = kubectl(&server, &["exec", "deploy/web", "--", "cat", &format!("{account}/namespace")]);
    assert_eq!(namespace, "default");
    let ca = kubectl(&server, &["exec", "deploy/web", "--", "cat", &format!("{account}/ca.crt")]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    // 4. Scale, then a rolling update to the second tag within maxUnavailable 1, and undo.
    kubectl(&server, &["scale", "deploy/web", "--replicas=5"]);
    rollout(&server);
    ready_pods(&server, 5);
    kubectl(&server, &["set", "image", "deploy/web", "httpd=capstan.local/busybox:2"]);
    let mut fewest_ready = usize::MAX;
    eventually(&server, Duration::from_mins(3), "the rollout to :2", || {
        let pods = web_pods(&server);
        fewest_ready = fewest_ready.min(pods.iter().filter(|p| is_ready(p)).count());
        let done = pods.len() == 5
            && pods.iter().all(|p| is_ready(p) && p["spec"]["containers"][0]["image"] == "capstan.local/busybox:2");
        done.then_some(())
    });
    assert!(fewest_ready >= 4, "maxUnavailable 1 of 5 replicas, yet only {fewest_ready} pods were Ready");
    rollout(&server);
    assert_eq!(releases(&server), vec!["2"; 5], "every pod runs the :2 image");
    kubectl(&server, &["rollout", "undo", "deploy/web"]);
    rollout(&server);
    ready_pods(&server, 5);
    assert_eq!(releases(&server), vec!["1"; 5], "undo brought back :latest");

    // 5a. An admission policy written in Python, applied with kubectl: new pods carry the label.
    let policy = sdk_example("sdk/python/build", "sdk/python/examples/default-team", "default_team.wasm");
    kubectl(&server, &["label", "namespace", "default", "team=storefront"]);
    let manifest = format!(
        "apiVersion: capstan.io/v1alpha1
kind: Plugin
metadata: {{name: default-team}}
spec:
  kind: admission
  component: {{path: {policy:?}}}
  admission:
    mutating: true
    rules: [{{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}}]
"
    );
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest);
    loaded(&server, "default-team");
    kubectl(&server, &["rollout", "restart", "deploy/web"]);
    rollout(&server);
    let pods = ready_pods(&server, 5);
    assert!(
        pods.iter().all(|p| p["metadata"]["labels"]["team"] == "storefront"),
        "the Python policy labelled the pods"
    );

    // 5b. A scheduler filter written in Rust: pods wait for a node with the label, then start.
    let filter = capstan_testbed::component_path("require-node-label").unwrap_or_else(|e| panic!("{e}"));
    let manifest = format!(
        "apiVersion: capstan.io/v1alpha1
kind: Plugin
metadata: {{name: require-node-label}}
spec:
  kind: scheduler
  component: {{path: {:?}}}
  config: {{label: capstan.io/e2e, value: ready}}
",
        filter.display()
    );
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest);
    loaded(&server, "require-node-label");
    kubectl(&server, &["scale", "deploy/web", "--replicas=6"]);
    let pending = eventually(&server, Duration::from_mins(1), "a pod refused by the filter", || {
        web_pods(&server).into_iter().find(|p| p["spec"]["nodeName"].is_null())
    });
    let event = eventually(&server, Duration::from_mins(1), "a FailedScheduling event", || {
        let selector = format!("involvedObject.name={},reason=FailedScheduling", name(&pending));
        let events = kubectl(&server, &["get", "events", "--field-selector", &selector, "-o", "json"]);
        json(&events)["items"][0]["message"].as_str().map(str::to_owned)
    });
    assert!(event.contains("require-node-label") && event.starts_with("0/1 nodes are available"), "{event}");
    kubectl(&server, &["label", "node", NODE, "capstan.io/e2e=ready"]);
    ready_pods(&server, 6);

    // 6. The ReplicaSet controller replaced by a rebuilt component while the Deployment scales.
    let before = loaded(&server, "replicaset");
    let original = capstan_testbed::component_path("replicaset-controller").unwrap_or_else(|e| panic!("{e}"));
    let rebuild = server.dir().join("replicaset-rebuilt.wasm");
    std::fs::write(&rebuild, rebuilt(&std::fs::read(original).unwrap_or_default(), "e2e"))
        .unwrap_or_else(|e| panic!("cannot write the rebuilt controller: {e}"));
    kubectl(&server, &["scale", "deploy/web", "--replicas=8"]);
    point_plugin_at(&server, "replicaset", &rebuild);
    eventually(&server, Duration::from_mins(1), "the rebuilt ReplicaSet controller serving", || {
        let plugin = loaded(&server, "replicaset");
        (plugin["status"]["digest"] != before["status"]["digest"]).then_some(())
    });
    rollout(&server);
    ready_pods(&server, 8);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(web_pods(&server).len(), 8, "exactly the replicas asked for");

    // 8. Ctrl-C and start again: everything is still there, and no pod was restarted.
    let running = containers(&server);
    let dir = server.interrupt().unwrap_or_else(|| panic!("the server had no directory"));
    let restarted = Instant::now();
    let server = NodeServer::new(start_node(Some(dir), NODE, OCTET));
    // The stopped server gave its controller-manager Lease up, so the new one leads at once
    // rather than after the Lease's 15 s.
    let identity = format!("{}-", server.pid());
    eventually(&server, Duration::from_secs(30), "the restarted server leading", || {
        let lease = ["get", "lease", "-n", "kube-system", "capstan-controller-manager"];
        let holder = kubectl(&server, &[&lease[..], &["-o", "jsonpath={.spec.holderIdentity}"]].concat());
        holder.starts_with(&identity).then_some(())
    });
    let took = restarted.elapsed();
    println!("the restarted server leads the controllers {took:?} after the restart began");
    assert!(took < Duration::from_secs(10), "the old Lease was not released: leading took {took:?}");
    loaded(&server, "default-team");
    loaded(&server, "require-node-label");
    ready_pods(&server, 8);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(containers(&server), running, "the same containers, none restarted");
    assert!(running.values().all(|(_, restarts)| *restarts == 0), "{running:?}");

    // 7. Delete: pods stop within their grace period and nothing is left behind.
    let uids: Vec<String> =
        web_pods(&server).iter().map(|p| p["metadata"]["uid"].as_str().unwrap_or_default().to_owned()).collect();
    // Each pod must be gone within its 10 s grace period of being marked for deletion.
    let deleting = Instant::now();
    kubectl(&server, &["delete", "-f", &web_yaml, "--wait=false"]);
    let mut marked: BTreeMap<String, Instant> = BTreeMap::new();
    let mut longest = Duration::ZERO;
    loop {
        let list = json(&kubectl(&server, &["get", "pods", "-l", "app=web", "-o", "json"]));
        let pods = list["items"].as_array().cloned().unwrap_or_default();
        let now = Instant::now();
        for pod in &pods {
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                marked.entry(name(pod)).or_insert(now);
            }
        }
        for (pod, since) in &marked {
            if !pods.iter().any(|p| &name(p) == pod) {
                longest = longest.max(now.duration_since(*since));
            }
        }
        marked.retain(|pod, _| pods.iter().any(|p| &name(p) == pod));
        if pods.is_empty() {
            break;
        }
        assert!(deleting.elapsed() < Duration::from_mins(1), "pods still there a minute after the delete: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "8 pods gone {:?} after kubectl delete; the longest took {longest:?} from being marked",
        deleting.elapsed()
    );
    assert!(longest < Duration::from_secs(12), "a pod outlived its 10 s grace period: {longest:?}");
    assert_eq!(sandboxes(&server).trim(), "", "containers or sandboxes left behind");
    for uid in &uids {
        assert!(cgroups_of(uid).is_empty(), "cgroups of pod {uid} left behind: {:?}", cgroups_of(uid));
    }
    let ipam = server.dir().join("data/node/containerd/cni/net.d/10-capstan.conflist");
    let ipam: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ipam).unwrap_or_default()).unwrap_or_default();
    let data_dir = ipam["plugins"][0]["ipam"]["dataDir"].as_str().unwrap_or_default();
    assert!(!data_dir.is_empty(), "the CNI config names its IPAM directory");
    let allocated: Vec<String> = std::fs::read_dir(std::path::Path::new(data_dir).join("capstan"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    assert!(allocated.is_empty(), "pod IPs still allocated: {allocated:?}");
}
