//! Exec, attach and port-forward: the node asks CRI for a streaming URL and connects to the
//! runtime's streaming server with SPDY/3.1, as the kubelet's CRI proxy does. What the client
//! speaks decides the bridge:
//!
//! - exec/attach over WebSocket (`v5.channel.k8s.io`, or `v4`): the node translates channel
//!   frames to the SPDY streams of `v4.channel.k8s.io` remotecommand (error, stdin, stdout,
//!   stderr, resize). v5's close signal (channel 255) half-closes the stdin stream, so the process
//!   in the container reads end-of-file; over WebSocket v4 the runtime has no way to learn it.
//! - port-forward over WebSocket with `SPDY/3.1+portforward.k8s.io` (kubectl's first try): each
//!   binary message carries SPDY bytes; the node unwraps them onto the runtime's SPDY connection.
//! - any of them over plain SPDY (`Upgrade: SPDY/3.1`, kubectl's fallback): spliced as is.
//!
//! The runtime (containerd's CRI streaming server) dials port-forward targets on localhost inside
//! the pod's network namespace, so servers bound to 127.0.0.1 in the pod are reachable.

use bytes::{BufMut as _, Bytes, BytesMut};
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::server::{Body, full, status};
use crate::spdy::{self, Frame, StreamOpener};

/// The header naming the stream sub-protocols of a SPDY upgrade.
const STREAM_PROTOCOL: &str = "x-stream-protocol-version";
/// The remotecommand protocol the node speaks to the runtime.
const REMOTECOMMAND_V4: &str = "v4.channel.k8s.io";
/// The port-forward protocol (SPDY streams named by `streamType`, `port`, `requestID`).
const PORT_FORWARD: &str = "portforward.k8s.io";
/// kubectl's WebSocket sub-protocol tunnelling SPDY port-forward.
const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// v5 and v4 channel numbers.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5's close signal: the payload names the channel the client will not write again.
const CLOSE: u8 = 255;

/// How the client asked to upgrade.
enum ClientUpgrade {
    WebSocket { key: HeaderValue, protocols: Vec<String> },
    Spdy { protocols: Vec<HeaderValue> },
}

fn client_upgrade(request: &Request<Incoming>) -> Option<ClientUpgrade> {
    let headers = request.headers();
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if upgrade.eq_ignore_ascii_case("websocket") {
        let key = headers.get(header::SEC_WEBSOCKET_KEY)?.clone();
        let protocols = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .collect();
        return Some(ClientUpgrade::WebSocket { key, protocols });
    }
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        let protocols = headers.get_all(STREAM_PROTOCOL).iter().cloned().collect();
        return Some(ClientUpgrade::Spdy { protocols });
    }
    None
}

/// The SPDY connection to the runtime's streaming server, and the headers of its `101`.
struct RuntimeConnection {
    headers: hyper::HeaderMap,
    io: TokioIo<Upgraded>,
}

/// Upgrades to SPDY/3.1 at the runtime's streaming `url`, offering `protocols`.
async fn connect_runtime(url: &str, protocols: &[HeaderValue]) -> Result<RuntimeConnection, Response<Body>> {
    let internal = |message: String| status(StatusCode::INTERNAL_SERVER_ERROR, &message);
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(internal(format!("unexpected streaming URL {url}")));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| internal(format!("cannot reach the runtime's streaming server: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
        .await
        .map_err(|e| internal(format!("cannot talk HTTP to the runtime's streaming server: {e}")))?;
    tokio::spawn(connection.with_upgrades());
    let mut upstream = Request::builder()
        .method(hyper::Method::POST)
        .uri(path)
        .header(header::HOST, authority)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1");
    for protocol in protocols {
        upstream = upstream.header(STREAM_PROTOCOL, protocol);
    }
    let upstream = upstream.body(Full::new(Bytes::new())).map_err(|e| internal(e.to_string()))?;
    let mut reply =
        sender.send_request(upstream).await.map_err(|e| internal(format!("the streaming server failed: {e}")))?;
    if reply.status() != StatusCode::SWITCHING_PROTOCOLS {
        let code = reply.status();
        let text = reply.into_body().collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
        return Err(status(code, &String::from_utf8_lossy(&text)));
    }
    let headers = reply.headers().clone();
    let io = hyper::upgrade::on(&mut reply)
        .await
        .map_err(|e| internal(format!("the streaming server did not upgrade: {e}")))?;
    Ok(RuntimeConnection { headers, io: TokioIo::new(io) })
}

/// A `101` accepting the client's WebSocket with `protocol`.
fn websocket_accepted(key: &HeaderValue, protocol: &str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Ok(protocol) = HeaderValue::from_str(protocol) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// Answers a plain SPDY client with the runtime's `101` and splices the two connections.
fn splice_spdy(mut request: Request<Incoming>, runtime: RuntimeConnection) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in &runtime.headers {
        response.headers_mut().append(name.clone(), value.clone());
    }
    let client = hyper::upgrade::on(&mut request);
    let mut upstream = runtime.io;
    tokio::spawn(async move {
        let Ok(client) = client.await else { return };
        let mut client = TokioIo::new(client);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    response
}

/// Accepts the client's WebSocket after the `101` is written and runs `bridge` on it.
fn on_websocket<F, Fut>(mut request: Request<Incoming>, bridge: F)
where
    F: FnOnce(WebSocketStream<TokioIo<Upgraded>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let client = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let client = match client.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "the client's WebSocket upgrade failed");
                return;
            }
        };
        let socket = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
        bridge(socket).await;
    });
}

/// Which streams an exec or attach has, from its query flags.
#[derive(Clone, Copy)]
#[allow(clippy::struct_excessive_bools, reason = "the four independent flags of the exec/attach query")]
pub(crate) struct Streams {
    /// The client sends stdin.
    pub stdin: bool,
    /// The client wants stdout.
    pub stdout: bool,
    /// The client wants stderr (never with a TTY).
    pub stderr: bool,
    /// A terminal, resizable through the resize stream.
    pub tty: bool,
}

/// Serves an exec or attach whose CRI streaming URL is `url`.
pub(crate) async fn exec(url: &str, streams: Streams, request: Request<Incoming>) -> Response<Body> {
    match client_upgrade(&request) {
        Some(ClientUpgrade::Spdy { protocols }) => match connect_runtime(url, &protocols).await {
            Ok(runtime) => splice_spdy(request, runtime),
            Err(response) => response,
        },
        Some(ClientUpgrade::WebSocket { key, protocols }) => {
            let Some(protocol) =
                ["v5.channel.k8s.io", REMOTECOMMAND_V4].into_iter().find(|p| protocols.iter().any(|o| o == p))
            else {
                return status(
                    StatusCode::BAD_REQUEST,
                    &format!("none of the offered protocols {protocols:?} is supported: use v5.channel.k8s.io"),
                );
            };
            let runtime = match connect_runtime(url, &[HeaderValue::from_static(REMOTECOMMAND_V4)]).await {
                Ok(runtime) => runtime,
                Err(response) => return response,
            };
            let v5 = protocol.starts_with("v5");
            let response = websocket_accepted(&key, protocol);
            on_websocket(request, move |socket| exec_bridge(socket, runtime.io, streams, v5));
            response
        }
        None => status(StatusCode::BAD_REQUEST, "exec and attach need a WebSocket (v5.channel.k8s.io) or SPDY upgrade"),
    }
}

/// Serves a port-forward whose CRI streaming URL is `url`.
pub(crate) async fn port_forward(url: &str, request: Request<Incoming>) -> Response<Body> {
    match client_upgrade(&request) {
        Some(ClientUpgrade::Spdy { protocols }) => match connect_runtime(url, &protocols).await {
            Ok(runtime) => splice_spdy(request, runtime),
            Err(response) => response,
        },
        Some(ClientUpgrade::WebSocket { key, protocols }) if protocols.iter().any(|p| p == PORT_FORWARD_TUNNEL) => {
            let runtime = match connect_runtime(url, &[HeaderValue::from_static(PORT_FORWARD)]).await {
                Ok(runtime) => runtime,
                Err(response) => return response,
            };
            let response = websocket_accepted(&key, PORT_FORWARD_TUNNEL);
            on_websocket(request, move |socket| tunnel_bridge(socket, runtime.io));
            response
        }
        Some(ClientUpgrade::WebSocket { protocols, .. }) => status(
            StatusCode::BAD_REQUEST,
            &format!("port-forward over WebSocket needs {PORT_FORWARD_TUNNEL}, offered {protocols:?}"),
        ),
        None => status(StatusCode::BAD_REQUEST, "port-forward needs a SPDY/3.1 or WebSocket upgrade"),
    }
}

/// Unwraps the SPDY bytes of kubectl's WebSocket tunnel onto the runtime's connection and wraps
/// the runtime's bytes back into binary messages.
async fn tunnel_bridge(socket: WebSocketStream<TokioIo<Upgraded>>, runtime: TokioIo<Upgraded>) {
    let (mut to_client, mut from_client) = socket.split();
    let (mut from_runtime, mut to_runtime) = tokio::io::split(runtime);
    let inbound = async {
        while let Some(Ok(message)) = from_client.next().await {
            match message {
                Message::Binary(data) if to_runtime.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_runtime.shutdown().await;
    };
    let outbound = async {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match from_runtime.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.send(Message::Binary(Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = to_client.send(Message::Close(None)).await;
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}

/// A channel message: the channel byte, then the payload.
fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut message = BytesMut::with_capacity(1 + data.len());
    message.put_u8(channel);
    message.put_slice(data);
    Message::Binary(message.freeze())
}

/// The SPDY streams of one remotecommand, by id.
#[derive(Clone, Copy)]
struct ExecStreamIds {
    error: spdy::StreamId,
    stdin: Option<spdy::StreamId>,
    stdout: Option<spdy::StreamId>,
    stderr: Option<spdy::StreamId>,
    resize: Option<spdy::StreamId>,
}

/// Opens the remotecommand streams the runtime waits for, returning their `SYN_STREAM`s.
fn open_exec_streams(opener: &mut StreamOpener, streams: Streams) -> (ExecStreamIds, Vec<Bytes>) {
    let mut frames = Vec::new();
    let mut open = |kind: &str, wanted: bool| {
        wanted.then(|| {
            let (id, frame) = opener.open(&[("streamtype", kind)]);
            frames.push(frame);
            id
        })
    };
    let error = open("error", true).unwrap_or_default();
    let ids = ExecStreamIds {
        error,
        stdin: open("stdin", streams.stdin),
        stdout: open("stdout", streams.stdout),
        stderr: open("stderr", streams.stderr && !streams.tty),
        resize: open("resize", streams.tty),
    };
    (ids, frames)
}

type ClientSink = futures::stream::SplitSink<WebSocketStream<TokioIo<Upgraded>>, Message>;
type ClientStream = futures::stream::SplitStream<WebSocketStream<TokioIo<Upgraded>>>;
type RuntimeReader = tokio::io::ReadHalf<TokioIo<Upgraded>>;
type FrameSender = tokio::sync::mpsc::Sender<Bytes>;

/// Translates a WebSocket channel exec/attach to the runtime's SPDY remotecommand.
async fn exec_bridge(
    socket: WebSocketStream<TokioIo<Upgraded>>,
    runtime: TokioIo<Upgraded>,
    streams: Streams,
    v5: bool,
) {
    let (to_client, from_client) = socket.split();
    let (from_runtime, mut to_runtime) = tokio::io::split(runtime);
    let mut opener = StreamOpener::default();
    let (ids, syn_streams) = open_exec_streams(&mut opener, streams);
    let (frames, mut outgoing) = tokio::sync::mpsc::channel::<Bytes>(64);
    // One writer owns the runtime connection; both directions queue frames for it.
    let writer = async move {
        for frame in syn_streams {
            if to_runtime.write_all(&frame).await.is_err() {
                return;
            }
        }
        while let Some(frame) = outgoing.recv().await {
            if to_runtime.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = to_runtime.write_all(&spdy::go_away(opener.last())).await;
        let _ = to_runtime.shutdown().await;
    };
    let inbound = exec_from_client(from_client, frames.clone(), ids, v5);
    let outbound = exec_from_runtime(from_runtime, to_client, frames, ids);
    let exchange = async {
        tokio::select! {
            () = inbound => {}
            () = outbound => {}
        }
    };
    // The writer ends once both halves dropped their senders, closing the runtime connection.
    tokio::join!(exchange, writer);
}

async fn send_all(frames: &FrameSender, list: Vec<Bytes>) -> bool {
    for frame in list {
        if frames.send(frame).await.is_err() {
            return false;
        }
    }
    true
}

/// Client channel messages → runtime streams: stdin, resize, and v5's close of stdin.
async fn exec_from_client(mut from_client: ClientStream, frames: FrameSender, ids: ExecStreamIds, v5: bool) {
    let mut stdin_open = ids.stdin.is_some();
    while let Some(Ok(message)) = from_client.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else { continue };
        let sent = match (channel, ids.stdin) {
            (STDIN, Some(stdin)) if stdin_open => send_all(&frames, spdy::data(stdin, payload, false)).await,
            (CLOSE, Some(stdin)) if v5 && stdin_open && payload.first() == Some(&STDIN) => {
                stdin_open = false;
                send_all(&frames, spdy::data(stdin, &[], true)).await
            }
            (RESIZE, _) => match ids.resize {
                Some(resize) => send_all(&frames, spdy::data(resize, payload, false)).await,
                None => true,
            },
            _ => true,
        };
        if !sent {
            break;
        }
    }
}

/// Runtime streams → client channel messages, until the exit status has arrived.
async fn exec_from_runtime(
    mut from_runtime: RuntimeReader,
    mut to_client: ClientSink,
    frames: FrameSender,
    ids: ExecStreamIds,
) {
    loop {
        let frame = match spdy::read_frame(&mut from_runtime).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "exec stream from the runtime ended");
                break;
            }
        };
        match frame {
            Frame::Data { stream, fin, data } => {
                let channel = match stream {
                    s if Some(s) == ids.stdout => Some(STDOUT),
                    s if Some(s) == ids.stderr => Some(STDERR),
                    s if s == ids.error => Some(ERROR),
                    _ => None,
                };
                if let Some(channel) = channel
                    && !data.is_empty()
                    && to_client.send(channel_message(channel, &data)).await.is_err()
                {
                    return;
                }
                // The runtime writes the exit status last: once the error stream ends, so has
                // everything else.
                if fin && stream == ids.error {
                    break;
                }
            }
            Frame::Ping(id) => {
                if frames.send(spdy::ping(id)).await.is_err() {
                    break;
                }
            }
            Frame::GoAway => break,
            Frame::SynReply { .. } | Frame::RstStream { .. } | Frame::Other => {}
        }
    }
    let _ = to_client.send(Message::Close(Some(close_frame()))).await;
}

fn close_frame() -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    tokio_tungstenite::tungstenite::protocol::CloseFrame { code: CloseCode::Normal, reason: "".into() }
}
