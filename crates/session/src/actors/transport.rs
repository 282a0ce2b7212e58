//! [`TransportActor`]: owns one transport and its event stream.

use super::*;

/// Owns one transport; turns its events into messages to the [`Node`].
pub struct TransportActor<T: Transport> {
    // Boxed: actors must be `Unpin`, transports need not be.
    transport: Box<T>,
    stream: Option<EventStream>,
    node: Recipient<FromTransport>,
    span: tracing::Span,
}

impl<T: Transport> TransportActor<T> {
    /// Wraps `transport` and its event stream; events go to `node`.
    pub fn new(transport: T, stream: EventStream, node: Recipient<FromTransport>) -> Self {
        Self {
            span: tracing::info_span!("transport", local = %transport.local_addr()),
            transport: Box::new(transport),
            stream: Some(stream),
            node,
        }
    }
}

impl<T: Transport> Actor for TransportActor<T> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        if let Some(stream) = self.stream.take() {
            ctx.add_stream(stream.ready_chunks(EVENT_BATCH));
        }
    }
}

impl<T: Transport> StreamHandler<Vec<TransportEvent>> for TransportActor<T> {
    fn handle(&mut self, events: Vec<TransportEvent>, ctx: &mut Self::Context) {
        // Back-pressure: the next events are read once the Node took these.
        let send = self.node.send(FromTransport(events));
        ctx.wait(
            async move {
                let _ = send.await;
            }
            .into_actor(self),
        );
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl<T: Transport> Handler<Transmit> for TransportActor<T> {
    type Result = ResponseFuture<Result<(), TransportError>>;

    fn handle(&mut self, msg: Transmit, _ctx: &mut Self::Context) -> Self::Result {
        let transport = T::clone(&self.transport);
        Box::pin(
            async move {
                for frame in msg.frames {
                    transport.send(&msg.to, frame).await?;
                }
                Ok(())
            }
            .instrument(self.span.clone()),
        )
    }
}

impl<T: Transport> Handler<SubscribeTopic> for TransportActor<T> {
    type Result = ResponseFuture<Result<(), TransportError>>;

    fn handle(&mut self, msg: SubscribeTopic, _ctx: &mut Self::Context) -> Self::Result {
        let transport = T::clone(&self.transport);
        Box::pin(async move { transport.subscribe(&msg.0).await }.instrument(self.span.clone()))
    }
}

impl<T: Transport> Handler<UnsubscribeTopic> for TransportActor<T> {
    type Result = ResponseFuture<Result<(), TransportError>>;

    fn handle(&mut self, msg: UnsubscribeTopic, _ctx: &mut Self::Context) -> Self::Result {
        let transport = T::clone(&self.transport);
        Box::pin(async move { transport.unsubscribe(&msg.0).await }.instrument(self.span.clone()))
    }
}

impl<T: Transport> Handler<Publish> for TransportActor<T> {
    type Result = ResponseFuture<Result<(), TransportError>>;

    fn handle(&mut self, msg: Publish, _ctx: &mut Self::Context) -> Self::Result {
        let transport = T::clone(&self.transport);
        Box::pin(async move { transport.publish(&msg.topic, msg.frame).await }.instrument(self.span.clone()))
    }
}

impl<T: Transport> Handler<Dial> for TransportActor<T> {
    type Result = ResponseFuture<Result<(), TransportError>>;

    fn handle(&mut self, msg: Dial, _ctx: &mut Self::Context) -> Self::Result {
        let transport = T::clone(&self.transport);
        Box::pin(async move { transport.connect(&msg.0).await }.instrument(self.span.clone()))
    }
}

impl<T: Transport> Handler<Shutdown> for TransportActor<T> {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
