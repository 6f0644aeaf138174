//! The node agent's own HTTPS port (kubelet's 10250): container logs from CRI log files, and
//! exec/attach/port-forward bridged to the runtime's streaming server (see `streaming`). Only clients with a certificate signed
//! by the cluster CA (the API server) are served; nothing here answers unauthenticated requests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_cri::v1 as cri;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncSeekExt as _};
use tokio::net::TcpListener;

use crate::NodeError;
use crate::runtime::Cri;

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

pub(crate) fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|never: Infallible| match never {}).boxed()
}

/// A Kubernetes `Status` error response.
pub(crate) fn status(code: StatusCode, message: &str) -> Response<Body> {
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        _ => "InternalError",
    };
    let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

/// The agent's HTTPS server.
pub struct StreamServer {
    /// The bound address.
    pub address: SocketAddr,
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    stats: Option<Arc<crate::stats::Sampler>>,
}

impl StreamServer {
    /// Binds `port` (0 picks one) and prepares TLS: a self-signed serving certificate, and client
    /// certificates verified against `ca_pem`.
    pub async fn bind(port: u16, ca_pem: &str) -> Result<Self, NodeError> {
        let tls_error = |e: &dyn std::fmt::Display| NodeError::Runtime(format!("cannot configure the node's TLS: {e}"));
        let key = rcgen::KeyPair::generate().map_err(|e| tls_error(&e))?;
        let hosts = vec![crate::node::internal_ip().to_string(), "127.0.0.1".to_string(), "localhost".to_string()];
        let params = rcgen::CertificateParams::new(hosts).map_err(|e| tls_error(&e))?;
        let cert = params.self_signed(&key).map_err(|e| tls_error(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(ca.map_err(|e| tls_error(&e))?).map_err(|e| tls_error(&e))?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| tls_error(&e))?;
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).map_err(|e| tls_error(&e))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.der().clone()], key)
            .map_err(|e| tls_error(&e))?;
        let listener = TcpListener::bind(("0.0.0.0", port))
            .await
            .map_err(|e| NodeError::Runtime(format!("cannot listen on port {port}: {e}")))?;
        let address = listener.local_addr().map_err(|e| NodeError::Runtime(e.to_string()))?;
        Ok(StreamServer { address, listener, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), stats: None })
    }

    /// Serves `GET /stats/summary` from `sampler`.
    #[must_use]
    pub fn with_stats(mut self, sampler: Arc<crate::stats::Sampler>) -> Self {
        self.stats = Some(sampler);
        self
    }

    /// Serves forever.
    pub async fn serve(self, cri: Cri) {
        loop {
            let Ok((tcp, peer)) = self.listener.accept().await else { continue };
            let acceptor = self.acceptor.clone();
            let cri = cri.clone();
            let stats = self.stats.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    tracing::debug!(%peer, "node TLS handshake failed (no client certificate signed by the cluster CA?)");
                    return;
                };
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let cri = cri.clone();
                    let stats = stats.clone();
                    async move {
                        if request.uri().path() == "/stats/summary" {
                            return Ok::<_, Infallible>(summary(stats.as_deref()));
                        }
                        Ok::<_, Infallible>(handle(cri, request).await)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
                    tracing::debug!(%peer, error = %e, "node connection ended with an error");
                }
            });
        }
    }
}

/// `GET /stats/summary`: the latest resource usage summary (see [`crate::stats`]).
fn summary(stats: Option<&crate::stats::Sampler>) -> Response<Body> {
    match stats.and_then(crate::stats::Sampler::summary) {
        Some(summary) => {
            let mut response = Response::new(full(summary.to_string()));
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
            response
        }
        None => status(StatusCode::SERVICE_UNAVAILABLE, "resource usage is not sampled yet"),
    }
}

/// `/api/v1/namespaces/{ns}/pods/{name}/{subresource}` → its parts.
fn parse_path(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.split('/');
    let namespace = parts.next()?;
    if parts.next()? != "pods" {
        return None;
    }
    let name = parts.next()?;
    let sub = parts.next()?;
    parts.next().is_none().then_some((namespace, name, sub))
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(cri: Cri, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let Some((namespace, name, sub)) = parse_path(&path) else {
        return status(StatusCode::NOT_FOUND, &format!("the node serves no {path}"));
    };
    let query = query_pairs(request.uri().query());
    let get = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let flag = |key: &str| get(key).is_some_and(|v| v == "true" || v == "1");
    if sub == "portforward" {
        return match find_sandbox(&cri, namespace, name).await {
            Ok(sandbox) => port_forward(cri, sandbox, request).await,
            Err(response) => *response,
        };
    }
    let container = get("container").unwrap_or_default();
    let target = match find_container(&cri, namespace, name, &container, flag("previous")).await {
        Ok(target) => target,
        Err(response) => return *response,
    };
    match sub {
        "log" => {
            let options = LogOptions {
                follow: flag("follow"),
                timestamps: flag("timestamps"),
                tail: get("tailLines").and_then(|v| v.parse().ok()),
                since: get("sinceSeconds")
                    .and_then(|v| v.parse::<i64>().ok())
                    .map(|s| chrono::Utc::now() - chrono::Duration::seconds(s)),
                limit: get("limitBytes").and_then(|v| v.parse().ok()),
            };
            logs(cri, target, options)
        }
        "exec" | "attach" => {
            let streams = crate::streaming::Streams {
                stdin: flag("stdin"),
                stdout: flag("stdout"),
                stderr: flag("stderr"),
                tty: flag("tty"),
            };
            exec_or_attach(cri, &target, sub, streams, &query, request).await
        }
        other => status(StatusCode::NOT_FOUND, &format!("pods/{other} is not served by this node")),
    }
}

/// Asks CRI for the exec or attach streaming URL and bridges the client to it.
async fn exec_or_attach(
    cri: Cri,
    target: &Target,
    sub: &str,
    streams: crate::streaming::Streams,
    query: &[(String, String)],
    request: Request<Incoming>,
) -> Response<Body> {
    let mut runtime = cri.runtime;
    let url = if sub == "exec" {
        let cmd: Vec<String> = query.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
        let reply = runtime
            .exec(cri::ExecRequest {
                container_id: target.id.clone(),
                cmd,
                tty: streams.tty,
                stdin: streams.stdin,
                stdout: streams.stdout,
                stderr: streams.stderr,
            })
            .await;
        reply.map(|r| r.into_inner().url)
    } else {
        let reply = runtime
            .attach(cri::AttachRequest {
                container_id: target.id.clone(),
                stdin: streams.stdin,
                tty: streams.tty,
                stdout: streams.stdout,
                stderr: streams.stderr,
            })
            .await;
        reply.map(|r| r.into_inner().url)
    };
    match url {
        Ok(url) => crate::streaming::exec(&url, streams, request).await,
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    }
}

/// Asks CRI for the sandbox's port-forward streaming URL and bridges the client to it.
async fn port_forward(cri: Cri, sandbox: cri::PodSandbox, request: Request<Incoming>) -> Response<Body> {
    let reply =
        cri.runtime.clone().port_forward(cri::PortForwardRequest { pod_sandbox_id: sandbox.id, port: vec![] }).await;
    match reply {
        Ok(reply) => crate::streaming::port_forward(&reply.into_inner().url, request).await,
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    }
}

/// The newest sandbox of pod `namespace/pod` on this node.
async fn find_sandbox(cri: &Cri, namespace: &str, pod: &str) -> Result<cri::PodSandbox, Box<Response<Body>>> {
    let filter = cri::PodSandboxFilter {
        label_selector: HashMap::from([
            ("io.kubernetes.pod.namespace".to_string(), namespace.to_string()),
            ("io.kubernetes.pod.name".to_string(), pod.to_string()),
        ]),
        ..Default::default()
    };
    let sandboxes = cri
        .runtime
        .clone()
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) })
        .await
        .map_err(|e| Box::new(status(StatusCode::INTERNAL_SERVER_ERROR, e.message())))?;
    sandboxes.into_inner().items.into_iter().max_by_key(|s| s.created_at).ok_or_else(|| {
        Box::new(status(StatusCode::NOT_FOUND, &format!("pod {namespace}/{pod} has no sandbox on this node")))
    })
}

struct Target {
    id: String,
    log_path: PathBuf,
    running: bool,
}

/// Finds the container (latest attempt, or the one before with `previous`) of a pod by name.
async fn find_container(
    cri: &Cri,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<Target, Box<Response<Body>>> {
    let mut runtime = cri.runtime.clone();
    let internal = |e: tonic::Status| Box::new(status(StatusCode::INTERNAL_SERVER_ERROR, e.message()));
    let sandbox = find_sandbox(cri, namespace, pod).await?;
    let filter = cri::ContainerFilter { pod_sandbox_id: sandbox.id.clone(), ..Default::default() };
    let list = runtime.list_containers(cri::ListContainersRequest { filter: Some(filter) }).await.map_err(internal)?;
    let mut attempts: Vec<(String, u32, String)> = list
        .into_inner()
        .containers
        .into_iter()
        .filter_map(|c| c.metadata.map(|m| (m.name, m.attempt, c.id)))
        .collect();
    let mut names: Vec<String> = attempts.iter().map(|(n, _, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    let name = if container.is_empty() {
        match names.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(Box::new(status(
                    StatusCode::BAD_REQUEST,
                    &format!("a container name must be specified for pod {pod}, choose one of: [{}]", names.join(" ")),
                )));
            }
        }
    } else {
        container.to_string()
    };
    attempts.retain(|(n, _, _)| *n == name);
    attempts.sort_by_key(|(_, attempt, _)| std::cmp::Reverse(*attempt));
    let pick = if previous { attempts.get(1) } else { attempts.first() };
    let Some((_, _, id)) = pick else {
        let message = if previous {
            format!("previous terminated container \"{name}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{name}\" in pod \"{pod}\" is not available")
        };
        return Err(Box::new(status(StatusCode::BAD_REQUEST, &message)));
    };
    let found = runtime
        .container_status(cri::ContainerStatusRequest { container_id: id.clone(), verbose: false })
        .await
        .map_err(internal)?
        .into_inner()
        .status
        .ok_or_else(|| Box::new(status(StatusCode::NOT_FOUND, "the container has no status")))?;
    Ok(Target {
        id: id.clone(),
        log_path: PathBuf::from(found.log_path),
        running: found.state == cri::ContainerState::ContainerRunning as i32,
    })
}

struct LogOptions {
    follow: bool,
    timestamps: bool,
    tail: Option<usize>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<usize>,
}

/// One CRI log line `<RFC3339Nano> <stream> <P|F> <message>` rendered for the client.
fn render(line: &str, timestamps: bool, since: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let message = parts.next().unwrap_or_default();
    if let Some(since) = since
        && chrono::DateTime::parse_from_rfc3339(time).is_ok_and(|t| t < since)
    {
        return None;
    }
    let end = if tag.starts_with('F') { "\n" } else { "" };
    Some(if timestamps { format!("{time} {message}{end}") } else { format!("{message}{end}") })
}

#[allow(clippy::needless_pass_by_value, reason = "the options move into the streaming task")]
#[allow(clippy::too_many_lines, reason = "one streaming loop: initial read, then follow")]
fn logs(cri: Cri, target: Target, options: LogOptions) -> Response<Body> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    tokio::spawn(async move {
        let send = |text: String| {
            let sender = sender.clone();
            async move { sender.send(Ok(Frame::data(Bytes::from(text)))).await.is_ok() }
        };
        let Ok(mut file) = tokio::fs::File::open(&target.log_path).await else { return };
        let mut text = String::new();
        if file.read_to_string(&mut text).await.is_err() {
            return;
        }
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        let mut lines: Vec<String> =
            text[..complete].lines().filter_map(|l| render(l, options.timestamps, options.since)).collect();
        if let Some(tail) = options.tail {
            lines = lines.split_off(lines.len().saturating_sub(tail));
        }
        let mut first = lines.concat();
        if let Some(limit) = options.limit {
            first.truncate(limit);
        }
        let mut written = first.len();
        if !first.is_empty() && !send(first).await {
            return;
        }
        if !options.follow {
            return;
        }
        let mut position = complete as u64;
        let mut running = target.running;
        loop {
            if file.seek(std::io::SeekFrom::Start(position)).await.is_err() {
                return;
            }
            let mut reader = tokio::io::BufReader::new(&mut file);
            let mut line = String::new();
            let mut batch = String::new();
            while reader.read_line(&mut line).await.is_ok_and(|n| n > 0) && line.ends_with('\n') {
                position += line.len() as u64;
                if let Some(rendered) = render(line.trim_end_matches('\n'), options.timestamps, options.since) {
                    batch.push_str(&rendered);
                }
                line.clear();
            }
            if let Some(limit) = options.limit {
                batch.truncate(limit.saturating_sub(written));
            }
            written += batch.len();
            if !batch.is_empty() && !send(batch).await {
                return;
            }
            if !running || options.limit.is_some_and(|l| written >= l) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let status = cri
                .runtime
                .clone()
                .container_status(cri::ContainerStatusRequest { container_id: target.id.clone(), verbose: false })
                .await;
            running = status
                .ok()
                .and_then(|s| s.into_inner().status)
                .is_some_and(|s| s.state == cri::ContainerState::ContainerRunning as i32);
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    let mut response = Response::new(BodyExt::boxed(body));
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    response
}
