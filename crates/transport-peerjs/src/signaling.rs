//! The PeerJS broker client: one WebSocket to a `peer`-compatible broker.
//!
//! It registers with a client-chosen id and a random token, sends `HEARTBEAT`
//! every [`SignalingConfig::heartbeat_interval`] (the broker counts nothing
//! else as liveness), relays messages both ways, and when the socket drops it
//! reconnects with exponential backoff using the **same** id and token. The
//! reference broker sends no `OPEN` when a known id re-attaches with its
//! token, so a socket that opens and is not refused counts as registered.
//!
//! `wss://` brokers are verified with rustls (ring) against the Mozilla roots,
//! or against the roots given in [`TlsRoots::Custom`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::Instrument;

use crate::protocol::{MAX_SIGNAL_MESSAGE, Message, MessageType};

/// Which certificate authorities a `wss://` broker is checked against.
#[derive(Clone, Debug, Default)]
pub enum TlsRoots {
    /// The Mozilla root set compiled into the binary.
    #[default]
    WebPki,
    /// Only these roots (e.g. a private CA).
    Custom(Vec<CertificateDer<'static>>),
}

/// Where the broker is and how to talk to it.
#[derive(Clone, Debug)]
pub struct SignalingConfig {
    /// Broker host name or IP.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The broker's mount path (`/`).
    pub path: String,
    /// The broker key (`peerjs`).
    pub key: String,
    /// `wss://` instead of `ws://`.
    pub secure: bool,
    /// The registration token; random when `None`. A node that keeps its
    /// token across restarts reclaims its id at once, even while the broker
    /// still holds the crashed process's socket (it would say `ID-TAKEN` to
    /// any other token until its liveness timeout).
    pub token: Option<String>,
    /// Trust anchors for `wss://`.
    pub tls_roots: TlsRoots,
    /// `HEARTBEAT` period (PeerJS: 5 s; the broker drops a client after 60 s).
    pub heartbeat_interval: Duration,
    /// First reconnection delay; doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Longest reconnection delay.
    pub reconnect_max: Duration,
    /// How long the first registration may take.
    pub open_timeout: Duration,
}

impl SignalingConfig {
    /// A plain `ws://host:port/` broker with key `peerjs` and PeerJS's timers.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            path: "/".to_owned(),
            key: "peerjs".to_owned(),
            secure: false,
            token: None,
            tls_roots: TlsRoots::WebPki,
            heartbeat_interval: Duration::from_secs(5),
            reconnect_initial: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            open_timeout: Duration::from_secs(10),
        }
    }

    /// The WebSocket URL PeerJS builds:
    /// `ws[s]://host:port{path}peerjs?key=&id=&token=&version=1.5.5`.
    pub fn socket_url(&self, id: &str, token: &str) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        let trimmed = self.path.trim_matches('/');
        let base = if trimmed.is_empty() {
            "/".to_owned()
        } else {
            format!("/{trimmed}/")
        };
        // IPv6 literals need brackets in a URL.
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "{scheme}://{host}:{}{base}peerjs?key={}&id={id}&token={token}&version=1.5.5",
            self.port, self.key
        )
    }
}

/// Why registering with the broker failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalingError {
    /// Another client holds the id (`ID-TAKEN`).
    #[error("peer id {0} is taken")]
    IdTaken(String),
    /// The broker refused with `ERROR`.
    #[error("broker error: {0}")]
    Broker(String),
    /// The WebSocket could not be opened or broke.
    #[error("broker connection failed: {0}")]
    Connect(String),
    /// No answer from the broker in time.
    #[error("broker did not answer within {0:?}")]
    Timeout(Duration),
    /// The id is not one a PeerJS client would accept.
    #[error("invalid peer id {0:?}")]
    InvalidId(String),
    /// The token is not 1 to 64 ASCII letters and digits (it travels
    /// unencoded in the socket URL).
    #[error("invalid broker token")]
    InvalidToken(String),
}

/// What the client reports.
#[derive(Clone, PartialEq, Debug)]
pub enum SignalEvent {
    /// A relayed or broker message (`OFFER`, `ANSWER`, `CANDIDATE`, `LEAVE`,
    /// `EXPIRE`, ...).
    Message(Message),
    /// The broker socket dropped; reconnecting.
    Lost,
    /// Registered again after [`SignalEvent::Lost`]. `fresh` when the broker
    /// sent `OPEN` (it had forgotten us, e.g. after a restart).
    Reconnected {
        /// The broker sent `OPEN`.
        fresh: bool,
    },
}

/// Handle to a running broker client; dropping every clone closes it.
#[derive(Clone, Debug)]
pub struct Signaling {
    id: String,
    tx: mpsc::Sender<Message>,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Outgoing messages held while the broker is unreachable.
const HELD_WHILE_OFFLINE: usize = 256;

impl Signaling {
    /// Registers `id` with the broker and starts the client. Returns once the
    /// broker accepted the id.
    pub async fn connect(
        config: SignalingConfig,
        id: String,
    ) -> Result<(Self, mpsc::Receiver<SignalEvent>), SignalingError> {
        if !crate::protocol::is_valid_peer_id(&id) {
            return Err(SignalingError::InvalidId(id));
        }
        let token = match &config.token {
            Some(token) if is_valid_token(token) => token.clone(),
            Some(token) => return Err(SignalingError::InvalidToken(token.clone())),
            None => crate::protocol::random_token(),
        };
        crate::install_crypto_provider();
        let (socket, first) = tokio::time::timeout(config.open_timeout, open(&config, &id, &token))
            .await
            .map_err(|_| SignalingError::Timeout(config.open_timeout))??;
        let (tx, rx) = mpsc::channel(64);
        let (events_tx, events_rx) = mpsc::channel(256);
        let span = tracing::info_span!("peerjs-signaling", %id);
        let client = Client {
            config,
            id: id.clone(),
            token,
            rx,
            events: events_tx,
            held: VecDeque::new(),
        };
        tokio::spawn(client.run(socket, first).instrument(span));
        Ok((Self { id, tx }, events_rx))
    }

    /// This client's peer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Queues a message for the broker. Held (boundedly) while reconnecting.
    pub async fn send(&self, message: Message) -> Result<(), SignalingError> {
        self.tx
            .send(message)
            .await
            .map_err(|_| SignalingError::Connect("signaling client stopped".to_owned()))
    }
}

fn is_valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 64 && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn connector(config: &SignalingConfig) -> Result<Option<Connector>, SignalingError> {
    if !config.secure {
        return Ok(Some(Connector::Plain));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &config.tls_roots {
        // tokio-tungstenite builds a webpki-roots config itself.
        TlsRoots::WebPki => return Ok(None),
        TlsRoots::Custom(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| SignalingError::Connect(format!("bad root certificate: {e}")))?;
            }
            roots
        }
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SignalingError::Connect(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Connector::Rustls(Arc::new(tls))))
}

/// Opens the socket and reads the broker's verdict: `OPEN` (fresh), a refusal,
/// or — for a re-attach — nothing within a short grace period.
async fn open(config: &SignalingConfig, id: &str, token: &str) -> Result<(Socket, Option<Message>), SignalingError> {
    let url = config.socket_url(id, token);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_SIGNAL_MESSAGE))
        .max_frame_size(Some(MAX_SIGNAL_MESSAGE));
    let (mut socket, _response) =
        tokio_tungstenite::connect_async_tls_with_config(url, Some(ws_config), true, connector(config)?)
            .await
            .map_err(|e| SignalingError::Connect(e.to_string()))?;
    // The broker answers a refused or fresh registration at once; silence
    // means it re-attached us to our existing record.
    const REATTACH_GRACE: Duration = Duration::from_millis(500);
    let first = match tokio::time::timeout(REATTACH_GRACE, next_message(&mut socket)).await {
        Err(_) => return Ok((socket, None)),
        Ok(first) => first?,
    };
    match first.kind {
        MessageType::IdTaken => Err(SignalingError::IdTaken(id.to_owned())),
        MessageType::Error | MessageType::InvalidKey => Err(SignalingError::Broker(
            first.error_text().unwrap_or("unspecified").to_owned(),
        )),
        _ => Ok((socket, Some(first))),
    }
}

/// The next broker message, skipping malformed ones.
async fn next_message(socket: &mut Socket) -> Result<Message, SignalingError> {
    loop {
        match socket.next().await {
            Some(Ok(WsMessage::Text(text))) => match Message::parse(&text) {
                Ok(message) => return Ok(message),
                Err(error) => tracing::debug!(%error, "ignoring a malformed broker message"),
            },
            Some(Ok(WsMessage::Close(_))) | None => {
                return Err(SignalingError::Connect("broker closed the socket".to_owned()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(SignalingError::Connect(e.to_string())),
        }
    }
}

struct Client {
    config: SignalingConfig,
    id: String,
    token: String,
    rx: mpsc::Receiver<Message>,
    events: mpsc::Sender<SignalEvent>,
    held: VecDeque<Message>,
}

enum SessionEnd {
    /// Every handle is gone: stop.
    Stopped,
    /// The socket broke: reconnect.
    Broken(String),
}

impl Client {
    async fn run(mut self, socket: Socket, first: Option<Message>) {
        if let Some(first) = first
            && first.kind != MessageType::Open
            && self.events.send(SignalEvent::Message(first)).await.is_err()
        {
            return;
        }
        let mut socket = socket;
        loop {
            match self.session(&mut socket).await {
                SessionEnd::Stopped => {
                    let _ = socket.close(None).await;
                    return;
                }
                SessionEnd::Broken(reason) => {
                    tracing::info!(%reason, "broker connection lost; reconnecting");
                    if self.events.send(SignalEvent::Lost).await.is_err() {
                        return;
                    }
                }
            }
            match self.reconnect().await {
                Some((new_socket, fresh)) => {
                    socket = new_socket;
                    tracing::info!(fresh, "re-registered with the broker");
                    if self.events.send(SignalEvent::Reconnected { fresh }).await.is_err() {
                        return;
                    }
                }
                None => return,
            }
        }
    }

    /// Serves one socket until it breaks or the client is dropped.
    async fn session(&mut self, socket: &mut Socket) -> SessionEnd {
        while let Some(message) = self.held.pop_front() {
            if let Err(e) = socket.send(WsMessage::Text(message.to_text().into())).await {
                self.held.push_front(message);
                return SessionEnd::Broken(e.to_string());
            }
        }
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let beat = Message::bare(MessageType::Heartbeat).to_text();
                    if let Err(e) = socket.send(WsMessage::Text(beat.into())).await {
                        return SessionEnd::Broken(e.to_string());
                    }
                }
                outgoing = self.rx.recv() => {
                    let Some(message) = outgoing else { return SessionEnd::Stopped };
                    if let Err(e) = socket.send(WsMessage::Text(message.to_text().into())).await {
                        self.hold(message);
                        return SessionEnd::Broken(e.to_string());
                    }
                }
                incoming = socket.next() => match incoming {
                    Some(Ok(WsMessage::Text(text))) => match Message::parse(&text) {
                        Ok(message) => {
                            if matches!(message.kind, MessageType::Error | MessageType::IdTaken) {
                                tracing::warn!(kind = ?message.kind, msg = message.error_text(), "broker refused us");
                            }
                            if self.events.send(SignalEvent::Message(message)).await.is_err() {
                                return SessionEnd::Stopped;
                            }
                        }
                        Err(error) => tracing::debug!(%error, "ignoring a malformed broker message"),
                    },
                    Some(Ok(WsMessage::Close(_))) | None => return SessionEnd::Broken("closed by the broker".to_owned()),
                    Some(Ok(_)) => {}
                    Some(Err(tungstenite::Error::Capacity(e))) => {
                        return SessionEnd::Broken(format!("oversized broker message: {e}"));
                    }
                    Some(Err(e)) => return SessionEnd::Broken(e.to_string()),
                },
            }
        }
    }

    fn hold(&mut self, message: Message) {
        if self.held.len() >= HELD_WHILE_OFFLINE {
            tracing::warn!("broker unreachable and the outgoing backlog is full; dropping the oldest message");
            self.held.pop_front();
        }
        self.held.push_back(message);
    }

    /// Reconnects with the same id and token, backing off exponentially.
    /// Messages sent meanwhile are held. `None` once every handle is gone.
    async fn reconnect(&mut self) -> Option<(Socket, bool)> {
        let mut delay = self.config.reconnect_initial;
        loop {
            // Jitter keeps a fleet from reconnecting in lockstep after a restart.
            let jitter = delay.mul_f64(rand::random_range(0.0..0.25));
            let wait = tokio::time::sleep(delay + jitter);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    outgoing = self.rx.recv() => match outgoing {
                        Some(message) => self.hold(message),
                        None => return None,
                    },
                }
            }
            let attempt = tokio::time::timeout(self.config.open_timeout, open(&self.config, &self.id, &self.token));
            match attempt.await {
                Ok(Ok((socket, first))) => {
                    let fresh = first.as_ref().is_some_and(|m| m.kind == MessageType::Open);
                    if let Some(first) = first.filter(|m| m.kind != MessageType::Open) {
                        let _ = self.events.send(SignalEvent::Message(first)).await;
                    }
                    return Some((socket, fresh));
                }
                Ok(Err(error)) => tracing::debug!(%error, ?delay, "broker reconnection failed"),
                Err(_) => tracing::debug!(?delay, "broker reconnection timed out"),
            }
            delay = (delay * 2).min(self.config.reconnect_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_url_matches_peerjs() {
        let mut config = SignalingConfig::new("127.0.0.1", 9000);
        assert_eq!(
            config.socket_url("rust1", "tok"),
            "ws://127.0.0.1:9000/peerjs?key=peerjs&id=rust1&token=tok&version=1.5.5"
        );
        config.path = "/myapp".to_owned();
        config.secure = true;
        config.host = "::1".to_owned();
        assert_eq!(
            config.socket_url("a", "b"),
            "wss://[::1]:9000/myapp/peerjs?key=peerjs&id=a&token=b&version=1.5.5"
        );
    }

    #[test]
    fn tokens_look_like_peerjs_tokens() {
        let token = crate::protocol::random_token();
        assert_eq!(token.len(), 11);
        assert!(token.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
    }
}
