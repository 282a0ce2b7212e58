//! `wss://` signaling: the embedded broker over TLS, and a client that
//! verifies the broker's certificate (and refuses one it cannot verify).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use strata_transport::Transport;
use strata_transport::conformance::{connect_pair, recv_frame};
use strata_transport_peerjs::signaling::SignalingError;
use strata_transport_peerjs::{Broker, BrokerConfig, PeerJsConfig, PeerJsTransport, StartError, TlsRoots};

/// A broker on `wss://localhost:<port>` with a fresh self-signed certificate.
async fn tls_broker() -> (Broker, CertificateDer<'static>) {
    strata_transport_peerjs::install_crypto_provider();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let broker = Broker::bind_tls(addr, BrokerConfig::default(), Arc::new(tls))
        .await
        .unwrap();
    (broker, cert)
}

fn wss_config(id: &str, port: u16, roots: TlsRoots) -> PeerJsConfig {
    let mut config = common::node_config(id, port);
    config.signaling.host = "localhost".to_owned();
    config.signaling.secure = true;
    config.signaling.tls_roots = roots;
    config
}

#[tokio::test]
async fn nodes_signal_over_verified_wss() {
    common::init_tracing();
    let (broker, cert) = tls_broker().await;
    let port = broker.local_addr().port();
    let roots = TlsRoots::Custom(vec![cert]);
    let (a, mut a_events) = PeerJsTransport::start(wss_config("wss-a", port, roots.clone()))
        .await
        .unwrap();
    let (b, mut b_events) = PeerJsTransport::start(wss_config("wss-b", port, roots)).await.unwrap();
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;
    a.send(&b.local_addr(), Bytes::from_static(b"over wss")).await.unwrap();
    assert_eq!(recv_frame(&mut b_events, &a.local_addr()).await, "over wss");
    broker.shutdown().await;
}

#[tokio::test]
async fn an_unverifiable_broker_is_refused() {
    common::init_tracing();
    let (broker, _cert) = tls_broker().await;
    let port = broker.local_addr().port();
    // The public roots do not vouch for a self-signed certificate.
    match PeerJsTransport::start(wss_config("wss-c", port, TlsRoots::WebPki)).await {
        Err(StartError::Signaling(SignalingError::Connect(reason))) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}");
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }
    // Nor does an unrelated private root.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let roots = TlsRoots::Custom(vec![other.cert.der().clone()]);
    match PeerJsTransport::start(wss_config("wss-d", port, roots)).await {
        Err(StartError::Signaling(SignalingError::Connect(_))) => {}
        other => panic!("expected a certificate error, got {other:?}"),
    }
    broker.shutdown().await;
}
