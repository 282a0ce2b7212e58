//! The CLI's client of a running daemon's control API.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::{API_PREFIX, ApiFile, RpcRequest, RpcResponse, Token};
use crate::error::{AppError, ErrorKind, Result};
use crate::paths::DataDir;

/// How long one request may take; `verify` hashes for a few milliseconds,
/// everything else is faster, so this only catches a hung daemon.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to the daemon of one data directory.
pub(crate) struct ControlClient {
    address: SocketAddr,
    token: Token,
    pid: u32,
}

impl ControlClient {
    /// The daemon of `dir`, if one is running: `api.json` exists, names a
    /// loopback address, and the API answers there with our token. A file
    /// left by a daemon that was killed (nothing listens) counts as none.
    pub(crate) async fn discover(dir: &DataDir) -> Result<Option<Self>> {
        let api_path = dir.api_file();
        let text = match std::fs::read_to_string(&api_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(crate::paths::io_error("read", &api_path, &e)),
        };
        let api: ApiFile = serde_json::from_str(&text).map_err(|e| {
            AppError::new(ErrorKind::Storage, format!("{} is not valid: {e}", api_path.display()))
                .hint("if no `strata run` is running on this data directory, delete the file")
        })?;
        if !api.address.ip().is_loopback() {
            // Never send the token anywhere but this machine.
            return Err(AppError::new(
                ErrorKind::Unauthorized,
                format!("{} names a non-loopback address {}", api_path.display(), api.address),
            )
            .hint("the control API is loopback only; delete the file and restart `strata run`"));
        }
        let token_path = dir.token_file();
        let token = match std::fs::read_to_string(&token_path) {
            Ok(text) => Token::from_file_contents(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %api_path.display(), "api.json without api.token: no daemon");
                return Ok(None);
            }
            Err(e) => return Err(crate::paths::io_error("read", &token_path, &e)),
        };
        let client = Self {
            address: api.address,
            token,
            pid: api.pid,
        };
        match client.request(Method::GET, &format!("{API_PREFIX}/check"), None).await {
            Ok((StatusCode::OK, _)) => Ok(Some(client)),
            Ok((StatusCode::UNAUTHORIZED, _)) => Err(AppError::new(
                ErrorKind::Unauthorized,
                format!(
                    "the daemon at {} (pid {}) refused the token in {}",
                    api.address,
                    api.pid,
                    token_path.display()
                ),
            )
            .hint(format!(
                "another program may have taken the port: if no `strata run` uses this data directory, \
                 delete {}",
                api_path.display()
            ))),
            Ok((status, _)) => Err(AppError::new(
                ErrorKind::NoDaemon,
                format!("the daemon at {} answered {status} to a health check", api.address),
            )
            .hint("restart `strata run`")),
            Err(e) if e.kind == ErrorKind::NoDaemon => {
                tracing::debug!(address = %api.address, "stale api.json: nothing listens");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The daemon's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Calls `method` and decodes its result.
    pub(crate) async fn call<T: DeserializeOwned>(&self, method: &str, params: serde_json::Value) -> Result<T> {
        let request = RpcRequest {
            jsonrpc: "2.0".to_owned(),
            id: serde_json::json!(1),
            method: method.to_owned(),
            params,
        };
        let body = serde_json::to_vec(&request).map_err(|e| AppError::internal(e.to_string()))?;
        let (status, body) = self
            .request(Method::POST, &format!("{API_PREFIX}/rpc"), Some(body))
            .await?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(AppError::new(ErrorKind::Unauthorized, "the daemon refused the token")
                .hint("restart `strata run` for this data directory"));
        }
        let response: RpcResponse = serde_json::from_slice(&body).map_err(|e| {
            AppError::internal(format!(
                "the daemon's answer to {method} is not JSON-RPC ({status}): {e}"
            ))
        })?;
        match (response.result, response.error) {
            (_, Some(error)) => Err(error.into()),
            (Some(result), None) => serde_json::from_value(result)
                .map_err(|e| AppError::internal(format!("the daemon's answer to {method} is malformed: {e}"))),
            (None, None) => Err(AppError::internal(format!(
                "the daemon's answer to {method} has neither result nor error"
            ))),
        }
    }

    /// Follows the daemon's event stream: live events only, or from after
    /// event `since`. The subscription is in place when this returns.
    /// Events go to the returned channel until the daemon stops or the
    /// receiver is dropped.
    pub(crate) async fn events(
        &self,
        since: Option<u64>,
    ) -> Result<tokio::sync::mpsc::Receiver<super::events::NodeEvent>> {
        let unreachable = |e: &dyn std::fmt::Display| {
            AppError::new(
                ErrorKind::NoDaemon,
                format!("cannot follow the daemon's events at {}: {e}", self.address),
            )
            .hint("check that `strata run` is still running")
        };
        let path = match since {
            Some(since) => format!("{API_PREFIX}/events?since={since}"),
            None => format!("{API_PREFIX}/events"),
        };
        let (response, driver) = self.open(Method::GET, &path, None, &unreachable).await?;
        if response.status() != StatusCode::OK {
            driver.abort();
            return Err(unreachable(&format!("status {}", response.status())));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let mut body = response.into_body();
        tokio::spawn(async move {
            let mut parser = SseParser::default();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else { continue };
                for event in parser.push(&data) {
                    if tx.send(event).await.is_err() {
                        driver.abort();
                        return;
                    }
                }
            }
            driver.abort();
        });
        Ok(rx)
    }

    /// One request on a fresh connection: the response, its body still to
    /// be read, and the task driving the connection.
    async fn open(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        unreachable: &dyn Fn(&dyn std::fmt::Display) -> AppError,
    ) -> Result<(
        hyper::Response<hyper::body::Incoming>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    )> {
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        let driver = tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.address.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token.expose()));
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| AppError::internal(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| unreachable(&e))?;
        Ok((response, driver))
    }

    async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(StatusCode, Bytes)> {
        let unreachable = |e: &dyn std::fmt::Display| {
            AppError::new(
                ErrorKind::NoDaemon,
                format!("cannot reach the daemon's control API at {}: {e}", self.address),
            )
            .hint("start it with `strata run`")
        };
        let exchange = async {
            let (response, driver) = self.open(method, path, body, &unreachable).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(&e))?
                .to_bytes();
            driver.abort();
            Ok((status, bytes))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| {
            AppError::new(
                ErrorKind::NoDaemon,
                format!(
                    "the daemon at {} did not answer within {REQUEST_TIMEOUT:?}",
                    self.address
                ),
            )
            .hint("check that `strata run` is healthy (RUST_LOG=debug), or restart it")
        })?
    }
}

/// Splits a Server-Sent-Events byte stream into events (only the fields
/// our server writes: `id`, `event`, `data`).
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    id: u64,
    kind: String,
    data: String,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<super::events::NodeEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.kind.is_empty() {
                    out.push(super::events::NodeEvent {
                        id: self.id,
                        kind: std::mem::take(&mut self.kind),
                        data: serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null),
                    });
                }
                self.data.clear();
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.id = value.parse().unwrap_or(self.id),
                "event" => value.clone_into(&mut self.kind),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                _ => {} // comments (keep-alives) and unknown fields
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_across_arbitrary_chunks() {
        let stream =
            b"id: 7\nevent: message\ndata: {\"text\":\"hi\"}\n\n: keep-alive\n\nid: 8\nevent: delivered\ndata: {}\n\n";
        for cut in 0..stream.len() {
            let mut parser = SseParser::default();
            let mut events = parser.push(&stream[..cut]);
            events.extend(parser.push(&stream[cut..]));
            assert_eq!(events.len(), 2, "cut at {cut}");
            assert_eq!((events[0].id, events[0].kind.as_str()), (7, "message"));
            assert_eq!(events[0].data["text"], "hi");
            assert_eq!((events[1].id, events[1].kind.as_str()), (8, "delivered"));
        }
    }
}
