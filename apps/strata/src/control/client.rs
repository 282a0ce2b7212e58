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

    async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(StatusCode, Bytes)> {
        let unreachable = |e: &dyn std::fmt::Display| {
            AppError::new(
                ErrorKind::NoDaemon,
                format!("cannot reach the daemon's control API at {}: {e}", self.address),
            )
            .hint("start it with `strata run`")
        };
        let exchange = async {
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
