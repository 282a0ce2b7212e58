//! An embedded PeerJS-compatible broker (the `peer` 1.0.2 server's
//! behaviour), on axum.
//!
//! It serves what unmodified `peerjs` clients use:
//! - `GET {path}`: the server description (JSON);
//! - `GET {path}{key}/id`: a fresh UUID (any key, as the real server);
//! - `GET {path}{key}/peers`: 401 unless discovery is on;
//! - the WebSocket `{path}peerjs?key=&id=&token=`: registration (`OPEN`,
//!   `ID-TAKEN`, `ERROR`, a silent re-attach for the same id and token),
//!   routing of `OFFER`/`ANSWER`/`CANDIDATE`/`LEAVE`/`EXPIRE` with the
//!   sender's id as `src`, queueing for ids not yet connected (then `EXPIRE`
//!   to the sender), and the `HEARTBEAT` liveness timeout.
//!
//! Beyond the reference server, every resource is bounded: concurrent clients,
//! sockets per IP, connection and message rates per IP and per client, the
//! per-client send queue, and the queues held for offline ids.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::protocol::{MAX_SIGNAL_MESSAGE, Message, MessageType};

/// A token bucket: `per_second` sustained, `burst` at once.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: f64,
}

/// How the broker behaves. Defaults follow the `peer` CLI.
#[derive(Clone, PartialEq, Debug)]
pub struct BrokerConfig {
    /// The key clients must present on the WebSocket (`peerjs`).
    pub key: String,
    /// The mount path (`/`); the WebSocket lives at `{path}peerjs`.
    pub path: String,
    /// How long a message for an unconnected id is held before `EXPIRE` (5 s).
    pub expire_timeout: Duration,
    /// How long a client may go without `HEARTBEAT` (60 s).
    pub alive_timeout: Duration,
    /// Most registered clients (5000).
    pub concurrent_limit: usize,
    /// Most open sockets from one IP address (256).
    pub max_sockets_per_ip: usize,
    /// New sockets and `/id` requests per IP address.
    pub connect_rate: RateLimit,
    /// Messages per client socket; a client over it gets `ERROR` and is
    /// disconnected.
    pub message_rate: RateLimit,
    /// Messages waiting to be written to one client socket (256); a client
    /// that does not read is disconnected, and its senders get `LEAVE`.
    pub client_queue: usize,
    /// Messages held for one unconnected id (64).
    pub offline_queue: usize,
    /// Unconnected ids with held messages (10 000).
    pub offline_ids: usize,
    /// Serve `GET {path}{key}/peers`.
    pub allow_discovery: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            key: "peerjs".to_owned(),
            path: "/".to_owned(),
            expire_timeout: Duration::from_secs(5),
            alive_timeout: Duration::from_secs(60),
            concurrent_limit: 5000,
            max_sockets_per_ip: 256,
            connect_rate: RateLimit {
                per_second: 50.0,
                burst: 200.0,
            },
            message_rate: RateLimit {
                per_second: 200.0,
                burst: 1000.0,
            },
            client_queue: 256,
            offline_queue: 64,
            offline_ids: 10_000,
            allow_discovery: false,
        }
    }
}

impl BrokerConfig {
    /// `path` with a leading and a trailing `/`, as the PeerJS client builds it.
    fn base(&self) -> String {
        let trimmed = self.path.trim_matches('/');
        if trimmed.is_empty() {
            "/".to_owned()
        } else {
            format!("/{trimmed}/")
        }
    }
}

/// A running broker. Dropping it leaves the broker running; call
/// [`Broker::shutdown`] to stop it and close every client socket.
#[derive(Debug)]
pub struct Broker {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

impl Broker {
    /// Binds `addr` (port 0 picks a free port) and serves `ws://`.
    pub async fn bind(addr: SocketAddr, config: BrokerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::serve(listener, config)
    }

    /// Binds `addr` and serves `wss://` (and `https://`) with `tls`.
    pub async fn bind_tls(
        addr: SocketAddr,
        config: BrokerConfig,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Self::start(TlsListener::new(listener, tls)?, local_addr, config)
    }

    /// Serves `ws://` on an already bound listener.
    pub fn serve(listener: TcpListener, config: BrokerConfig) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        Self::start(listener, local_addr, config)
    }

    fn start<L>(listener: L, local_addr: SocketAddr, config: BrokerConfig) -> std::io::Result<Self>
    where
        L: Listener<Addr = SocketAddr>,
        for<'a> ClientAddr: Connected<IncomingStream<'a, L>>,
    {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            realm: Mutex::new(Realm::default()),
            shutdown: shutdown_rx.clone(),
        });
        let app = router(Arc::clone(&shared));
        let span = tracing::info_span!("peerjs-broker", %local_addr);
        let mut stop = shutdown_rx.clone();
        let server = tokio::spawn(
            async move {
                let service = app.into_make_service_with_connect_info::<ClientAddr>();
                let graceful = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                if let Err(error) = axum::serve(listener, service).with_graceful_shutdown(graceful).await {
                    tracing::warn!(%error, "broker server stopped");
                }
            }
            .instrument(span.clone()),
        );
        let sweeper = tokio::spawn(sweep(Arc::clone(&shared), shutdown_rx).instrument(span));
        tracing::info!(%local_addr, "PeerJS broker listening");
        Ok(Self {
            local_addr,
            shutdown,
            server,
            sweeper,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every client socket and waits for the server
    /// to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.sweeper.abort();
        // Sockets close as their tasks see the signal; the server then ends.
        if tokio::time::timeout(Duration::from_secs(5), self.server).await.is_err() {
            tracing::warn!("broker did not stop within 5 s");
        }
    }
}

/// The peer address of a client connection, for the per-IP limits.
#[derive(Clone, Copy, Debug)]
struct ClientAddr(SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Most TLS handshakes in progress at once; more connections wait in the
/// kernel's accept queue.
const MAX_HANDSHAKES: usize = 256;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP and runs TLS handshakes concurrently (a stalled handshake
/// never blocks the others), handing finished streams to axum.
struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let (tx, ready) = mpsc::channel(64);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                    return;
                };
                let (tcp, remote) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually fd exhaustion: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, remote)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%remote, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local_addr,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor only stops when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

struct Shared {
    config: BrokerConfig,
    realm: Mutex<Realm>,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn realm(&self) -> MutexGuard<'_, Realm> {
        // The realm holds no invariant a panicking holder could break halfway
        // that is worse than losing the broker; keep serving.
        self.realm.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Realm {
    clients: HashMap<String, Client>,
    queues: HashMap<String, OfflineQueue>,
    ips: HashMap<IpAddr, IpState>,
    next_socket: u64,
}

struct Client {
    token: String,
    socket: u64,
    tx: mpsc::Sender<Outbound>,
    last_ping: Instant,
}

struct OfflineQueue {
    created: Instant,
    messages: VecDeque<Message>,
}

struct IpState {
    sockets: usize,
    bucket: Bucket,
}

enum Outbound {
    Text(String),
    Close,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: RateLimit) -> Self {
        Self {
            tokens: limit.burst,
            at: Instant::now(),
        }
    }

    fn take(&mut self, limit: RateLimit) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * limit.per_second;
        self.tokens = (self.tokens + refill).min(limit.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let base = shared.config.base();
    let mut app = Router::new()
        .route(&base, get(info))
        .route(&format!("{base}peerjs"), get(upgrade))
        .route(&format!("{base}{{key}}/id"), get(new_id))
        .route(&format!("{base}{{key}}/peers"), get(peers));
    if base != "/" {
        app = app.route(base.trim_end_matches('/'), get(info));
    }
    app.with_state(shared)
}

fn cors(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    response
}

async fn info() -> Response {
    cors((
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"name":"PeerJS Server","description":"A server side element to broker connections between PeerJS clients.","website":"https://peerjs.com/"}"#,
    ))
}

async fn new_id(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(ClientAddr(remote)): ConnectInfo<ClientAddr>,
    Path(_key): Path<String>,
) -> Response {
    if !admit_rate(&shared, remote.ip()) {
        return cors(StatusCode::TOO_MANY_REQUESTS);
    }
    cors(([(header::CONTENT_TYPE, "text/html")], uuid_v4()))
}

async fn peers(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    if !shared.config.allow_discovery || key != shared.config.key {
        return cors(StatusCode::UNAUTHORIZED);
    }
    let ids: Vec<String> = shared.realm().clients.keys().cloned().collect();
    cors(axum::Json(ids))
}

fn admit_rate(shared: &Shared, ip: IpAddr) -> bool {
    let limit = shared.config.connect_rate;
    let mut realm = shared.realm();
    let state = realm.ips.entry(ip).or_insert_with(|| IpState {
        sockets: 0,
        bucket: Bucket::full(limit),
    });
    state.bucket.take(limit)
}

/// A random RFC 4122 version-4 UUID, as `crypto.randomUUID()` makes.
fn uuid_v4() -> String {
    let v = (rand::random::<u128>() & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        v >> 96,
        (v >> 80) & 0xffff,
        (v >> 64) & 0xffff,
        (v >> 48) & 0xffff,
        v & 0xffff_ffff_ffff
    )
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    ConnectInfo(ClientAddr(remote)): ConnectInfo<ClientAddr>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !admit_rate(&shared, remote.ip()) {
        return StatusCode::TOO_MANY_REQUESTS.into_response();
    }
    ws.max_message_size(MAX_SIGNAL_MESSAGE)
        .max_frame_size(MAX_SIGNAL_MESSAGE)
        .on_upgrade(move |socket| {
            let span = tracing::debug_span!("broker-socket", %remote);
            serve_socket(shared, socket, remote.ip(), query).instrument(span)
        })
}

/// Sends one message and closes: the reference server's refusal path.
async fn refuse(mut socket: WebSocket, message: Message) {
    let _ = socket.send(ws::Message::Text(message.to_text().into())).await;
    let _ = socket.close().await;
}

async fn serve_socket(shared: Arc<Shared>, socket: WebSocket, ip: IpAddr, query: HashMap<String, String>) {
    let (Some(id), Some(token), Some(key)) = (query.get("id"), query.get("token"), query.get("key")) else {
        let msg = "No id, token, or key supplied to websocket server";
        return refuse(socket, Message::error(MessageType::Error, msg)).await;
    };
    if *key != shared.config.key {
        return refuse(socket, Message::error(MessageType::Error, "Invalid key provided")).await;
    }
    let (tx, rx) = mpsc::channel(shared.config.client_queue.max(1));
    let socket_id = match register(&shared, id, token, ip, tx.clone()) {
        Ok(socket_id) => socket_id,
        Err(refusal) => return refuse(socket, refusal).await,
    };
    tracing::debug!(%id, "client connected");
    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_socket(sink, rx, shared.shutdown.clone()));
    read_socket(&shared, id, socket_id, stream).await;
    // Let the writer flush what is queued (an ERROR before a close), briefly.
    let _ = tx.try_send(Outbound::Close);
    drop(tx);
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(1), writer).await.is_err() {
        abort.abort();
    }
    let mut realm = shared.realm();
    if realm.clients.get(id).is_some_and(|c| c.socket == socket_id) {
        realm.clients.remove(id);
        tracing::debug!(%id, "client disconnected");
    }
    if let Some(state) = realm.ips.get_mut(&ip) {
        state.sockets = state.sockets.saturating_sub(1);
    }
}

/// Registers (or re-attaches) `id`; returns the socket's number, or the
/// message to refuse it with.
fn register(shared: &Shared, id: &str, token: &str, ip: IpAddr, tx: mpsc::Sender<Outbound>) -> Result<u64, Message> {
    let config = &shared.config;
    let mut realm = shared.realm();
    let ip_state = realm.ips.entry(ip).or_insert_with(|| IpState {
        sockets: 0,
        bucket: Bucket::full(config.connect_rate),
    });
    if ip_state.sockets >= config.max_sockets_per_ip {
        return Err(Message::error(
            MessageType::Error,
            "Too many connections from this address",
        ));
    }
    realm.next_socket += 1;
    let socket = realm.next_socket;
    let fresh = match realm.clients.get_mut(id) {
        Some(existing) if existing.token != token => {
            return Err(Message::error(MessageType::IdTaken, "ID is taken"));
        }
        Some(existing) => {
            // Same id and token: move the record to this socket and send
            // nothing, as the reference server does. The old socket is
            // closed rather than left inert.
            let _ = existing.tx.try_send(Outbound::Close);
            existing.tx = tx.clone();
            existing.socket = socket;
            existing.last_ping = Instant::now();
            false
        }
        None => {
            if realm.clients.len() >= config.concurrent_limit {
                return Err(Message::error(
                    MessageType::Error,
                    "Server has reached its concurrent user limit",
                ));
            }
            realm.clients.insert(
                id.to_owned(),
                Client {
                    token: token.to_owned(),
                    socket,
                    tx: tx.clone(),
                    last_ping: Instant::now(),
                },
            );
            true
        }
    };
    if let Some(state) = realm.ips.get_mut(&ip) {
        state.sockets += 1;
    }
    if fresh {
        let _ = tx.try_send(Outbound::Text(Message::bare(MessageType::Open).to_text()));
    }
    // Flush what was held for this id, in order.
    if let Some(queue) = realm.queues.remove(id) {
        for message in queue.messages {
            deliver(&mut realm, id, message);
        }
    }
    Ok(socket)
}

async fn write_socket(
    mut sink: futures::stream::SplitSink<WebSocket, ws::Message>,
    mut rx: mpsc::Receiver<Outbound>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            _ = shutdown.wait_for(|stopped| *stopped) => None,
        };
        match next {
            Some(Outbound::Text(text)) => {
                if sink.send(ws::Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            Some(Outbound::Close) | None => break,
        }
    }
    let _ = sink.close().await;
}

async fn read_socket(shared: &Shared, id: &str, socket: u64, mut stream: futures::stream::SplitStream<WebSocket>) {
    let mut bucket = Bucket::full(shared.config.message_rate);
    let mut shutdown = shared.shutdown.clone();
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        };
        let text = match frame {
            Some(Ok(ws::Message::Text(text))) => text,
            Some(Ok(ws::Message::Close(_))) | Some(Err(_)) | None => return,
            Some(Ok(_)) => continue,
        };
        if shared.realm().clients.get(id).is_none_or(|c| c.socket != socket) {
            // Superseded by a re-attach: this socket is inert.
            return;
        }
        if !bucket.take(shared.config.message_rate) {
            tracing::warn!(%id, "client exceeded the message rate; disconnecting");
            let mut realm = shared.realm();
            if let Some(client) = realm.clients.get(id) {
                let refusal = Message::error(MessageType::Error, "Rate limit exceeded");
                let _ = client.tx.try_send(Outbound::Text(refusal.to_text()));
                let _ = client.tx.try_send(Outbound::Close);
            }
            realm.clients.remove(id);
            return;
        }
        let message = match Message::parse(&text) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%id, %error, "ignoring a malformed client message");
                continue;
            }
        };
        handle(shared, id, message);
    }
}

fn handle(shared: &Shared, src: &str, message: Message) {
    let mut realm = shared.realm();
    match message.kind {
        MessageType::Heartbeat => {
            if let Some(client) = realm.clients.get_mut(src) {
                client.last_ping = Instant::now();
            }
        }
        MessageType::Leave if message.dst.as_deref().is_none_or(str::is_empty) => {
            realm.clients.remove(src);
            realm.queues.remove(src);
        }
        MessageType::Offer
        | MessageType::Answer
        | MessageType::Candidate
        | MessageType::Leave
        | MessageType::Expire => {
            let Some(dst) = message.dst.clone().filter(|d| !d.is_empty()) else {
                return;
            };
            let forwarded = Message {
                kind: message.kind,
                src: Some(src.to_owned()),
                dst: Some(dst.clone()),
                payload: message.payload,
            };
            if realm.clients.contains_key(&dst) {
                deliver(&mut realm, &dst, forwarded);
            } else if !matches!(message.kind, MessageType::Leave | MessageType::Expire) {
                hold(&shared.config, &mut realm, &dst, forwarded);
            }
        }
        // OPEN, ERROR, ID-TAKEN from a client, and unknown types: no handler.
        _ => {}
    }
}

/// Sends to a connected `dst`; if its socket cannot take it, drops `dst` and
/// tells the sender with `LEAVE`, as the reference server does when a send
/// throws.
fn deliver(realm: &mut Realm, dst: &str, message: Message) {
    let Some(client) = realm.clients.get(dst) else {
        return;
    };
    if client.tx.try_send(Outbound::Text(message.to_text())).is_ok() {
        return;
    }
    tracing::warn!(%dst, "client socket is not keeping up; disconnecting it");
    let _ = client.tx.try_send(Outbound::Close);
    realm.clients.remove(dst);
    if let Some(src) = message.src
        && message.kind != MessageType::Leave
        && let Some(sender) = realm.clients.get(&src)
    {
        let leave = Message {
            kind: MessageType::Leave,
            src: Some(dst.to_owned()),
            dst: Some(src.clone()),
            payload: None,
        };
        let _ = sender.tx.try_send(Outbound::Text(leave.to_text()));
    }
}

fn hold(config: &BrokerConfig, realm: &mut Realm, dst: &str, message: Message) {
    if !realm.queues.contains_key(dst) && realm.queues.len() >= config.offline_ids {
        tracing::warn!(%dst, "too many offline ids with held messages; dropping");
        return;
    }
    let queue = realm.queues.entry(dst.to_owned()).or_insert_with(|| OfflineQueue {
        created: Instant::now(),
        messages: VecDeque::new(),
    });
    if queue.messages.len() >= config.offline_queue {
        tracing::warn!(%dst, "offline queue full; dropping");
        return;
    }
    queue.messages.push_back(message);
}

/// Liveness and expiry, on the reference server's timers (300 ms and 1 s,
/// here one 250 ms tick for both).
async fn sweep(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
        let now = Instant::now();
        let config = &shared.config;
        let mut realm = shared.realm();
        let dead: Vec<String> = realm
            .clients
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_ping) >= config.alive_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            tracing::debug!(%id, "no HEARTBEAT within alive_timeout; dropping client");
            if let Some(client) = realm.clients.remove(&id) {
                let _ = client.tx.try_send(Outbound::Close);
            }
            realm.queues.remove(&id);
        }
        let expired: Vec<String> = realm
            .queues
            .iter()
            .filter(|(_, q)| now.duration_since(q.created) >= config.expire_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for dst in expired {
            let Some(queue) = realm.queues.remove(&dst) else {
                continue;
            };
            let senders: HashSet<String> = queue.messages.into_iter().filter_map(|m| m.src).collect();
            for sender in senders {
                if let Some(client) = realm.clients.get(&sender) {
                    let expire = Message {
                        kind: MessageType::Expire,
                        src: Some(dst.clone()),
                        dst: Some(sender.clone()),
                        payload: None,
                    };
                    let _ = client.tx.try_send(Outbound::Text(expire.to_text()));
                }
            }
        }
        // Forget idle per-IP state so the map stays bounded by live sockets.
        let limit = config.connect_rate;
        realm.ips.retain(|_, state| {
            state.sockets > 0 || now.duration_since(state.bucket.at).as_secs_f64() * limit.per_second < limit.burst
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn uuid_shape() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(uuid_v4(), id);
    }

    #[test]
    fn base_path_is_normalized() {
        for (path, base) in [("/", "/"), ("", "/"), ("myapp", "/myapp/"), ("/myapp/", "/myapp/")] {
            let config = BrokerConfig {
                path: path.to_owned(),
                ..BrokerConfig::default()
            };
            assert_eq!(config.base(), base);
        }
    }

    #[test]
    fn bucket_limits_rate() {
        let limit = RateLimit {
            per_second: 0.001,
            burst: 3.0,
        };
        let mut bucket = Bucket::full(limit);
        assert!((0..3).all(|_| bucket.take(limit)));
        assert!(!bucket.take(limit));
    }
}
