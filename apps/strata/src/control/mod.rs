//! The control API: how the CLI (and later a web UI) talks to a running
//! `strata run`.
//!
//! It listens on a loopback address only, and every request must carry
//! `Authorization: Bearer <token>`, where the token is 32 random bytes in
//! hex that the daemon writes to `api.token` (mode 0600) in the data
//! directory at start; `api.json` next to it says where it listens. Both
//! files are removed when the daemon stops.
//!
//! | endpoint | |
//! |---|---|
//! | `GET /api/v1/check` | 200 `{"status":"ok","pid":…}` while the node runs |
//! | `POST /api/v1/rpc` | JSON-RPC 2.0; methods are the CLI's commands: `id`, `verify` (`{"peer","markVerified"?}`), `config`, `connect`, `send`, `inbox`, `peers`, `keys` |
//! | `GET /api/v1/events` | Server-Sent Events: `id`, `event` (kind) and JSON `data`; `Last-Event-ID` (or `?since=`) replays the kept events after that id |
//!
//! A failed call answers with a JSON-RPC error whose `data` holds the
//! error kind, its CLI exit code and a hint (see [`RpcError`]). Requests
//! without the token, or with a wrong one, get 401 and nothing else.

pub(crate) mod client;
pub(crate) mod events;
pub(crate) mod server;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::error::{AppError, ErrorKind};

/// The API's path prefix.
pub(crate) const API_PREFIX: &str = "/api/v1";

/// JSON-RPC 2.0 error code for application errors; the kind is in `data`.
const APP_ERROR_CODE: i64 = -32000;

/// What `api.json` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApiFile {
    /// `http://<address>`.
    pub(crate) url: String,
    /// The socket address.
    pub(crate) address: SocketAddr,
    /// The daemon's process id.
    pub(crate) pid: u32,
}

/// A JSON-RPC 2.0 request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RpcRequest {
    /// `"2.0"`.
    pub(crate) jsonrpc: String,
    /// Echoed in the response.
    #[serde(default)]
    pub(crate) id: serde_json::Value,
    /// The method: a CLI command name.
    pub(crate) method: String,
    /// Its parameters.
    #[serde(default)]
    pub(crate) params: serde_json::Value,
}

/// A JSON-RPC 2.0 response: `result` or `error`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RpcResponse {
    /// `"2.0"`.
    pub(crate) jsonrpc: String,
    /// The request's id.
    pub(crate) id: serde_json::Value,
    /// The result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<serde_json::Value>,
    /// The error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<RpcError>,
}

/// A JSON-RPC 2.0 error object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RpcError {
    /// -32700 parse error, -32600 invalid request, -32601 unknown method,
    /// -32602 invalid params, -32000 an application error.
    pub(crate) code: i64,
    /// What happened.
    pub(crate) message: String,
    /// For application errors: kind, exit code, hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<RpcErrorData>,
}

/// The application part of an [`RpcError`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RpcErrorData {
    /// The error kind.
    pub(crate) kind: ErrorKind,
    /// The CLI's exit code for it.
    pub(crate) exit_code: u8,
    /// What to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hint: Option<String>,
}

impl From<AppError> for RpcError {
    fn from(error: AppError) -> Self {
        Self {
            code: APP_ERROR_CODE,
            message: error.message,
            data: Some(RpcErrorData {
                kind: error.kind,
                exit_code: error.kind.exit_code(),
                hint: error.hint,
            }),
        }
    }
}

impl From<RpcError> for AppError {
    fn from(error: RpcError) -> Self {
        match error.data {
            Some(data) => Self {
                kind: data.kind,
                message: error.message,
                hint: data.hint,
            },
            None => AppError::internal(format!(
                "the daemon refused the call ({}): {}",
                error.code, error.message
            )),
        }
    }
}

/// The bearer token of one daemon run.
#[derive(Clone)]
pub(crate) struct Token(String);

impl Token {
    /// 32 fresh random bytes, hex.
    pub(crate) fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(hex::encode(bytes))
    }

    /// A token read back from `api.token`.
    pub(crate) fn from_file_contents(text: &str) -> Self {
        Self(text.trim().to_owned())
    }

    /// The text, to write to the token file or a header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in constant time for tokens of
    /// the right length (the length is public).
    pub(crate) fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.len() == presented.len() && bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_compare_exactly() {
        let a = Token::generate();
        let b = Token::generate();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!a.matches(b.expose()));
        assert!(a.matches(a.expose()));
        assert!(!a.matches(&a.expose()[..63]));
        assert!(!a.matches(""));
        assert!(Token::from_file_contents(&format!("{}\n", a.expose())).matches(a.expose()));
        assert_eq!(format!("{a:?}"), "Token([redacted])");
    }

    #[test]
    fn app_errors_cross_the_api_intact() {
        let error = AppError::new(ErrorKind::NotAvailable, "`strata send` is not available").hint("enable a transport");
        let rpc = RpcError::from(error.clone());
        assert_eq!(rpc.code, APP_ERROR_CODE);
        let json = serde_json::to_string(&rpc).unwrap();
        assert!(json.contains("\"kind\":\"not-available\""), "{json}");
        assert!(json.contains("\"exitCode\":14"), "{json}");
        let back: RpcError = serde_json::from_str(&json).unwrap();
        assert_eq!(AppError::from(back), error);
    }
}
