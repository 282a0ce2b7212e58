//! A standalone PeerJS-compatible broker: what `strata broker` wraps.
//!
//! ```text
//! cargo run --release -p strata-transport-peerjs --example broker -- 127.0.0.1:9000
//! ```
//!
//! Unmodified `peerjs` clients connect with `{host, port, path: '/', key: 'peerjs'}`.
#![allow(clippy::print_stderr)]

use std::net::SocketAddr;

use strata_transport_peerjs::{Broker, BrokerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_owned())
        .parse()?;
    let broker = Broker::bind(addr, BrokerConfig::default()).await?;
    eprintln!(
        "PeerJS broker on ws://{}/peerjs (key \"peerjs\"); Ctrl-C stops it",
        broker.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    broker.shutdown().await;
    Ok(())
}
