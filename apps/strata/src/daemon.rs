//! `strata run`: the node daemon.
//!
//! It opens (and so locks) the store, starts the embedded PeerJS broker
//! when the config asks for it, serves the control API on loopback, writes
//! `api.json` and `api.token`, publishes node events, and runs until
//! SIGINT or SIGTERM, when it removes those files again.
//!
//! Between the store and the API run the transports and the session
//! actors ([`crate::node`]); stored sessions resume as their peers come
//! back. On SIGTERM the actors stop first (every session is already
//! durable: nothing is lost by a SIGKILL either), then the transports.

use std::sync::Arc;

use serde::Serialize;
use strata_transport_peerjs::{Broker, BrokerConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::commands::Ctx;
use crate::config::BrokerChoice;
use crate::control::client::ControlClient;
use crate::control::events::EventBus;
use crate::control::server::{ApiServer, ApiState};
use crate::control::{ApiFile, Token};
use crate::error::{AppError, ErrorKind, Result};
use crate::identity::Local;
use crate::node::NodeSessions;
use crate::output;
use crate::paths::write_atomic;
use crate::storage::{self, Unlock};

/// Events kept for `Last-Event-ID` replay.
const EVENT_HISTORY: usize = 1000;
/// Events a live subscriber may fall behind before it is cut off.
const EVENT_LAG: usize = 256;

/// What the daemon reports when it is ready.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ready {
    event: &'static str,
    pid: u32,
    peer_id: String,
    installation_id: String,
    api: String,
    broker: Option<String>,
    libp2p: Vec<String>,
    contact: String,
}

/// `strata run`.
pub(crate) async fn run(ctx: &Ctx) -> Result<()> {
    let config = ctx.config()?;
    if let Some(daemon) = ControlClient::discover(&ctx.dir).await? {
        return Err(AppError::new(
            ErrorKind::Busy,
            format!(
                "a strata daemon (pid {}) is already running on {}",
                daemon.pid(),
                ctx.dir.root().display()
            ),
        )
        .hint("use that one, or stop it first; two nodes need two data directories"));
    }
    // Installed first, so a signal during start-up still stops us cleanly.
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| AppError::internal(e.to_string()))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| AppError::internal(e.to_string()))?;

    let dir = ctx.dir.clone();
    let (store, local) = tokio::task::spawn_blocking(move || -> Result<_> {
        let unlock = Unlock::from_env()?;
        let store = storage::open(&dir, &unlock)?;
        let local = Local::load(&store, &dir.store_file())?;
        Ok((store, local))
    })
    .await
    .map_err(|e| AppError::internal(format!("store task failed: {e}")))??;
    let local = Arc::new(local);
    tracing::info!(peer_id = %local.peer_id(), installation_id = %local.installation_id(), "store open");

    let mut network = config.network()?;
    let broker = match network.broker {
        Some(BrokerChoice::Embedded(addr)) => {
            let broker_config = BrokerConfig {
                key: config.peerjs.key.clone(),
                allow_discovery: config.broker.allow_discovery,
                ..BrokerConfig::default()
            };
            let broker = Broker::bind(addr, broker_config).await.map_err(|e| {
                bind_error(
                    "the embedded PeerJS broker",
                    addr,
                    &e,
                    "broker.port (STRATA_BROKER__PORT)",
                )
            })?;
            Some(broker)
        }
        Some(BrokerChoice::External(_)) | None => None,
    };
    let broker_url = match (&broker, &network.broker) {
        (Some(broker), _) => Some(format!("ws://{}/", broker.local_addr())),
        (None, Some(BrokerChoice::External(url))) => Some(url.to_string()),
        _ => None,
    };

    let store = Arc::new(store);
    let events = Arc::new(EventBus::new(EVENT_HISTORY, EVENT_LAG));
    if let (Some(broker), Some(BrokerChoice::Embedded(_))) = (&broker, &network.broker) {
        // Bound to port 0, the embedded broker's real port is only known now.
        network.broker = Some(BrokerChoice::Embedded(broker.local_addr()));
    }
    let (sessions, reachable) =
        NodeSessions::start(&network, &ctx.dir, &local, Arc::clone(&store), Arc::clone(&events)).await?;
    let sessions = Arc::new(sessions);

    let api_addr = config.api_addr()?;
    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .map_err(|e| bind_error("the control API", api_addr, &e, "api.port (STRATA_API__PORT)"))?;
    let shutdown = CancellationToken::new();
    let token = Token::generate();
    let state = Arc::new(ApiState {
        token: token.clone(),
        local: Arc::clone(&local),
        store: Arc::clone(&store),
        store_path: ctx.dir.store_file(),
        config: config.clone(),
        sessions: Arc::clone(&sessions) as Arc<dyn crate::sessions::Sessions>,
        libp2p: reachable.libp2p.clone(),
        events: Arc::clone(&events),
        shutdown: shutdown.clone(),
    });
    let server = ApiServer::start(listener, state)?;
    let api_url = format!("http://{}", server.local_addr);
    let pid = std::process::id();
    // The token first: a client that sees api.json must find the token.
    write_atomic(&ctx.dir.token_file(), token.expose().as_bytes(), 0o600)?;
    let api_file = ApiFile {
        url: api_url.clone(),
        address: server.local_addr,
        pid,
    };
    let api_json = serde_json::to_vec(&api_file).map_err(|e| AppError::internal(e.to_string()))?;
    write_atomic(&ctx.dir.api_file(), &api_json, 0o600)?;
    tracing::info!(url = %api_url, token_file = %ctx.dir.token_file().display(), "control API listening");

    let ready = Ready {
        event: "ready",
        pid,
        peer_id: local.peer_id().to_string(),
        installation_id: local.installation_id().to_string(),
        api: api_url.clone(),
        broker: broker_url.clone(),
        libp2p: reachable.libp2p.iter().map(ToString::to_string).collect(),
        contact: crate::ops::contact_uri(&local, &config, &reachable.libp2p)?,
    };
    events.publish(
        "started",
        serde_json::to_value(&ready).map_err(|e| AppError::internal(e.to_string()))?,
    );
    if ctx.json {
        output::json(&ready)?;
    } else {
        output::line(format!("strata node running (pid {pid})"))?;
        let broker_line = match (&broker, &broker_url) {
            (Some(_), Some(url)) => format!("{url} (embedded)"),
            (None, Some(url)) => format!("{url} (external)"),
            _ => "off".to_owned(),
        };
        let token_line = format!("{} (mode 0600)", ctx.dir.token_file().display());
        output::fields(&[
            ("peer id", &ready.peer_id),
            ("installation id", &ready.installation_id),
            ("control API", &api_url),
            ("API token", &token_line),
            ("PeerJS broker", &broker_line),
            ("libp2p", &ready.libp2p.join(" ")),
            ("contact", &ready.contact),
        ])?;
    }

    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
    }
    events.publish("stopping", serde_json::json!({"pid": pid}));
    shutdown.cancel();
    remove_api_files(ctx, pid);
    server.join().await;
    sessions.shutdown().await;
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Removes `api.json` and `api.token` if they are still ours.
fn remove_api_files(ctx: &Ctx, pid: u32) {
    let ours = std::fs::read(ctx.dir.api_file())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<ApiFile>(&bytes).ok())
        .is_some_and(|api| api.pid == pid);
    if ours {
        for path in [ctx.dir.api_file(), ctx.dir.token_file()] {
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "could not remove");
            }
        }
    }
}

fn bind_error(what: &str, addr: std::net::SocketAddr, error: &std::io::Error, key: &str) -> AppError {
    let hint = if error.kind() == std::io::ErrorKind::AddrInUse {
        format!("another program uses {addr}; set {key} to a free port, or 0 for any")
    } else {
        format!("check {key} and the address")
    };
    AppError::new(
        ErrorKind::Network,
        format!("cannot listen for {what} on {addr}: {error}"),
    )
    .hint(hint)
}
