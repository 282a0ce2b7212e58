//! The control API server (axum), started by `strata run`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::events::{EventBus, NodeEvent};
use super::{API_PREFIX, RpcError, RpcRequest, RpcResponse, Token};
use crate::config::Config;
use crate::error::{AppError, ErrorKind, Result};
use crate::identity::Local;
use crate::ops::{self, VerifyParams};
use crate::sessions::{SessionCall, Sessions};
use crate::storage::NodeStore;

/// What the handlers share.
pub(crate) struct ApiState {
    /// The bearer token.
    pub(crate) token: Token,
    /// This node's identity.
    pub(crate) local: Arc<Local>,
    /// The open store.
    pub(crate) store: Arc<NodeStore>,
    /// Its path, for error messages.
    pub(crate) store_path: PathBuf,
    /// The configuration in effect.
    pub(crate) config: Config,
    /// The session layer.
    pub(crate) sessions: Arc<dyn Sessions>,
    /// The libp2p addresses the node listens on, for contact URIs.
    pub(crate) libp2p: Vec<libp2p::Multiaddr>,
    /// Node events.
    pub(crate) events: Arc<EventBus>,
    /// Cancelled when the node stops; ends event streams.
    pub(crate) shutdown: CancellationToken,
}

/// A running server.
pub(crate) struct ApiServer {
    /// Where it listens.
    pub(crate) local_addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ApiServer {
    /// Serves on `listener` (already bound to a loopback address) until
    /// `state.shutdown` is cancelled.
    pub(crate) fn start(listener: tokio::net::TcpListener, state: Arc<ApiState>) -> Result<Self> {
        let local_addr = listener.local_addr().map_err(|e| {
            AppError::new(
                ErrorKind::Network,
                format!("the control API socket has no address: {e}"),
            )
            .hint("check the api.address and api.port settings")
        })?;
        if !local_addr.ip().is_loopback() {
            return Err(AppError::internal(format!(
                "refusing to serve the control API on non-loopback {local_addr}"
            )));
        }
        let shutdown = state.shutdown.clone();
        let app = router(state);
        let task = tokio::spawn(
            async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await })
                    .await
            }
            .instrument(tracing::info_span!("control-api", %local_addr)),
        );
        Ok(Self { local_addr, task })
    }

    /// Waits (bounded) for the server to finish after shutdown.
    pub(crate) async fn join(self) {
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "control API stopped with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "control API task failed"),
            Err(_) => tracing::warn!("control API did not stop within 5 s"),
        }
    }
}

fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(&format!("{API_PREFIX}/check"), get(check))
        .route(&format!("{API_PREFIX}/rpc"), post(rpc))
        .route(&format!("{API_PREFIX}/events"), get(events))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), authenticate))
        .with_state(state)
}

/// Refuses every request that does not carry the token.
async fn authenticate(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if state.token.matches(token) => next.run(request).await,
        presented => {
            tracing::debug!(
                path = %request.uri().path(),
                token_present = presented.is_some(),
                "refused a control API request"
            );
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(serde_json::json!({
                    "error": "missing or wrong token",
                    "hint": "send `Authorization: Bearer <token>` with the token from api.token in the node's data directory",
                })),
            )
                .into_response()
        }
    }
}

async fn check() -> Response {
    axum::Json(serde_json::json!({"status": "ok", "pid": std::process::id()})).into_response()
}

async fn rpc(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: RpcRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return rpc_reply(
                serde_json::Value::Null,
                Err(protocol_error(-32700, format!("parse error: {e}"))),
            );
        }
    };
    if request.jsonrpc != "2.0" {
        return rpc_reply(
            request.id,
            Err(protocol_error(-32600, "jsonrpc must be \"2.0\"".to_owned())),
        );
    }
    let span = tracing::debug_span!("rpc", method = %request.method);
    let result = dispatch(&state, &request.method, request.params).instrument(span).await;
    rpc_reply(request.id, result)
}

fn protocol_error(code: i64, message: String) -> RpcError {
    RpcError {
        code,
        message,
        data: None,
    }
}

fn rpc_reply(id: serde_json::Value, result: std::result::Result<serde_json::Value, RpcError>) -> Response {
    let (result, error) = match result {
        Ok(value) => (Some(value), None),
        Err(error) => (None, Some(error)),
    };
    axum::Json(RpcResponse {
        jsonrpc: "2.0".to_owned(),
        id,
        result,
        error,
    })
    .into_response()
}

fn to_json<T: serde::Serialize>(value: Result<T>) -> std::result::Result<serde_json::Value, RpcError> {
    value
        .and_then(|v| serde_json::to_value(v).map_err(|e| AppError::internal(e.to_string())))
        .map_err(RpcError::from)
}

async fn dispatch(
    state: &Arc<ApiState>,
    method: &str,
    params: serde_json::Value,
) -> std::result::Result<serde_json::Value, RpcError> {
    match method {
        "id" => to_json(ops::id_info(&state.local, &state.config, &state.libp2p)),
        "config" => to_json(Ok(&state.config)),
        "verify" => {
            let params: VerifyParams = serde_json::from_value(params)
                .map_err(|e| protocol_error(-32602, format!("invalid params for verify: {e}")))?;
            let state = Arc::clone(state);
            // Safety numbers hash 5200 times per side, and redb does file
            // I/O: keep both off the async workers.
            let report = tokio::task::spawn_blocking(move || {
                ops::verify(&state.store, &state.store_path, &state.local, &params, ops::now_ms())
            })
            .await
            .map_err(|e| AppError::internal(format!("verify task failed: {e}")));
            to_json(report.and_then(|r| r))
        }
        "keys" => {
            let state = Arc::clone(state);
            let info =
                tokio::task::spawn_blocking(move || ops::keys(&state.store, &state.store_path, ops::now_ms() / 1000))
                    .await
                    .map_err(|e| AppError::internal(format!("keys task failed: {e}")));
            to_json(info.and_then(|i| i))
        }
        "connect" | "send" | "inbox" | "peers" | "group" | "devices" | "invite" | "accept" | "reset" | "introduce" => {
            let call: SessionCall = serde_json::from_value(serde_json::json!({"method": method, "params": params}))
                .map_err(|e| protocol_error(-32602, format!("invalid params for {method}: {e}")))?;
            state.sessions.call(call).await.map_err(RpcError::from)
        }
        other => Err(protocol_error(-32601, format!("unknown method {other:?}"))),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<u64>,
}

async fn events(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = std::result::Result<Event, Infallible>>> {
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(query.since);
    let (replay, live) = state.events.subscribe(last_id);
    let stream = event_stream(replay, live, state.shutdown.clone());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The replayed events, then live ones, until shutdown or until the client
/// lags (it then reconnects with `Last-Event-ID` and replays the rest).
fn event_stream(
    replay: Vec<Arc<NodeEvent>>,
    live: broadcast::Receiver<Arc<NodeEvent>>,
    shutdown: CancellationToken,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    let replay = replay.into_iter();
    futures::stream::unfold(
        (replay, live, shutdown),
        |(mut replay, mut live, shutdown)| async move {
            let event = match replay.next() {
                Some(event) => event,
                // Biased: events already published (`stopping`) go out
                // before the stream ends on shutdown.
                None => tokio::select! {
                    biased;
                    received = live.recv() => match received {
                        Ok(event) => event,
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::debug!(missed, "event subscriber lagged; closing its stream");
                            return None;
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    () = shutdown.cancelled() => return None,
                },
            };
            Some((Ok(sse_event(&event)), (replay, live, shutdown)))
        },
    )
}

fn sse_event(event: &NodeEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.clone())
        .data(event.data.to_string())
}
