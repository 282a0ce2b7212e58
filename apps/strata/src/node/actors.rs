//! The actor thread: actix runs on a thread of its own (its system is
//! single-threaded) with the session [`Node`] and a bridge that turns every
//! node event into a control-API event and hands it, typed, to the daemon's
//! own waits.

use std::sync::Arc;

use actix::prelude::*;
use serde_json::json;
use strata_session::actors::{Node, NodeEvent as SessionNodeEvent, SessionSetup, Subscribe};
use strata_transport::EventStream;
use tokio::sync::{broadcast, oneshot};

use super::Wire;
use super::events::describe;
use crate::control::events::EventBus;
use crate::error::{AppError, ErrorKind, Result};
use crate::json::set;

/// Starts actix on its own thread with the node and the event bridge.
pub(super) async fn spawn_actors(
    setup: SessionSetup,
    wire: Wire,
    stream: EventStream,
    events: Arc<EventBus>,
    observed: broadcast::Sender<Arc<Observed>>,
) -> Result<(Addr<Node<Wire>>, actix::System, std::thread::JoinHandle<()>)> {
    let (tx, rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("strata-actors".to_owned())
        .spawn(move || {
            let system = actix::System::new();
            let handle = actix::System::current();
            system.block_on(async move {
                let started = match Node::new(setup, wire, stream) {
                    Ok(node) => {
                        let node = node.start();
                        let bridge = Bridge { events, observed }.start();
                        let _ = node.send(Subscribe(bridge.recipient())).await;
                        Ok((node, handle))
                    }
                    Err(e) => Err(e),
                };
                let _ = tx.send(started);
            });
            let _ = system.run();
        })
        .map_err(|e| AppError::internal(format!("cannot start the actor thread: {e}")))?;
    match rx.await {
        Ok(Ok((node, system))) => Ok((node, system, thread)),
        Ok(Err(e)) => Err(
            AppError::new(ErrorKind::Storage, format!("cannot restore the sessions: {e}"))
                .hint("the store may be damaged; see `strata run -v`"),
        ),
        Err(_) => Err(AppError::internal("the actor thread stopped during start-up")),
    }
}

/// A node event as the daemon saw it, with the id the control API's event
/// stream gave it: what the daemon's own waits look at, typed.
#[derive(Debug)]
pub(super) struct Observed {
    /// The event's id on the control API's stream.
    pub(super) id: u64,
    /// The event.
    pub(super) event: SessionNodeEvent,
}

/// Forwards node events to the control API's event bus (JSON, for API
/// clients) and, typed, to the daemon's own waits.
struct Bridge {
    events: Arc<EventBus>,
    observed: broadcast::Sender<Arc<Observed>>,
}

impl Actor for Bridge {
    type Context = Context<Self>;
}

impl Handler<SessionNodeEvent> for Bridge {
    type Result = ();

    fn handle(&mut self, event: SessionNodeEvent, _ctx: &mut Self::Context) {
        let (kind, mut data) = describe(&event.kind);
        set(&mut data, "peer", json!(event.peer.as_str()));
        let id = self.events.publish(kind, data);
        // No wait in progress is fine.
        let _ = self.observed.send(Arc::new(Observed { id, event }));
    }
}
