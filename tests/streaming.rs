//! Streaming through the API server to a real node (containerd), driven with the real kubectl:
//! `kubectl port-forward` (pods and services, servers bound to the pod's localhost, concurrent
//! connections, closed ports), `kubectl exec -i` with stdin from a pipe reaching end-of-file,
//! `kubectl exec -it` under a pseudo-terminal (TTY and resize) and `kubectl attach`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use capstan_e2e::{BUSYBOX, eventually, http_get, kubectl, kubectl_for, kubectl_stdin, node_server};
use capstan_testbed::CapstanServer;

/// A pod serving `web` on 0.0.0.0:8080 and `local` on 127.0.0.1:9090 only, and a service for it.
fn start_web(server: &CapstanServer, node: &str) {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": BUSYBOX,
                "ports": [{"containerPort": 8080}],
                "command": ["sh", "-c", "mkdir -p /www /loc && echo web > /www/index.html && echo local > /loc/index.html && httpd -p 127.0.0.1:9090 -h /loc && exec httpd -f -p 8080 -h /www"]}]},
    });
    kubectl_stdin(server, &["apply", "-f", "-"], &pod.to_string());
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    });
    kubectl_stdin(server, &["apply", "-f", "-"], &service.to_string());
    kubectl(server, &["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
}

/// A running `kubectl port-forward`, killed when dropped.
struct PortForward {
    child: Child,
    /// The local ports kubectl listens on, in the order of the requested mappings.
    ports: Vec<u16>,
    /// What kubectl writes to stderr, line by line.
    errors: mpsc::Receiver<String>,
}

impl PortForward {
    /// Starts `kubectl port-forward TARGET :REMOTE…` and waits for its `Forwarding from` lines.
    fn start(server: &CapstanServer, target: &str, remotes: &[u16]) -> Self {
        Self::start_with(server, target, remotes, &[])
    }

    /// [`PortForward::start`] with kubectl logging at level 4 (which dialer it used) and `env`.
    fn start_with(server: &CapstanServer, target: &str, remotes: &[u16], env: &[(&str, &str)]) -> Self {
        let mut args = vec!["port-forward".to_string(), target.to_string(), "-v=4".to_string()];
        args.extend(remotes.iter().map(|r| format!(":{r}")));
        let mut child = Command::new("kubectl")
            .args(&args)
            .envs(env.iter().copied())
            .env("KUBECONFIG", server.kubeconfig())
            .env("HOME", server.dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
        let (lines, forwarding) = mpsc::channel();
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let (errors_to, errors) = mpsc::channel();
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = errors_to.send(line);
            }
        });
        let mut ports = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while ports.len() < remotes.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = forwarding.recv_timeout(left) else {
                let _ = child.kill();
                let stderr: Vec<String> = errors.try_iter().collect();
                panic!("kubectl port-forward {target} did not start: {}", stderr.join("\n"));
            };
            // "Forwarding from 127.0.0.1:41234 -> 8080"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:")
                && let Some((local, _)) = rest.split_once(' ')
            {
                ports.push(local.parse().unwrap_or_else(|e| panic!("{line}: {e}")));
            }
        }
        PortForward { child, ports, errors }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[test]
fn port_forward_reaches_pod_ports_including_its_localhost() {
    let server = node_server("node-pf", 124);
    start_web(&server, "node-pf");

    let forward = PortForward::start(&server, "pod/web", &[8080, 9090]);
    // kubectl 1.32 tries SPDY tunnelled in a WebSocket first; the node accepts it.
    // kubectl logs the negotiation on stderr around when it prints its "Forwarding from" lines:
    // read until the negotiated protocol shows up (or 10 s pass).
    let mut log: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.iter().any(|l| l.contains("negotiated protocol")) {
        match forward.errors.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => log.push(line),
            Err(_) => break,
        }
    }
    log.extend(forward.errors.try_iter());
    assert!(
        log.iter().any(|l| l.contains("tunneling_dialer") && l.contains("negotiated protocol: portforward.k8s.io")),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains("fallback")), "{log:?}");
    let reply = http_get("127.0.0.1", forward.ports[0], "/").unwrap_or_else(|e| panic!("GET through 8080: {e}"));
    assert!(reply.starts_with("HTTP/1.") && body(&reply) == "web\n", "{reply}");
    // A server the pod binds to 127.0.0.1 only answers too: the runtime dials the pod's localhost.
    let reply = http_get("127.0.0.1", forward.ports[1], "/").unwrap_or_else(|e| panic!("GET through 9090: {e}"));
    assert_eq!(body(&reply), "local\n", "{reply}");

    // Two connections at once, each with its own pair of streams.
    let port = forward.ports[0];
    let (first, second) = std::thread::scope(|scope| {
        let connect = || {
            let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap_or_else(|e| panic!("{e}"));
            stream
        };
        let (mut a, mut b) = (connect(), connect());
        let first = scope.spawn(move || {
            write!(a, "GET / HTTP/1.0\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
            let mut reply = String::new();
            a.read_to_string(&mut reply).map(|_| reply)
        });
        let second = scope.spawn(move || {
            write!(b, "GET /index.html HTTP/1.0\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
            let mut reply = String::new();
            b.read_to_string(&mut reply).map(|_| reply)
        });
        (first.join(), second.join())
    });
    for reply in [first, second] {
        let reply = reply.unwrap_or_else(|_| panic!("a connection panicked")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body(&reply), "web\n", "{reply}");
    }
    drop(forward);

    // kubectl resolves a service to one of its pods and the service port to the target port.
    let forward = PortForward::start(&server, "svc/web", &[80]);
    let reply = http_get("127.0.0.1", forward.ports[0], "/").unwrap_or_else(|e| panic!("GET through svc/web: {e}"));
    assert_eq!(body(&reply), "web\n", "{reply}");
    drop(forward);

    // Plain SPDY, what kubectl falls back to (and older kubectls speak), works as well.
    let forward = PortForward::start_with(&server, "pod/web", &[9090], &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]);
    let reply = http_get("127.0.0.1", forward.ports[0], "/").unwrap_or_else(|e| panic!("GET over SPDY: {e}"));
    assert_eq!(body(&reply), "local\n", "{reply}");
}

#[test]
fn port_forward_to_a_closed_port_reports_the_error() {
    let server = node_server("node-pc", 125);
    start_web(&server, "node-pc");
    let mut forward = PortForward::start(&server, "pod/web", &[7777]);
    let reply = http_get("127.0.0.1", forward.ports[0], "/");
    assert!(reply.as_ref().map_or(true, String::is_empty), "a closed port answered: {reply:?}");
    let error = eventually(Duration::from_secs(10), "kubectl to report the failed connection", || {
        forward.errors.try_iter().find(|line| line.contains("7777"))
    });
    assert!(error.contains("connect") || error.contains("refused"), "{error}");
    // kubectl 1.32 ends the whole session after an error on a connection's error stream
    // (client-go closes the SPDY connection); the server must not hang it.
    eventually(Duration::from_secs(10), "kubectl port-forward to exit", || (!forward.running()).then_some(()));
    // The pod is unharmed and a new session forwards again.
    let forward = PortForward::start(&server, "pod/web", &[8080]);
    let reply = http_get("127.0.0.1", forward.ports[0], "/").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body(&reply), "web\n", "{reply}");
}

/// Runs `kubectl exec -i POD -- COMMAND` with `input` piped to its stdin (closed after), waiting
/// at most `limit`; returns (success, stdout, stderr).
fn exec_with_input(
    server: &CapstanServer,
    command: &[&str],
    input: &[u8],
    limit: Duration,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut child = Command::new("kubectl")
        .args(["exec", "-i", "web", "--"])
        .args(command)
        .envs(env.iter().copied())
        .env("KUBECONFIG", server.kubeconfig())
        .env("HOME", server.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let deadline = Instant::now() + limit;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            let log =
                std::fs::read_to_string(server.dir().join("data/node/containerd/containerd.log")).unwrap_or_default();
            eprintln!("containerd: {}", &log[log.len().saturating_sub(6000)..]);
            panic!(
                "kubectl exec -i {command:?} still running after {limit:?} (stdin EOF not delivered?)\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = writer.join();
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn exec_with_piped_stdin_sees_end_of_file() {
    let server = node_server("node-ex", 126);
    start_web(&server, "node-ex");
    let (ok, stdout, stderr) = exec_with_input(&server, &["cat"], b"hello\n", Duration::from_secs(10), &[]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "hello\n");
    // More than SPDY's initial 64 KiB window, byte for byte.
    let mut big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    big.extend_from_slice(b"END\n");
    let script = "cat > /tmp/in; wc -c < /tmp/in; tail -c 4 /tmp/in";
    let (ok, stdout, stderr) = exec_with_input(&server, &["sh", "-c", script], &big, Duration::from_secs(20), &[]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "300004\nEND\n");
    // Exit codes still arrive through the translated status.
    let (ok, _, _) =
        exec_with_input(&server, &["sh", "-c", "cat > /dev/null; exit 3"], b"x", Duration::from_secs(10), &[]);
    assert!(!ok);
    // Over SPDY (kubectl's fallback, older kubectls) the stream is passed through as is.
    let spdy = [("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")];
    let (ok, stdout, stderr) = exec_with_input(&server, &["cat"], b"over spdy\n", Duration::from_secs(10), &spdy);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "over spdy\n");
}

#[test]
fn exec_with_a_terminal_and_attach_reach_the_container() {
    let server = node_server("node-tt", 127);
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "echo"},
        "spec": {"nodeName": "node-tt", "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "ticker", "image": BUSYBOX,
                 "command": ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done"]},
                {"name": "echo", "image": BUSYBOX, "stdin": true, "command": ["cat"]},
            ]},
    });
    kubectl_stdin(&server, &["apply", "-f", "-"], &pod.to_string());
    kubectl(&server, &["wait", "--for=condition=Ready", "pod/echo", "--timeout=60s"]);

    // `exec -it` under a pseudo-terminal (util-linux `script`): the container gets a TTY whose
    // size is the client's, sent over the resize channel.
    // (The size arrives on the resize channel just after the process starts: give it a moment.)
    let command = "stty cols 123 rows 45; kubectl exec -it echo -c ticker -- sh -c 'sleep 1; stty size'";
    let tty = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env("KUBECONFIG", server.kubeconfig())
        .env("HOME", server.dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run script: {e}"));
    let printed = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{printed} {}", String::from_utf8_lossy(&tty.stderr));
    assert!(printed.contains("45 123"), "the terminal size did not reach the container: {printed:?}");
    // Without a terminal, `exec -t` has none: `tty` says so and fails.
    let no_tty = server.kubectl(&["exec", "echo", "-c", "ticker", "--", "tty"]);
    assert!(!no_tty.status.success());
    assert!(String::from_utf8_lossy(&no_tty.stdout).contains("not a tty"));

    // `attach` streams the running container's output from now on…
    let attached = kubectl_for(&server, &["attach", "echo", "-c", "ticker"], b"", Duration::from_secs(3));
    let ticks = attached.lines().filter(|l| l.starts_with("tick ")).count();
    assert!(ticks >= 3, "attach streamed {ticks} ticks: {attached}");
    assert!(!attached.contains("tick 0\n"), "attach replayed old output: {attached}");
    // …and `attach -i` feeds its stdin.
    let echoed =
        kubectl_for(&server, &["attach", "-i", "echo", "-c", "echo"], b"hello over attach\n", Duration::from_secs(3));
    assert!(echoed.contains("hello over attach"), "{echoed}");
}
