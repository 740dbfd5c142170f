//! The end of one request: who ends its context, and the shutdown tally.

use super::layer::PerConnection;
use crate::Ended;
use ctxkit::{CancelHandle, Context};
use http::{Method, Request, StatusCode, Version};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Owns a request's cancel handle from the call to the last byte of the
/// response. It moves from the response future into the response body;
/// dropped before it is [`complete`](RequestEnd::complete), the connection
/// let go of the request early: the client went away (or the server
/// aborted the connection, whose own cause then wins).
pub(crate) struct RequestEnd {
    /// The request context's handle, and no reference to the context
    /// itself: a context that nobody else holds by the end is then let go
    /// rather than ended, and the request's future is one word smaller
    /// (BENCHMARKS.md: its HTTP/2 task fits a smaller allocation).
    /// Taken out, leaving a handle that cancels nothing, when the request
    /// hands its connection over ([`upgraded`](Self::upgraded)).
    cancel: CancelHandle,
    /// The connection the request came on under [`Server`](crate::Server),
    /// whose shutdown tally counts the requests that end while it shuts
    /// down. The request's future gives its own reference up to this one,
    /// so that no reference count changes for it.
    connection: Option<Arc<PerConnection>>,
    /// The response has been handed over in full: dropping this then ends
    /// the context with `Completed`, not `ClientGone`. Atomic only so that
    /// a body asked by shared reference whether it is over can set it
    /// ([`mark_answered`](Self::mark_answered)) and the body stays `Sync`;
    /// set and read by its owner alone.
    answered: AtomicBool,
    /// What the answer's end is: its body's, or something else.
    kind: RequestKind,
}

/// Requests whose end is not their answer's last byte.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// Ends with its response body.
    Plain,
    /// No body will be sent: the answer completes it (the connection drops
    /// such a body unpolled).
    Head,
    /// An HTTP/1.1 request that asks to switch protocols (hyper put an
    /// `OnUpgrade` in it). Answered `101 Switching Protocols`, it lives on
    /// with the upgraded connection, which outlasts the (empty) body.
    Upgrade,
    /// An HTTP/1.1 `CONNECT`: answered with a 2xx, the connection becomes
    /// the tunnel, as with [`Upgrade`](Self::Upgrade).
    Connect,
    /// An HTTP/2 `CONNECT`, such as a WebSocket over HTTP/2 (RFC 8441's
    /// extended CONNECT): answered with a 2xx, its stream becomes the
    /// tunnel and hyper drops the response body unpolled. The stream's
    /// end is not visible from the connection, which carries others.
    Tunnel,
    /// Handed over, and its context left to its parent and its deadline
    /// (see [`RequestEnd::upgraded`]): its end ends nothing.
    HandedOver,
}

impl RequestKind {
    /// Read before the layer inserts anything: a request from hyper then
    /// has no extensions at all, and the lookup is one branch. Over
    /// HTTP/2 hyper can hand over only a `CONNECT`'s stream, so no other
    /// request looks.
    #[inline]
    pub(crate) fn of<B>(request: &Request<B>) -> RequestKind {
        let method = request.method();
        if method == Method::HEAD {
            return RequestKind::Head;
        }
        let connect = method == Method::CONNECT;
        let http1 = request.version() <= Version::HTTP_11;
        if !(http1 || connect)
            || request
                .extensions()
                .get::<hyper::upgrade::OnUpgrade>()
                .is_none()
        {
            return RequestKind::Plain;
        }
        match (http1, connect) {
            (true, false) => RequestKind::Upgrade,
            (true, true) => RequestKind::Connect,
            (false, _) => RequestKind::Tunnel,
        }
    }

    /// Whether an answer with `status` hands the connection (or the
    /// HTTP/2 stream) over to the handler.
    fn hands_over(self, status: StatusCode) -> bool {
        match self {
            RequestKind::Plain | RequestKind::Head | RequestKind::HandedOver => false,
            RequestKind::Upgrade => status == StatusCode::SWITCHING_PROTOCOLS,
            RequestKind::Connect | RequestKind::Tunnel => status.is_success(),
        }
    }
}

impl RequestEnd {
    #[inline]
    pub(crate) fn new(
        cancel: CancelHandle,
        kind: RequestKind,
        connection: Option<Arc<PerConnection>>,
    ) -> RequestEnd {
        RequestEnd {
            cancel,
            connection,
            answered: AtomicBool::new(false),
            kind,
        }
    }

    /// The handler has answered with `status`: what the response body
    /// keeps until its last frame, or nothing when the body is not the
    /// request's end (see [`RequestKind`]).
    #[inline]
    pub(crate) fn into_body_end(self, status: StatusCode) -> Option<RequestEnd> {
        match self.kind {
            RequestKind::Plain => Some(self),
            RequestKind::Head => {
                self.complete();
                None
            }
            kind if kind.hands_over(status) => {
                self.upgraded();
                None
            }
            _ => Some(self),
        }
    }

    /// The connection (or the HTTP/2 stream) is about to be handed to the
    /// handler. Under [`Server`](crate::Server) an HTTP/1.1 connection
    /// keeps this end until the upgraded connection is dropped. Elsewhere,
    /// and for an HTTP/2 stream, nothing can see that happen: the context
    /// is left to its parent (under `Server`, the connection's) and its
    /// deadline.
    fn upgraded(mut self) {
        match self.connection.clone() {
            Some(connection) if self.kind != RequestKind::Tunnel => connection.keep_upgraded(self),
            _ => {
                self.kind = RequestKind::HandedOver;
                std::mem::take(&mut self.cancel).detach();
            }
        }
    }

    /// The response has been handed over in full: ends the context with
    /// `Completed` (unless something ended it first).
    pub(crate) fn complete(mut self) {
        *self.answered.get_mut() = true;
    }

    /// [`complete`](Self::complete), where the end cannot be given up
    /// yet (a body asked whether it is over, by shared reference): the
    /// owner's drop, which follows, ends the context as `complete` would.
    pub(crate) fn mark_answered(&self) {
        // Relaxed: only the owner reads it, in its drop.
        self.answered.store(true, Ordering::Relaxed);
    }
}

impl Drop for RequestEnd {
    fn drop(&mut self) {
        if self.kind == RequestKind::HandedOver {
            return; // left live: see `upgraded`
        }
        let counted = self
            .connection
            .as_ref()
            .and_then(|connection| connection.tally())
            .filter(|tally| tally.counting());
        let answered = *self.answered.get_mut();
        if answered && counted.is_none() {
            // A context nobody else holds any more (the common case: the
            // handler has returned and left nothing running) is let go
            // rather than ended: nobody could see its end.
            return Ended::Completed.finish(std::mem::take(&mut self.cancel));
        }
        // The first cancellation wins: one that came first (a deadline,
        // the client, the server's shutdown) stays.
        let why = if answered {
            Ended::Completed
        } else {
            Ended::ClientGone
        };
        why.end(&self.cancel);
        if let Some(tally) = counted {
            tally.record(self.cancel.context());
        }
    }
}

/// How requests that were still running when shutdown began ended.
#[derive(Default)]
pub(crate) struct ShutdownTally {
    shutting_down: AtomicBool,
    finished: AtomicUsize,
    cancelled: AtomicUsize,
}

impl ShutdownTally {
    /// From now on, every request that ends is counted.
    pub(crate) fn begin(&self) {
        // Relaxed: a request ending at the same instant may or may not be
        // counted either way; the counts themselves are read only after
        // every connection task has been joined (a happens-before edge).
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether requests that end now are counted.
    fn counting(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Counts a request whose context is `ctx`, now ended. `None`: born
    /// done under a context that had ended without a cause of its own,
    /// so not by a shutdown, whose cause is `Ended::Shutdown`.
    fn record(&self, ctx: Option<Context>) {
        let by_shutdown = ctx.is_some_and(|ctx| Ended::of(&ctx) == Some(Ended::Shutdown));
        let counter = if by_shutdown {
            &self.cancelled
        } else {
            &self.finished
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (finished, cancelled) so far.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.finished.load(Ordering::Relaxed),
            self.cancelled.load(Ordering::Relaxed),
        )
    }
}
