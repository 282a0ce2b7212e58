//! Node events for the control API's Server-Sent-Events stream.
//!
//! Every event gets the next id. The bus keeps the last
//! [`EventBus::history`] events so a client that reconnects with
//! `Last-Event-ID` misses nothing that is still kept (signal-cli's
//! convention), and hands new ones to live subscribers over a bounded
//! broadcast channel; a subscriber that falls behind it is cut off and
//! resumes from the history.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::broadcast;

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct NodeEvent {
    /// Increasing from 1; the SSE `id`.
    pub(crate) id: u64,
    /// The SSE `event` name, e.g. `started`.
    pub(crate) kind: String,
    /// The SSE `data`, JSON.
    pub(crate) data: serde_json::Value,
}

struct History {
    next_id: u64,
    events: VecDeque<Arc<NodeEvent>>,
}

/// Publishes events to any number of subscribers, with bounded replay.
pub(crate) struct EventBus {
    history: Mutex<History>,
    capacity: usize,
    live: broadcast::Sender<Arc<NodeEvent>>,
}

impl EventBus {
    /// Keeps `history` events for replay; a live subscriber may fall
    /// `lag` events behind before it is cut off.
    pub(crate) fn new(history: usize, lag: usize) -> Self {
        let (live, _) = broadcast::channel(lag.max(1));
        Self {
            history: Mutex::new(History {
                next_id: 1,
                events: VecDeque::with_capacity(history.min(1024)),
            }),
            capacity: history.max(1),
            live,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        // The history is a plain queue: a panicking holder leaves it usable.
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes an event; returns its id.
    pub(crate) fn publish(&self, kind: &str, data: serde_json::Value) -> u64 {
        let mut history = self.lock();
        let id = history.next_id;
        history.next_id += 1;
        let event = Arc::new(NodeEvent {
            id,
            kind: kind.to_owned(),
            data,
        });
        if history.events.len() >= self.capacity {
            history.events.pop_front();
        }
        history.events.push_back(Arc::clone(&event));
        // Sent under the lock so that a subscriber's replay and its live
        // stream neither overlap nor leave a gap. No subscriber is fine.
        let _ = self.live.send(event);
        id
    }

    /// The id of the newest event, 0 before the first.
    pub(crate) fn last_id(&self) -> u64 {
        self.lock().next_id - 1
    }

    /// The kept events after `after` (all kept events for `Some(0)`, none
    /// for `None`), and a receiver for every later one.
    pub(crate) fn subscribe(&self, after: Option<u64>) -> (Vec<Arc<NodeEvent>>, broadcast::Receiver<Arc<NodeEvent>>) {
        let history = self.lock();
        let replay = match after {
            Some(after) => history.events.iter().filter(|e| e.id > after).cloned().collect(),
            None => Vec::new(),
        };
        (replay, self.live.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn replay_then_live_without_gap_or_overlap() {
        let bus = EventBus::new(3, 8);
        for i in 0..5 {
            bus.publish("tick", json!(i));
        }
        // Only the last three are kept.
        let (replay, mut live) = bus.subscribe(Some(0));
        assert_eq!(replay.iter().map(|e| e.id).collect::<Vec<_>>(), vec![3, 4, 5]);
        let (replay, _) = bus.subscribe(Some(4));
        assert_eq!(replay.iter().map(|e| e.id).collect::<Vec<_>>(), vec![5]);
        let (replay, _) = bus.subscribe(None);
        assert!(replay.is_empty());
        bus.publish("tick", json!(5));
        assert_eq!(live.try_recv().unwrap().id, 6);
        assert!(live.try_recv().is_err());
    }

    #[test]
    fn a_slow_subscriber_is_told_it_lagged() {
        let bus = EventBus::new(100, 2);
        let (_, mut live) = bus.subscribe(None);
        for i in 0..5 {
            bus.publish("tick", json!(i));
        }
        assert!(matches!(
            live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(3))
        ));
    }
}
