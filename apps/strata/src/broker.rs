//! `strata broker`: the standalone PeerJS-compatible broker
//! (`strata_transport_peerjs::Broker`), over `ws://` or, with a certificate,
//! `wss://`, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use serde::Serialize;
use strata_transport_peerjs::{Broker, BrokerConfig};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::BrokerArgs;
use crate::commands::Ctx;
use crate::error::{AppError, ErrorKind, Result};
use crate::output;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listening {
    event: &'static str,
    address: SocketAddr,
    url: String,
    key: String,
}

/// `strata broker`.
pub(crate) async fn run(ctx: &Ctx, args: BrokerArgs) -> Result<()> {
    let config = ctx.config()?;
    let default_addr = config.broker_addr()?;
    let addr = SocketAddr::new(
        args.host.unwrap_or(default_addr.ip()),
        args.port.unwrap_or(default_addr.port()),
    );
    let key = args.key.unwrap_or_else(|| config.peerjs.key.clone());
    if key.is_empty() {
        return Err(AppError::new(ErrorKind::Usage, "the broker key must not be empty").hint("pass --key peerjs"));
    }
    let broker_config = BrokerConfig {
        key: key.clone(),
        path: args.path.clone(),
        allow_discovery: args.allow_discovery || config.broker.allow_discovery,
        ..BrokerConfig::default()
    };
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| AppError::internal(e.to_string()))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| AppError::internal(e.to_string()))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let bound = match tls {
        Some(tls) => Broker::bind_tls(addr, broker_config, tls).await,
        None => Broker::bind(addr, broker_config).await,
    };
    let broker = bound.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("another program uses {addr}; pass --port with a free port, or 0 for any")
        } else {
            "check --host and --port".to_owned()
        };
        AppError::new(ErrorKind::Network, format!("cannot listen on {addr}: {e}")).hint(hint)
    })?;
    let local = broker.local_addr();
    let path = format!("/{}", args.path.trim_matches('/'));
    let path = if path.ends_with('/') { path } else { format!("{path}/") };
    let listening = Listening {
        event: "listening",
        address: local,
        url: format!("{scheme}://{local}{path}"),
        key,
    };
    if ctx.json {
        output::json(&listening)?;
    } else {
        output::line(format!(
            "PeerJS broker listening on {} (key {:?})",
            listening.url, listening.key
        ))?;
        if local.ip().is_loopback() {
            output::note("Only this machine can reach it; pass --host 0.0.0.0 to serve others.");
        }
    }
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
    }
    broker.shutdown().await;
    Ok(())
}

/// The TLS server configuration from PEM files (rustls with `ring`, as the
/// rest of the node).
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let unreadable = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        AppError::new(
            ErrorKind::Usage,
            format!("cannot read the {what} {}: {e}", path.display()),
        )
        .hint("give PEM files: the certificate chain to --tls-cert, its private key to --tls-key")
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| unreadable("certificate", cert, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unreadable("certificate", cert, &e))?;
    if certs.is_empty() {
        return Err(unreadable("certificate", cert, &"no CERTIFICATE block"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable("private key", key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| AppError::internal(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            AppError::new(
                ErrorKind::Usage,
                format!("the TLS certificate and key do not work together: {e}"),
            )
            .hint("check that --tls-key is the private key of the first certificate in --tls-cert")
        })?;
    Ok(Arc::new(config))
}
