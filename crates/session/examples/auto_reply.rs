//! A custom actor plugged into a [`Node`]: it subscribes to the node's
//! events and answers every text message with an echo.
//!
//! Run it with `cargo run -p strata-session --example auto_reply`: two nodes
//! on an in-memory network, Bob runs the bot, Alice says hello.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::actors::{
    Connect, Node, NodeEvent, NodeEventKind, PeerRequest, SessionRequest, SessionSetup, Subscribe,
};
use strata_session::{Command, Config, Content, Event};
use strata_store::{KeySource, MemoryBackend, Store};
use strata_transport::memory::{MemoryNetwork, MemoryTransport};
use strata_transport::{EventStream, PeerAddr};
use tokio::sync::mpsc;

/// Answers `text` with `echo: text`.
pub struct AutoReply {
    node: Addr<Node<MemoryTransport>>,
    next_request: u64,
}

impl Actor for AutoReply {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl Handler<NodeEvent> for AutoReply {
    type Result = ();

    fn handle(&mut self, event: NodeEvent, ctx: &mut Self::Context) {
        let NodeEventKind::Session(Event::Received {
            content: Content::Text { text },
            ..
        }) = event.kind
        else {
            return;
        };
        if text.starts_with("echo: ") {
            return;
        }
        self.next_request += 1;
        let reply = self.node.send(PeerRequest {
            request_id: self.next_request,
            peer: event.peer,
            request: SessionRequest::Command(Command::Send(Content::Text {
                text: format!("echo: {text}"),
            })),
        });
        ctx.spawn(
            async move {
                if let Ok(Reply { result: Err(e), .. }) = reply.await {
                    tracing::warn!(error = %e, "auto-reply not sent");
                }
            }
            .into_actor(self),
        );
    }
}

use strata_session::actors::Reply;

/// Forwards a node's events into a bounded channel.
struct Tap(mpsc::Sender<NodeEvent>);

impl Actor for Tap {
    type Context = Context<Self>;
}

impl Handler<NodeEvent> for Tap {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, event: NodeEvent, _ctx: &mut Self::Context) -> Self::Result {
        let tx = self.0.clone();
        Box::pin(async move {
            let _ = tx.send(event).await;
        })
    }
}

fn node(seed: u64, transport: MemoryTransport, stream: EventStream) -> Addr<Node<MemoryTransport>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let identity = InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap();
    let store = Store::open(MemoryBackend::new(), KeySource::Key(StorageKey::generate(&mut rng))).unwrap();
    let setup = SessionSetup {
        config: Config::default(),
        local: Arc::new(identity),
        store: Arc::new(store),
        downloads: std::env::temp_dir().join(format!("strata-example-{seed}")),
    };
    Node::new(setup, transport, stream).unwrap().start()
}

/// Alice greets Bob, whose bot answers; returns what Alice received.
async fn demo() -> String {
    let net = MemoryNetwork::new(42);
    let (ta, sa) = net.join("alice").unwrap();
    let (tb, sb) = net.join("bob").unwrap();
    let alice = node(1, ta, sa);
    let bob = node(2, tb, sb);
    let bot = AutoReply {
        node: bob.clone(),
        next_request: 0,
    }
    .start();
    bob.send(Subscribe(bot.recipient())).await.unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    alice.send(Subscribe(Tap(tx).start().recipient())).await.unwrap();

    let bob_addr = PeerAddr::new("bob");
    alice
        .send(Connect {
            request_id: 1,
            peer: bob_addr.clone(),
            expect_identity: None,
        })
        .await
        .unwrap()
        .result
        .unwrap();
    let wait = async {
        let mut greeted = false;
        while let Some(event) = rx.recv().await {
            match event.kind {
                NodeEventKind::Session(Event::EncryptionReady { .. }) if !greeted => {
                    greeted = true;
                    alice
                        .send(PeerRequest {
                            request_id: 2,
                            peer: bob_addr.clone(),
                            request: SessionRequest::Command(Command::Send(Content::Text { text: "hello".into() })),
                        })
                        .await
                        .unwrap()
                        .result
                        .unwrap();
                }
                NodeEventKind::Session(Event::Received {
                    content: Content::Text { text },
                    ..
                }) => return text,
                _ => {}
            }
        }
        String::new()
    };
    tokio::time::timeout(Duration::from_secs(600), wait)
        .await
        .unwrap_or_default()
}

fn main() {
    let reply = actix::System::new().block_on(demo());
    println!("Alice got: {reply}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bot_answers() {
        assert_eq!(strata_test_support::run_paused(super::demo()), "echo: hello");
    }
}
