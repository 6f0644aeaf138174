//! The server: configuration, the HTTPS listener with client-certificate authentication, the
//! router, and the objects every cluster starts with.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use capstan_api::{Registry, ResourceInfo};
use capstan_store::Store;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::auth::{Identity, PeerIdentity, Tokens, identity_from_certificate};
pub use crate::catalog::Catalog;
use crate::defaults::Defaults;
use crate::handlers::{self, Call, json_response};
use crate::metrics::Metrics;
use crate::objects::{ObjectRef, Objects};
use crate::pki::{ADMIN_GROUP, ADMIN_USER, Pki};
use crate::routing::{self, Query, Target, Verb};
use crate::sa_tokens::ServiceAccountTokens;
use crate::status::{ApiError, ApiResult};
use crate::{body, discovery, subresources, watch};

/// The Kubernetes version Capstan serves; kubectl wrappers pick their client by its minor.
pub const KUBERNETES_VERSION: &str = "v1.32.2";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Credentials could not be prepared.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// TLS configuration failed.
    #[error("cannot configure TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The OpenAPI documents could not be built.
    #[error("cannot build the OpenAPI documents: {0}")]
    OpenApi(String),
    /// The initial objects could not be written.
    #[error("cannot create the initial objects: {0}")]
    Bootstrap(Box<ApiError>),
}

/// How to run the API server.
#[derive(Clone)]
pub struct Config {
    /// Where credentials and the kubeconfig live.
    pub data_dir: PathBuf,
    /// The address to listen on.
    pub bind_address: IpAddr,
    /// The port (0 picks a free one).
    pub port: u16,
    /// More names and addresses the serving certificate is valid for (`--tls-san`), besides
    /// localhost and the bind address. They apply when the credentials are created.
    pub tls_sans: Vec<String>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The admission components the binary ships, by name, enabled by default (see
    /// [`crate::plugins::builtin_admission_specs`]).
    pub builtin_plugins: std::collections::BTreeMap<String, crate::plugins::BuiltinPlugin>,
    /// More Prometheus text for `/metrics` (the controllers' and the scheduler's, which run
    /// in the same process and register once they start).
    pub extra_metrics: ExtraMetrics,
}

/// The names and addresses the serving certificate is for: the `--tls-san`s and the bind address
/// (unless it is the unspecified one).
fn serving_hosts(config: &Config) -> Vec<String> {
    let mut hosts = config.tls_sans.clone();
    if !config.bind_address.is_unspecified() {
        hosts.push(config.bind_address.to_string());
    }
    hosts
}

/// Renders some Prometheus text for `/metrics`.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// The sources `/metrics` appends to the API server's own metrics; shared, so parts that start
/// later can add theirs.
pub type ExtraMetrics = Arc<std::sync::RwLock<Vec<MetricsSource>>>;

/// Shared state of the running server.
pub struct ApiServer {
    pub(crate) catalog: std::sync::RwLock<Arc<Catalog>>,
    /// Object storage.
    pub objects: Objects,
    /// Lists and watches served from memory (shared with admission's cluster reads).
    pub cache: Arc<crate::cache::WatchCache>,
    /// Defaulting.
    pub defaults: Defaults,
    tokens: Tokens,
    /// Issues service-account tokens (`serviceaccounts/<name>/token`).
    pub(crate) service_account_tokens: Arc<ServiceAccountTokens>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) server_address: String,
    /// The loaded plugins.
    pub(crate) plugins: crate::plugins::PluginManager,
    extra_metrics: ExtraMetrics,
    /// How pods/log, exec and attach reach node agents.
    pub(crate) nodes: crate::node_proxy::NodeClient,
    /// Admission's store lookups that found nothing, remembered for a while.
    pub(crate) empty_lookups: Arc<crate::admission::EmptyLookups>,
}

/// A started server.
pub struct Running {
    /// The address it listens on.
    pub address: SocketAddr,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// The serving task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the API server: credentials, kubeconfig, initial objects, then the HTTPS listener.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    let address = SocketAddr::new(config.bind_address, config.port);
    let listener = TcpListener::bind(address).await.map_err(|source| ServerError::Listen { address, source })?;
    let address = listener.local_addr().map_err(|source| ServerError::Listen { address, source })?;
    let hosts = serving_hosts(&config);
    let pki = Pki::load_or_create(&config.data_dir.join("pki"), &hosts)?;
    let url_host =
        if config.bind_address.is_unspecified() { "127.0.0.1".to_string() } else { config.bind_address.to_string() };
    let kubeconfig = config.data_dir.join("kubeconfig");
    crate::pki::write_private(&kubeconfig, &pki.admin_kubeconfig(&format!("https://{url_host}:{}", address.port())))?;

    let catalog = Catalog::build(&[]).map_err(ServerError::OpenApi)?;
    let mut tokens = Tokens::default();
    tokens.insert(pki.admin_token.clone(), Identity::new(ADMIN_USER, vec![ADMIN_GROUP.to_string()]));
    let service_account_tokens = Arc::new(ServiceAccountTokens::new(pki.service_account_key.as_bytes()));
    tokens.accept_service_accounts(Arc::clone(&service_account_tokens));
    let metrics = Arc::new(Metrics::default());
    let store: Arc<dyn Store> = Arc::new(crate::metrics::MeteredStore::new(config.store, Arc::clone(&metrics)));
    let server = Arc::new(ApiServer {
        catalog: std::sync::RwLock::new(Arc::new(catalog)),
        cache: Arc::new(crate::cache::WatchCache::new(Arc::clone(&store))),
        objects: Objects::new(store),
        defaults: Defaults,
        tokens,
        service_account_tokens,
        metrics,
        server_address: format!("{url_host}:{}", address.port()),
        plugins: crate::plugins::PluginManager::new(config.data_dir.join("plugin-cache"))
            .with_sources(config.builtin_plugins, Some(config.data_dir.join("plugins"))),
        extra_metrics: config.extra_metrics,
        nodes: crate::node_proxy::NodeClient::new(&pki)?,
        empty_lookups: Arc::default(),
    });
    server.bootstrap().await.map_err(|e| ServerError::Bootstrap(Box::new(e)))?;
    server.reload_custom_resources().await.map_err(|e| ServerError::Bootstrap(Box::new(e)))?;
    server.ensure_system_priority_classes().await.map_err(|e| ServerError::Bootstrap(Box::new(e)))?;
    server.ensure_builtin_plugins().await.map_err(|e| ServerError::Bootstrap(Box::new(e)))?;
    server.sync_plugins().await.map_err(|e| ServerError::Bootstrap(Box::new(e)))?;
    tokio::spawn(crate::plugins::publish_metrics(Arc::clone(&server)));
    let tls = tls_config(&pki)?;
    let app = router(Arc::clone(&server));
    let task = tokio::spawn(serve(listener, tokio_rustls::TlsAcceptor::from(Arc::new(tls)), app));
    Ok(Running { address, kubeconfig, task })
}

fn tls_config(pki: &Pki) -> Result<rustls::ServerConfig, ServerError> {
    let tls_error = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = CertificateDer::from_pem_slice(pki.ca_cert.as_bytes()).map_err(|e| tls_error(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| tls_error(&e))?;
    // Client certificates are optional at the TLS layer: bearer tokens authenticate too, and a
    // request with neither is answered 401 by the API layer, as kube-apiserver does.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_error(&e))?;
    let certs = CertificateDer::pem_slice_iter(pki.server_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&e))?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).map_err(|e| tls_error(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|c| identity_from_certificate(c));
            let service = TowerToHyperService::new(app.layer(axum::Extension(PeerIdentity(identity))));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// The HTTP routes.
pub fn router(server: Arc<ApiServer>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(healthy))
        .route("/livez", get(healthy))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api", get(api_root))
        .route("/apis", get(apis_root))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_index))
        .route("/openapi/v3/{*path}", get(openapi_v3))
        .fallback(resources)
        .layer(middleware::from_fn_with_state(Arc::clone(&server), authenticate_and_measure))
        .with_state(server)
}

/// Paths anyone may read, as kube-apiserver's `system:public-info-viewer` role allows.
fn public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
}

async fn authenticate_and_measure(State(server): State<Arc<ApiServer>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_string();
    if !public(&path) {
        let peer = request.extensions().get::<PeerIdentity>();
        let identity = match server.tokens.authenticate(peer, request.headers()) {
            Ok(identity) => Ok(identity),
            Err(e) => match crate::auth::bearer_token(request.headers()) {
                Some(token) => crate::bootstrap_tokens::authenticate(&server, token).await.ok_or(e),
                None => Err(e),
            },
        };
        match identity {
            Ok(identity) => {
                request.extensions_mut().insert(identity);
            }
            Err(e) => return e.into_response(),
        }
    }
    let (verb, resource) = server.describe(request.method(), &path, request.uri().query());
    let response = next.run(request).await;
    server.metrics.record(verb, &resource, response.status().as_u16(), started.elapsed());
    response
}

impl ApiServer {
    /// The current catalog of served resources.
    pub fn catalog(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(catalog) => Arc::clone(&catalog),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn describe(&self, method: &Method, path: &str, query: Option<&str>) -> (&'static str, String) {
        let query = Query::parse(query).unwrap_or_default();
        let catalog = self.catalog();
        match routing::parse(&catalog.registry, path) {
            Ok(Target::Resource(p)) => {
                let verb = routing::verb(method, &p, &query).map_or("unknown", Verb::as_str);
                (verb, p.info.plural.to_string())
            }
            Ok(Target::Virtual(v)) => ("create", v.plural.to_string()),
            _ => (if method == Method::GET { "get" } else { "other" }, String::new()),
        }
    }

    /// Reads an object to modify it: the watch cache's copy unless `fresh` (it may lag the
    /// store, so the write's compare-and-swap must be on the revision returned, and a caller
    /// that refuses because of what it read should read again with `fresh`), else the store's.
    /// Saves a store read per write, as kube-apiserver's updates start from the watch cache.
    pub async fn get_for_update(
        &self,
        object: &ObjectRef<'_>,
        fresh: bool,
    ) -> ApiResult<Option<(Value, capstan_store::Revision)>> {
        if !fresh && let Ok(Some(cached)) = self.cache.get(object.info.storage_resource, &object.key()).await {
            let revision =
                crate::meta::meta_str(&cached, "resourceVersion").map(crate::objects::parse_resource_version);
            if let Some(Ok(revision)) = revision {
                return Ok(Some((crate::objects::present(object.info, Value::clone(&cached)), revision)));
            }
        }
        self.objects.get_kv(object).await
    }

    /// Refuses new objects in a namespace that does not exist or is being deleted. An active
    /// namespace in the watch cache is enough; anything else is read from the store.
    pub async fn check_namespace_accepts(&self, namespace: &str) -> ApiResult<()> {
        let info = Self::resource("", "v1", "namespaces")?;
        let target = ObjectRef { info, namespace: None, name: namespace.to_string() };
        let terminating = |object: &Value| {
            object.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
                || object.pointer("/metadata/deletionTimestamp").is_some()
        };
        // Read in place: every namespaced create passes here, and only two fields are looked at.
        if let Ok(Some(cached)) = self.cache.get(info.storage_resource, &target.key()).await
            && !terminating(&cached)
        {
            return Ok(());
        }
        let object = self.objects.get(&target).await?;
        if terminating(&object) {
            return Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
        Ok(())
    }

    pub(crate) fn resource(group: &str, version: &str, plural: &str) -> ApiResult<&'static ResourceInfo> {
        // Built-in resources never change; look them up in a registry kept for the process.
        static BUILTIN: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
        BUILTIN
            .get_or_init(Registry::builtin)
            .lookup(group, version, plural)
            .ok_or_else(|| ApiError::Internal(format!("{plural} is not registered")))
    }
}

async fn version() -> Response {
    let version = json!({
        "major": "1",
        "minor": "32",
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": "capstan",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "capstan (rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    });
    json_response(StatusCode::OK, &version, &[])
}

async fn healthy() -> &'static str {
    "ok"
}

async fn ready(State(server): State<Arc<ApiServer>>) -> Response {
    match server.objects.store().current_revision().await {
        Ok(_) => "ok".into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("[-]store failed: {e}\nreadyz check failed\n")).into_response()
        }
    }
}

async fn metrics(State(server): State<Arc<ApiServer>>) -> Response {
    let mut text = server.metrics.render(server.cache.watcher_count());
    text.push_str(&server.plugins.prometheus());
    let sources = server.extra_metrics.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    for source in sources {
        text.push_str(&source());
    }
    let mut response = text.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

fn accept(headers: &HeaderMap) -> &str {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn aggregated_response(value: &Value) -> Response {
    let mut response = json_response(StatusCode::OK, value, &[]);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(discovery::AGGREGATED_V2));
    response
}

async fn api_root(State(server): State<Arc<ApiServer>>, headers: HeaderMap) -> Response {
    if discovery::wants_aggregated(accept(&headers)) {
        return aggregated_response(&discovery::aggregated(&server.catalog().registry, true));
    }
    json_response(StatusCode::OK, &discovery::api_versions(&server.server_address), &[])
}

async fn apis_root(State(server): State<Arc<ApiServer>>, headers: HeaderMap) -> Response {
    if discovery::wants_aggregated(accept(&headers)) {
        return aggregated_response(&discovery::aggregated(&server.catalog().registry, false));
    }
    json_response(StatusCode::OK, &discovery::api_group_list(&server.catalog().registry), &[])
}

fn raw_json(bytes: &[u8]) -> Response {
    let mut response = (StatusCode::OK, bytes.to_vec()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The media type of the Swagger 2.0 document in protobuf, which client-go's discovery (and so
/// kubectl's client-side validation) asks for. Clients ask with either spelling (`…v2@v1.0…` or
/// `…v2.v1.0…`); the answer uses the dotted one, since Go's MIME parser refuses the `@`.
const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

async fn openapi_v2(State(server): State<Arc<ApiServer>>, headers: axum::http::HeaderMap) -> Response {
    let accepts = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok());
    let wants_protobuf = accepts.flat_map(|v| v.split(',')).any(|t| {
        let media = t.split(';').next().unwrap_or_default().trim();
        media.replace('@', ".") == OPENAPI_V2_PROTOBUF
    });
    if !wants_protobuf {
        return raw_json(server.catalog().openapi.v2_document());
    }
    let mut response = (StatusCode::OK, server.catalog().openapi.v2_protobuf().to_vec()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENAPI_V2_PROTOBUF));
    response
}

async fn openapi_v3_index(State(server): State<Arc<ApiServer>>) -> Response {
    json_response(StatusCode::OK, &server.catalog().openapi.v3_index(), &[])
}

async fn openapi_v3(
    State(server): State<Arc<ApiServer>>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Response {
    match server.catalog().openapi.v3_document(&path) {
        Some(document) => raw_json(document),
        None => ApiError::NoRoute.into_response(),
    }
}

async fn resources(State(server): State<Arc<ApiServer>>, request: Request) -> Response {
    match serve_resource(&server, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn serve_resource(server: &ApiServer, request: Request) -> ApiResult<Response> {
    if crate::node_proxy::is_node_subresource(request.uri().path()) {
        return crate::node_proxy::proxy(server, request).await;
    }
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query())?;
    if crate::metrics_api::handles(parts.uri.path()) {
        return crate::metrics_api::serve(server, &parts.method, parts.uri.path(), &query).await;
    }
    let catalog = server.catalog();
    let target = routing::parse(&catalog.registry, parts.uri.path())?;
    let body = read_body(body).await?;
    let headers = &parts.headers;
    match target {
        Target::GroupVersion(group, version) => discovery::api_resource_list(&catalog.registry, &group, &version)
            .map(|list| json_response(StatusCode::OK, &list, &[]))
            .ok_or(ApiError::NoRoute),
        Target::Group(group) => discovery::api_group_document(&catalog.registry, &group)
            .map(|doc| json_response(StatusCode::OK, &doc, &[]))
            .ok_or(ApiError::NoRoute),
        Target::Virtual(resource) => {
            if parts.method != Method::POST {
                return Err(ApiError::MethodNotAllowed);
            }
            let identity = parts.extensions.get::<Identity>().cloned().ok_or(ApiError::Unauthorized)?;
            review(resource, headers, &body, &identity)
        }
        Target::Resource(path) => {
            let warnings = std::sync::Mutex::new(Vec::new());
            let identity = parts.extensions.get::<Identity>();
            let call = Call {
                server,
                catalog: &catalog,
                path: &path,
                query: &query,
                headers,
                body: &body,
                identity,
                warnings: &warnings,
            };
            // `status` and a namespace's `finalize` are written like the object itself (the write
            // path keeps the rest); the other subresources have handlers of their own.
            if path.subresource.as_deref().is_some_and(|s| s != "status" && s != "finalize") {
                let response = serve_subresource(&call, &parts.method).await;
                return Ok(call.attach_warnings(response.unwrap_or_else(IntoResponse::into_response)));
            }
            let verb = routing::verb(&parts.method, &path, &query)?;
            if path.subresource.as_deref() == Some("finalize") && !matches!(verb, Verb::Update | Verb::Patch) {
                return Err(ApiError::MethodNotAllowed);
            }
            if !path.info.supports(verb.as_str()) && path.subresource.is_none() {
                return Err(ApiError::MethodNotAllowed);
            }
            let response = match verb {
                Verb::Get => handlers::get(&call).await,
                Verb::List => handlers::list(&call).await,
                Verb::Watch => watch::watch(&call).await,
                Verb::Create => handlers::create(&call).await,
                Verb::Update => handlers::update(&call).await,
                Verb::Patch => handlers::patch(&call).await,
                Verb::Delete => handlers::delete(&call).await,
                Verb::DeleteCollection => handlers::delete_collection(&call).await,
            };
            let response = call.attach_warnings(response.unwrap_or_else(IntoResponse::into_response));
            if !response.status().is_success() {
                return Ok(response);
            }
            let defines_plugins = path.info.gvk.group == "capstan.io" && path.info.plural == "plugins";
            if defines_plugins
                && !matches!(verb, Verb::Get | Verb::List | Verb::Watch)
                && !query.dry_run()?
                && let Err(e) = server.sync_plugins().await
            {
                tracing::warn!(error = %e, "cannot sync plugins after a write to them");
            }
            let defines_resources =
                path.info.gvk.group == "apiextensions.k8s.io" && path.info.plural == "customresourcedefinitions";
            if defines_resources && !matches!(verb, Verb::Get | Verb::List | Verb::Watch) && !query.dry_run()? {
                server.custom_resources_changed(&catalog).await?;
            }
            Ok(response)
        }
    }
}

async fn serve_subresource(call: &Call<'_>, method: &Method) -> ApiResult<Response> {
    let subresource = call.path.subresource.as_deref().unwrap_or_default();
    let allowed = |verbs: &[&str]| {
        let verb = match *method {
            Method::GET => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::POST => "create",
            _ => "",
        };
        if verbs.contains(&verb) { Ok(()) } else { Err(ApiError::MethodNotAllowed) }
    };
    match subresource {
        "scale" => {
            allowed(&["get", "update", "patch"])?;
            subresources::scale(call, method).await
        }
        "binding" => {
            allowed(&["create"])?;
            subresources::bind(call).await
        }
        "eviction" => {
            allowed(&["create"])?;
            subresources::evict(call).await
        }
        "token" => {
            allowed(&["create"])?;
            subresources::create_token(call).await
        }
        other => Err(ApiError::NotImplemented(format!(
            "pods/{other} is proxied to the node agent, which this server does not run yet"
        ))),
    }
}

/// Reads a request body of at most [`body::MAX_BODY`] bytes. A larger one is read to its end
/// (up to a hard cap) before the 413 goes out, so the client sees the answer instead of a reset
/// connection.
async fn read_body(body: Body) -> ApiResult<bytes::Bytes> {
    const DRAIN_CAP: usize = 64 * 1024 * 1024;
    let mut stream = body.into_data_stream();
    let mut collected = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        seen += chunk.len();
        if seen <= body::MAX_BODY {
            collected.extend_from_slice(&chunk);
        } else if seen > DRAIN_CAP {
            break;
        }
    }
    if seen > body::MAX_BODY {
        return Err(ApiError::TooLarge(body::MAX_BODY));
    }
    Ok(collected.freeze())
}

/// Answers the reviews: every authenticated user may do everything until RBAC lands.
fn review(
    resource: &discovery::VirtualResource,
    headers: &HeaderMap,
    body: &bytes::Bytes,
    identity: &Identity,
) -> ApiResult<Response> {
    let response = match resource.gvk.kind {
        "SelfSubjectAccessReview" => {
            let spec = body::decode_access_review(headers, body)?;
            json!({
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": spec,
                "status": {"allowed": true, "reason": "authenticated users may do everything until RBAC is enabled"},
            })
        }
        _ => json!({
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": identity.user, "groups": identity.groups}},
        }),
    };
    Ok(json_response(StatusCode::CREATED, &response, &[]))
}
