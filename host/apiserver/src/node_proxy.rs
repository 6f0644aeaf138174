//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: proxied to the node agent that
//! runs the pod, on the HTTPS port its Node publishes (`status.daemonEndpoints.kubeletEndpoint`).
//!
//! The API server authenticates to the node with the cluster's client certificate; the node
//! serves only clients whose certificate the cluster CA signed. Like kube-apiserver without
//! `--kubelet-certificate-authority`, the node's (self-signed) serving certificate is not checked.
//! Upgrades (WebSocket or SPDY: exec, attach, port-forward) are spliced byte for byte after the
//! node answers 101.
//!
//! Exec, attach and port-forward pass admission first, as upstream's connect requests do:
//! operation CONNECT on `pods` with the subresource, the object a `PodExecOptions`,
//! `PodAttachOptions` or `PodPortForwardOptions` built from the query string; mutating policies,
//! then validating ones. A denial answers with the policy's `Status` and nothing reaches the node.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::Value;

use crate::admission::{self, Attributes, Operation};
use crate::auth::Identity;
use crate::handlers::Call;
use crate::objects::ObjectRef;
use crate::pki::Pki;
use crate::routing::{Query, ResourcePath};
use crate::server::{ApiServer, ServerError};
use crate::status::{ApiError, ApiResult};

/// The node subresources of pods.
const NODE_SUBRESOURCES: [&str; 4] = ["log", "exec", "attach", "portforward"];

/// Whether `path` is a pod subresource a node agent serves.
#[must_use]
pub fn is_node_subresource(path: &str) -> bool {
    pod_target(path).is_some()
}

fn pod_target(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.split('/');
    let namespace = parts.next()?;
    if parts.next()? != "pods" {
        return None;
    }
    let name = parts.next()?;
    let sub = parts.next()?;
    (parts.next().is_none() && NODE_SUBRESOURCES.contains(&sub)).then_some((namespace, name, sub))
}

/// Accepts the node's serving certificate without checking who signed it (see the module doc)
/// while still verifying the handshake signatures.
#[derive(Debug)]
struct AnyNodeCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyNodeCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client the API server reaches node agents with.
#[derive(Clone)]
pub struct NodeClient {
    connector: tokio_rustls::TlsConnector,
}

impl NodeClient {
    /// A client presenting the cluster's admin client certificate.
    pub fn new(pki: &Pki) -> Result<Self, ServerError> {
        let tls_error = |e: &dyn std::fmt::Display| ServerError::Tls(format!("node client: {e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(pki.admin_cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(&e))?;
        let key = PrivateKeyDer::from_pem_slice(pki.admin_key.as_bytes()).map_err(|e| tls_error(&e))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(&e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyNodeCertificate(provider)))
            .with_client_auth_cert(certs, key)
            .map_err(|e| tls_error(&e))?;
        Ok(NodeClient { connector: tokio_rustls::TlsConnector::from(Arc::new(config)) })
    }
}

/// Where the node running pod `namespace/name` serves its streams.
async fn node_endpoint(server: &ApiServer, namespace: &str, name: &str) -> ApiResult<String> {
    let pods = ApiServer::resource("", "v1", "pods")?;
    let pod =
        server.objects.get(&ObjectRef { info: pods, namespace: Some(namespace.into()), name: name.into() }).await?;
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!("pod {name} is not scheduled to a node yet")));
    }
    let nodes = ApiServer::resource("", "v1", "nodes")?;
    let node = server.objects.get(&ObjectRef { info: nodes, namespace: None, name: node_name.into() }).await?;
    endpoint_of(&node)
        .ok_or_else(|| ApiError::BadRequest(format!("node {node_name} publishes no endpoint for logs and exec")))
}

/// `address:port` of a Node's agent: its `InternalIP` and `status.daemonEndpoints.kubeletEndpoint`.
#[must_use]
pub fn endpoint_of(node: &Value) -> Option<String> {
    let port = node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64).unwrap_or(0);
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .unwrap_or_default();
    (port != 0 && !address.is_empty()).then(|| format!("{address}:{port}"))
}

type NodeSender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// An authenticated HTTP/1.1 connection to the node agent at `endpoint`.
async fn connect(server: &ApiServer, endpoint: &str) -> ApiResult<NodeSender> {
    let tcp = tokio::net::TcpStream::connect(endpoint)
        .await
        .map_err(|e| unavailable(format!("cannot reach the node at {endpoint}: {e}")))?;
    let server_name = ServerName::try_from("node").map_err(|e| unavailable(e.to_string()))?;
    let tls = server
        .nodes
        .connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| unavailable(format!("TLS to the node at {endpoint} failed: {e}")))?;
    let (sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
        .await
        .map_err(|e| unavailable(format!("cannot talk HTTP to the node at {endpoint}: {e}")))?;
    tokio::spawn(connection.with_upgrades());
    Ok(sender)
}

/// `GET path` from the node agent at `endpoint`, as JSON.
pub async fn get_json(server: &ApiServer, endpoint: &str, path: &str) -> ApiResult<Value> {
    let mut sender = connect(server, endpoint).await?;
    let request = hyper::Request::get(path)
        .header(header::HOST, endpoint)
        .body(Empty::new())
        .map_err(|e| unavailable(e.to_string()))?;
    let reply =
        sender.send_request(request).await.map_err(|e| unavailable(format!("the node at {endpoint} failed: {e}")))?;
    let status = reply.status();
    let body = reply
        .into_body()
        .collect()
        .await
        .map_err(|e| unavailable(format!("reading {path} from the node at {endpoint}: {e}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(unavailable(format!(
            "the node at {endpoint} answered {status} to {path}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    serde_json::from_slice(&body).map_err(|e| unavailable(format!("{path} from the node at {endpoint}: {e}")))
}

fn unavailable(message: String) -> ApiError {
    ApiError::Internal(message)
}

/// Proxies one node subresource request to the node agent.
pub async fn proxy(server: &ApiServer, mut request: Request) -> ApiResult<Response> {
    let path = request.uri().path().to_string();
    let Some((namespace, name, sub)) = pod_target(&path) else { return Err(ApiError::NoRoute) };
    let connect_request = Connect {
        headers: request.headers().clone(),
        identity: request.extensions().get::<Identity>().cloned(),
        query: request.uri().query().map(str::to_owned),
    };
    let warnings = admit_connect(server, &connect_request, namespace, name, sub).await?;
    let endpoint = node_endpoint(server, namespace, name).await?;
    let mut sender = connect(server, &endpoint).await?;
    let target = request.uri().path_and_query().map_or_else(|| path.clone(), ToString::to_string);
    let mut forward = hyper::Request::builder().method(request.method().clone()).uri(target);
    for (key, value) in request.headers() {
        if key != header::AUTHORIZATION && key != header::HOST && key != header::CONTENT_LENGTH {
            forward = forward.header(key, value);
        }
    }
    let forward = forward.header(header::HOST, &endpoint).body(Empty::new()).map_err(|e| unavailable(e.to_string()))?;
    let mut reply =
        sender.send_request(forward).await.map_err(|e| unavailable(format!("the node at {endpoint} failed: {e}")))?;
    if reply.status() == StatusCode::SWITCHING_PROTOCOLS {
        let client = hyper::upgrade::on(&mut request);
        let node = hyper::upgrade::on(&mut reply);
        tokio::spawn(async move {
            let (Ok(client), Ok(node)) = (client.await, node.await) else { return };
            let mut client = TokioIo::new(client);
            let mut node = TokioIo::new(node);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
        });
        let (parts, _) = reply.into_parts();
        return Ok(with_warnings(Response::from_parts(parts, Body::empty()), &warnings));
    }
    let (parts, body) = reply.into_parts();
    Ok(with_warnings(Response::from_parts(parts, Body::new(body.map_err(axum::Error::new))), &warnings))
}

/// The kind of the options object a connect subresource is admitted with; `None` for `log`
/// (a read, which admission does not see).
fn connect_kind(subresource: &str) -> Option<&'static str> {
    match subresource {
        "exec" => Some("PodExecOptions"),
        "attach" => Some("PodAttachOptions"),
        "portforward" => Some("PodPortForwardOptions"),
        _ => None,
    }
}

/// The options object of a connect request, from its query string (repeated `command` and
/// `ports` parameters become lists), as upstream decodes it.
fn connect_options(kind: &str, raw_query: Option<&str>) -> ApiResult<Value> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw_query.unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
    let text = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let flag = |key: &str| matches!(text(key), Some("true" | "1" | "True" | "TRUE"));
    let all = |key: &str| pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let mut options = serde_json::json!({"kind": kind, "apiVersion": "v1"});
    if kind == "PodPortForwardOptions" {
        let ports = all("ports")
            .iter()
            .flat_map(|list| list.split(','))
            .map(|port| {
                port.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| ApiError::BadRequest(format!("invalid port {port:?}: must be a number 1-65535")))
            })
            .collect::<ApiResult<Vec<u16>>>()?;
        if !ports.is_empty() {
            options["ports"] = serde_json::json!(ports);
        }
        return Ok(options);
    }
    for key in ["stdin", "stdout", "stderr", "tty"] {
        if flag(key) {
            options[key] = Value::Bool(true);
        }
    }
    if let Some(container) = text("container").filter(|c| !c.is_empty()) {
        options["container"] = Value::String(container.to_owned());
    }
    if kind == "PodExecOptions" {
        options["command"] = serde_json::json!(all("command"));
    }
    Ok(options)
}

/// What admission needs of a connect request (copied out: the request itself is not `Sync`).
struct Connect {
    headers: axum::http::HeaderMap,
    identity: Option<Identity>,
    query: Option<String>,
}

/// Runs the admission chain for a connect request to pod `namespace/name`'s `subresource`;
/// returns the policies' warnings, or their denial.
async fn admit_connect(
    server: &ApiServer,
    request: &Connect,
    namespace: &str,
    name: &str,
    subresource: &str,
) -> ApiResult<Vec<String>> {
    let Some(kind) = connect_kind(subresource) else { return Ok(Vec::new()) };
    let options = connect_options(kind, request.query.as_deref())?;
    let catalog = server.catalog();
    let pods = ApiServer::resource("", "v1", "pods")?;
    let path = ResourcePath {
        info: pods,
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        subresource: Some(subresource.to_owned()),
    };
    // Connect requests are never dry runs; the options are the object, not the query.
    let query = Query::parse(None)?;
    let warnings = std::sync::Mutex::new(Vec::new());
    let call = Call {
        server,
        catalog: &catalog,
        path: &path,
        query: &query,
        headers: &request.headers,
        body: &Bytes::new(),
        identity: request.identity.as_ref(),
        warnings: &warnings,
    };
    let attributes = Attributes {
        operation: Operation::Connect,
        info: pods,
        namespace: Some(namespace),
        name,
        kind: Some(("", "v1", kind)),
    };
    // Mutations of the options are not applied: the node reads the request's own query string.
    admission::admit(&call, &attributes, options, None).await?;
    Ok(warnings.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Adds admission warnings to a proxied response as `Warning` headers.
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let text = format!("299 - {}", Value::String(warning.clone()));
        if let Ok(value) = header::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::connect_options;

    #[test]
    fn connect_options_come_from_the_query_string() {
        let cases = [
            (
                "PodExecOptions",
                "command=sh&command=-c&command=echo%20hi&container=main&stdin=true&stdout=true&tty=false",
                json!({"kind": "PodExecOptions", "apiVersion": "v1", "stdin": true, "stdout": true,
                       "container": "main", "command": ["sh", "-c", "echo hi"]}),
            ),
            (
                "PodAttachOptions",
                "stderr=1&container=c",
                json!({"kind": "PodAttachOptions", "apiVersion": "v1", "stderr": true, "container": "c"}),
            ),
            (
                "PodPortForwardOptions",
                "ports=8080&ports=9090,9091",
                json!({"kind": "PodPortForwardOptions", "apiVersion": "v1", "ports": [8080, 9090, 9091]}),
            ),
        ];
        for (kind, query, expected) in cases {
            assert_eq!(connect_options(kind, Some(query)).unwrap(), expected, "{query}");
        }
        for bad in ["ports=x", "ports=0", "ports=70000"] {
            assert!(connect_options("PodPortForwardOptions", Some(bad)).is_err(), "{bad}");
        }
    }
}
