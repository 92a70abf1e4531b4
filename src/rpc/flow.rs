//! Flow control of one process's RPC connection: what the host holds for a guest's calls and
//! replies is bounded, and the host stops *reading* a connection (backpressure) instead of
//! holding more.
//!
//! Two things a guest can make the host hold through capnp-rpc itself, below every server:
//!
//! - **Call messages.** A call's params are its whole incoming message (up to
//!   `max-message-size`, padding included), held until the call returns; a guest that sends
//!   many slow calls (`Process.wait`, `ByteStream.read`) with padded messages would park
//!   `max-outstanding-calls × max-message-size` in the host. Every incoming message is charged
//!   at its framed size (recorded by [`super::framing`] from the segment table) for as long as
//!   capnp-rpc keeps it; while more than [`HELD_MAX`] is charged, the next message is not read.
//! - **Replies.** capnp-rpc queues outgoing messages without bound when the guest's stdin is
//!   full. Every message sent is counted at its serialized size and every byte the host writes
//!   to the guest's stdin is subtracted; while more than [`UNSENT_MAX`] waits, the next
//!   message is not read (a call read now would only add a reply to the queue).
//!
//! Servers whose replies are large (reads of up to 64 KiB) wait for the same room before they
//! read ([`super::CallGate::reply_room`]), so replies of calls already in progress stay bounded
//! too. So per process the host holds at most `HELD_MAX + max-message-size` of call messages
//! and about `UNSENT_MAX + max-message-size` of replies, plus one read's reply per stream being
//! read at that moment.
//! A guest that reads its replies and whose calls return never notices.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use capnp::capability::Promise;
use capnp::Error;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{Connection, IncomingMessage, OutgoingMessage, VatNetwork};

/// Bytes of call messages one connection may hold before the host stops reading it.
pub(crate) const HELD_MAX: usize = 8 << 20;
/// Bytes of replies waiting for the guest's stdin before the host stops reading its calls.
pub(crate) const UNSENT_MAX: u64 = 1 << 20;

/// The shared accounting of one connection.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Framed sizes of messages read off the wire and not yet handed to capnp-rpc, in order.
    framed: RefCell<VecDeque<usize>>,
    /// Bytes of incoming messages capnp-rpc still holds.
    held: Cell<usize>,
    /// Bytes of outgoing messages handed to the writer so far.
    queued: Cell<u64>,
    /// Bytes the writer has written to the guest so far.
    written: Cell<u64>,
    /// Everyone waiting for room: the receive loop, and reads about to make a large reply.
    room: tokio::sync::Notify,
}

impl Flow {
    /// Records the framed size of the next message on the wire (by [`super::framing`]).
    pub(crate) fn framed(&self, bytes: usize) {
        self.framed.borrow_mut().push_back(bytes);
    }

    fn has_room(&self) -> bool {
        self.held.get() <= HELD_MAX
            && self.queued.get().saturating_sub(self.written.get()) <= UNSENT_MAX
    }

    fn wake(&self) {
        if self.has_room() {
            self.room.notify_waiters();
        }
    }

    /// Resolves once held call messages and unsent replies are within their bounds.
    pub(crate) async fn room(&self) {
        // The common case costs one comparison: no waiter is registered when there is room.
        if self.has_room() {
            return;
        }
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a wake between the two is not lost.
            notified.as_mut().enable();
            if self.has_room() {
                return;
            }
            notified.await;
        }
    }
}

/// The two-party network of one connection with [`Flow`] accounting around it.
pub(crate) struct FlowNetwork<N> {
    inner: N,
    flow: Rc<Flow>,
}

impl<N> FlowNetwork<N> {
    pub(crate) fn new(inner: N, flow: Rc<Flow>) -> Self {
        FlowNetwork { inner, flow }
    }
}

impl<N: VatNetwork<Side>> VatNetwork<Side> for FlowNetwork<N> {
    fn connect(&mut self, host_id: Side) -> Option<Box<dyn Connection<Side>>> {
        let flow = self.flow.clone();
        self.inner
            .connect(host_id)
            .map(|inner| Box::new(FlowConnection { inner, flow }) as Box<dyn Connection<Side>>)
    }

    fn accept(&mut self) -> Promise<Box<dyn Connection<Side>>, Error> {
        let flow = self.flow.clone();
        let accepted = self.inner.accept();
        Promise::from_future(async move {
            let inner = accepted.await?;
            Ok(Box::new(FlowConnection { inner, flow }) as Box<dyn Connection<Side>>)
        })
    }

    fn drive_until_shutdown(&mut self) -> Promise<(), Error> {
        self.inner.drive_until_shutdown()
    }
}

struct FlowConnection {
    inner: Box<dyn Connection<Side>>,
    flow: Rc<Flow>,
}

impl Connection<Side> for FlowConnection {
    fn get_peer_vat_id(&self) -> Side {
        self.inner.get_peer_vat_id()
    }

    fn new_outgoing_message(&mut self, first_segment_word_size: u32) -> Box<dyn OutgoingMessage> {
        Box::new(Outgoing {
            inner: self.inner.new_outgoing_message(first_segment_word_size),
            flow: self.flow.clone(),
        })
    }

    fn receive_incoming_message(&mut self) -> Promise<Option<Box<dyn IncomingMessage>>, Error> {
        let flow = self.flow.clone();
        let received = self.inner.receive_incoming_message();
        Promise::from_future(async move {
            flow.room().await;
            let Some(message) = received.await? else {
                return Ok(None);
            };
            let bytes = flow.framed.borrow_mut().pop_front().unwrap_or(0);
            flow.held.set(flow.held.get() + bytes);
            Ok(Some(Box::new(Held {
                inner: message,
                bytes,
                flow,
            }) as Box<dyn IncomingMessage>))
        })
    }

    fn new_stream(&mut self) -> (Box<dyn capnp_rpc::FlowController>, Promise<(), Error>) {
        self.inner.new_stream()
    }

    fn shutdown(&mut self, result: capnp::Result<()>) -> Promise<(), Error> {
        self.inner.shutdown(result)
    }
}

/// An incoming message, charged to its connection until capnp-rpc drops it.
struct Held {
    inner: Box<dyn IncomingMessage>,
    bytes: usize,
    flow: Rc<Flow>,
}

impl IncomingMessage for Held {
    fn get_body(&self) -> capnp::Result<capnp::any_pointer::Reader<'_>> {
        self.inner.get_body()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.flow
            .held
            .set(self.flow.held.get().saturating_sub(self.bytes));
        self.flow.wake();
    }
}

/// An outgoing message, counted at its serialized size when it is sent.
struct Outgoing {
    inner: Box<dyn OutgoingMessage>,
    flow: Rc<Flow>,
}

impl OutgoingMessage for Outgoing {
    fn get_body(&mut self) -> capnp::Result<capnp::any_pointer::Builder<'_>> {
        self.inner.get_body()
    }

    fn get_body_as_reader(&self) -> capnp::Result<capnp::any_pointer::Reader<'_>> {
        self.inner.get_body_as_reader()
    }

    fn send(
        self: Box<Self>,
    ) -> (
        Promise<(), Error>,
        Rc<capnp::message::Builder<capnp::message::HeapAllocator>>,
    ) {
        let (sent, message) = self.inner.send();
        let bytes = capnp::serialize::compute_serialized_size_in_words(&*message) * 8;
        self.flow.queued.set(self.flow.queued.get() + bytes as u64);
        (sent, message)
    }

    fn take(self: Box<Self>) -> capnp::message::Builder<capnp::message::HeapAllocator> {
        self.inner.take()
    }

    fn size_in_words(&self) -> usize {
        self.inner.size_in_words()
    }
}

/// The writer to the guest's stdin, counting what it writes against the queued replies.
pub(crate) struct CountingWriter<W> {
    inner: W,
    flow: Rc<Flow>,
}

impl<W> CountingWriter<W> {
    pub(crate) fn new(inner: W, flow: Rc<Flow>) -> Self {
        CountingWriter { inner, flow }
    }
}

impl<W: futures::io::AsyncWrite + Unpin> futures::io::AsyncWrite for CountingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = result {
            this.flow.written.set(this.flow.written.get() + n as u64);
            this.flow.wake();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every waiter wakes once the guest has taken enough of its replies: the receive loop and
    /// any number of readers wait on the same room.
    #[tokio::test]
    async fn all_waiters_wake_when_replies_drain() {
        let flow = Rc::new(Flow::default());
        flow.queued.set(UNSENT_MAX + 10);
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let waiters: Vec<_> = (0..3)
                    .map(|_| {
                        let flow = flow.clone();
                        tokio::task::spawn_local(async move { flow.room().await })
                    })
                    .collect();
                tokio::task::yield_now().await;
                assert!(waiters.iter().all(|w| !w.is_finished()));
                flow.written.set(10);
                flow.wake();
                for w in waiters {
                    w.await.unwrap();
                }
            })
            .await;
    }

    #[test]
    fn held_messages_count_until_dropped() {
        let flow = Rc::new(Flow::default());
        flow.held.set(HELD_MAX + 1);
        assert!(!flow.has_room());
        flow.held.set(HELD_MAX);
        assert!(flow.has_room());
    }
}
