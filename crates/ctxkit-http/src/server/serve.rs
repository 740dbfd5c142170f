//! [`Server`]: serve a service on a TCP listener until the root context
//! ends, then shut down gracefully, bounded.

use super::layer::{ContextLayer, ContextService, PerConnection};
use super::peer::PeerAddr;
use super::request_end::{RequestEnd, ShutdownTally};
use crate::Ended;
use bytes::Bytes;
use ctxkit::{CancelHandle, Context};
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tower_layer::Layer;
use tower_service::Service;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves HTTP/1.1 and cleartext HTTP/2 (prior knowledge) on one tokio
/// `TcpListener`, with a context tree like Go's `http.Server`:
/// the root context (the layer's root, e.g. a signal context) → one
/// context per connection, with the client's [`PeerAddr`] as a value →
/// one context per request ([`ContextLayer`]). The root's values are
/// visible in every request.
///
/// When the root ends, [`serve`](Self::serve):
/// 1. stops accepting (the listener is closed: new connections are refused);
/// 2. closes idle keep-alive connections and sends HTTP/2 GOAWAY;
/// 3. lets in-flight requests finish for the [grace period](Self::grace);
/// 4. ends the rest with [`Ended::Shutdown`];
/// 5. waits for them at most [`drain_timeout`](Self::drain_timeout), aborts
///    what is left, and returns a [`ShutdownReport`].
///
/// An HTTP/1.1 connection upgraded by its handler (`101 Switching
/// Protocols`: a WebSocket...; or a `CONNECT` tunnel) counts as in flight
/// until the upgraded connection is dropped: its request's context ends
/// then with [`Ended::Completed`], or with `Ended::Shutdown` after the
/// grace period. HTTP/2's extended CONNECT (RFC 8441: a WebSocket over
/// HTTP/2) is accepted, as `axum::serve` does; such a tunnel is a stream
/// whose end the connection cannot see, so its request's context is left
/// to the connection's and ends with it (not counted in the report).
///
/// It never waits forever. The root's end does not reach the requests
/// directly: between the root and the connections sits the server's own
/// context, [`context`](Self::context), which keeps the root's values but
/// ends only with `Ended::Shutdown`.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::{ContextLayer, RequestContext, Server};
/// use std::time::Duration;
///
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// // In a real server the root is a signal context:
/// // `ctxkit::signal::notify_context_tokio(&Context::background())?`.
/// let (root, stop) = Context::background().with_cancel();
/// let app = axum::Router::new().route(
///     "/",
///     axum::routing::get(|ctx: RequestContext| async move { format!("{:?}", ctx.remaining()) }),
/// );
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server = Server::new(ContextLayer::new(root).max_timeout(Duration::from_secs(10)))
///     .grace(Duration::from_secs(5));
/// let serving = tokio::spawn(server.serve(listener, app));
/// stop.cancel(); // as SIGTERM would
/// let report = serving.await.expect("serve does not panic")?;
/// assert_eq!((report.finished, report.cancelled), (0, 0)); // nothing was in flight
/// # Ok(()) }
/// ```
pub struct Server {
    layer: ContextLayer,
    context: Context,
    shutdown: CancelHandle,
    grace: Duration,
    drain_timeout: Duration,
    tcp_nodelay: bool,
}

/// What a graceful shutdown did with the requests that were running when
/// the root context ended.
///
/// ```
/// use ctxkit_http::ShutdownReport;
///
/// let report = ShutdownReport::default(); // what a shutdown with nothing running reports
/// assert_eq!((report.finished, report.cancelled, report.aborted_connections), (0, 0, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Requests that ended on their own after shutdown began (completed,
    /// client gone or deadline), within the grace period.
    pub finished: usize,
    /// Requests ended with [`Ended::Shutdown`] when the grace period ran out.
    pub cancelled: usize,
    /// Connections still open after the drain timeout, aborted.
    pub aborted_connections: usize,
}

impl Server {
    /// A server whose requests get their contexts from `layer`, with a 10 s
    /// grace period and a 5 s drain timeout.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::{ContextLayer, Server};
    ///
    /// let server = Server::new(ContextLayer::new(Context::background()));
    /// assert!(!server.context().is_done());
    /// ```
    pub fn new(layer: ContextLayer) -> Server {
        let (context, shutdown) = layer.root().without_cancel().with_cancel();
        Server {
            layer,
            context,
            shutdown,
            grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            tcp_nodelay: false,
        }
    }

    /// How long in-flight requests may run on once the root has ended.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::{ContextLayer, Server};
    /// use std::time::Duration;
    ///
    /// let server = Server::new(ContextLayer::new(Context::background())).grace(Duration::from_secs(30));
    /// # let _ = server;
    /// ```
    pub fn grace(mut self, grace: Duration) -> Server {
        self.grace = grace;
        self
    }

    /// How long to wait, after the grace period, for requests ended with
    /// [`Ended::Shutdown`] to return before their connections are aborted.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::{ContextLayer, Server};
    /// use std::time::Duration;
    ///
    /// // 5 s for requests to finish, then 1 s for the ones told to stop to return.
    /// let server = Server::new(ContextLayer::new(Context::background()))
    ///     .grace(Duration::from_secs(5))
    ///     .drain_timeout(Duration::from_secs(1));
    /// # let _ = server;
    /// ```
    pub fn drain_timeout(mut self, drain_timeout: Duration) -> Server {
        self.drain_timeout = drain_timeout;
        self
    }

    /// Sets `TCP_NODELAY` on every accepted connection (off by default, as
    /// in `axum::serve`).
    ///
    /// Off, the kernel holds a small write back while an earlier one is
    /// unacknowledged and sends them together. Over HTTP/2, where one
    /// connection carries many concurrent responses, that batching saves
    /// the server about 3 µs of CPU per request (BENCHMARKS.md); over
    /// HTTP/1.1 a response goes out in one write either way. Turn it on when
    /// a stream of small chunks (server-sent events, a long poll) must
    /// reach the client without waiting for the previous chunk's
    /// acknowledgement.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::{ContextLayer, Server};
    ///
    /// // Server-sent events: each event leaves at once.
    /// let server = Server::new(ContextLayer::new(Context::background())).tcp_nodelay(true);
    /// # let _ = server;
    /// ```
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Server {
        self.tcp_nodelay = nodelay;
        self
    }

    /// The server's context: the parent of every connection's context. It
    /// has the root's values and ends only with [`Ended::Shutdown`];
    /// [`registrations`](Context::registrations) counts the open
    /// connections, for leak checks.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::{ContextLayer, Server};
    ///
    /// let server = Server::new(ContextLayer::new(Context::background()));
    /// assert_eq!(server.context().registrations(), 0); // no connection open
    /// ```
    pub fn context(&self) -> Context {
        self.context.clone()
    }

    /// Serves `service` on `listener` until the root context ends, then
    /// shuts down as the type's documentation says.
    ///
    /// An axum `Router` given as it is has its handlers turned into routes
    /// once, as `axum::serve` does; called as it is, a `Router` would
    /// build each request's route anew. A router wrapped in other layers
    /// is served as given: call `with_state(())` on it before wrapping it.
    ///
    /// # Errors
    ///
    /// None today: accept errors (a client that reset before being accepted,
    /// too many open files) are waited out, as a server must survive them.
    /// The `Result` leaves room for errors that end serving.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::{ContextLayer, RequestContext, Server, ShutdownReport};
    /// use std::time::Duration;
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let (root, shutdown) = Context::background().with_cancel();
    ///     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    ///     let url = format!("http://{}/", listener.local_addr()?);
    ///     let app = axum::Router::new().route(
    ///         "/",
    ///         axum::routing::get(|ctx: RequestContext| async move { format!("done: {}", ctx.is_done()) }),
    ///     );
    ///     let server = Server::new(ContextLayer::new(root)).grace(Duration::from_secs(1));
    ///     let serving = tokio::spawn(server.serve(listener, app));
    ///
    ///     assert_eq!(reqwest::get(&url).await?.text().await?, "done: false");
    ///     shutdown.cancel(); // the root ends: stop accepting, drain, report
    ///     assert_eq!(serving.await??, ShutdownReport::default()); // nothing was running
    ///     Ok(())
    /// }
    /// ```
    pub async fn serve<S, B>(self, listener: TcpListener, service: S) -> io::Result<ShutdownReport>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: From<Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let tally = Arc::new(ShutdownTally::default());
        #[cfg(feature = "axum")]
        let service = eager_routes(service);
        let service = self.layer.clone().with_tally(tally.clone()).layer(service);
        // No timer, as axum::serve: hyper's header read timeout would
        // arm one per request. Slow clients are the root's and the
        // deadline's business.
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // WebSockets over HTTP/2 (RFC 8441), as axum::serve.
        builder.http2().enable_connect_protocol();
        let root = self.layer.root().clone();
        let mut connections = JoinSet::new();
        let nodelay = self.tcp_nodelay;
        accept_until_done(&root, &listener, &mut connections, |stream, peer| {
            if nodelay {
                let _ = stream.set_nodelay(true);
            }
            let connection = Connection {
                ctx: self.context.with_value(PeerAddr(peer)),
                root: root.clone(),
                builder: builder.clone(),
            };
            connection.run(stream, service.clone())
        })
        .await;
        drop(listener);
        tally.begin();
        let aborted_connections = self.drain(&mut connections).await;
        let (finished, cancelled) = tally.counts();
        Ok(ShutdownReport {
            finished,
            cancelled,
            aborted_connections,
        })
    }

    /// Steps 3 to 5 of the shutdown; the connections already know (they
    /// watch the root) and are closing. Returns how many were aborted.
    async fn drain(&self, connections: &mut JoinSet<()>) -> usize {
        if join_all(connections, self.grace).await {
            return 0;
        }
        Ended::Shutdown.end(&self.shutdown);
        if join_all(connections, self.drain_timeout).await {
            return 0;
        }
        let aborted = connections.len();
        connections.abort_all();
        // An aborted task ends at its next await; a handler blocking its
        // worker thread would not, so even this wait is bounded.
        join_all(connections, self.drain_timeout).await;
        aborted
    }
}

/// Accepts connections and spawns `serve` for each until `root` ends,
/// reaping finished connection tasks as it goes.
async fn accept_until_done<F, Fut>(
    root: &Context,
    listener: &TcpListener,
    connections: &mut JoinSet<()>,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let done = root.done();
    tokio::pin!(done);
    loop {
        tokio::select! {
            biased;
            _ = &mut done => return,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve(stream, peer));
                }
                // Per-connection failures (ECONNABORTED) and resource
                // exhaustion (EMFILE) pass; pause so as not to spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
}

/// `service`, or, if it is an axum `Router`, the router with its handlers
/// turned into routes once, as `axum::serve` does for each connection: a
/// `Router` called as it is builds each request's route anew (about 200
/// instructions a request, BENCHMARKS.md).
#[cfg(feature = "axum")]
fn eager_routes<S: 'static>(service: S) -> S {
    let mut service = Some(service);
    let any: &mut dyn std::any::Any = &mut service;
    if let Some(router) = any.downcast_mut::<Option<axum::Router>>() {
        *router = router.take().map(|router| router.with_state(()));
    }
    service.expect("put back above")
}

/// Joins every task, or gives up after `limit`: true when all ended.
async fn join_all(connections: &mut JoinSet<()>, limit: Duration) -> bool {
    let all = async { while connections.join_next().await.is_some() {} };
    tokio::time::timeout(limit, all).await.is_ok()
}

/// One accepted connection and its context.
struct Connection {
    ctx: Context,
    root: Context,
    builder: auto::Builder<TokioExecutor>,
}

impl Connection {
    async fn run<S, B>(self, stream: TcpStream, service: ContextService<S>)
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: From<Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let (ctx, cancel) = self.ctx.with_cancel();
        let service = service.for_connection(ctx);
        let upgraded = Upgraded(service.connection().clone());
        let (closed, io_closed) = oneshot::channel();
        let io = TokioIo::new(DeferEof {
            stream,
            deferred: false,
            _closed: closed,
        });
        let served = {
            let connection = self.builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(connection);
            tokio::select! {
                // The connection first: it is what wakes the task almost
                // every time (and no random draw per wake-up).
                biased;
                served = connection.as_mut() => served.is_ok(),
                _ = self.root.done() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await.is_ok()
                }
            }
        }; // The connection's future, and the stream if it still has it, dropped.
        if let Some(request) = upgraded.take() {
            if served {
                // The stream went to the handler's upgrade (a WebSocket...):
                // the request lives on until the upgraded connection is
                // dropped, or ends with the server's shutdown meanwhile.
                let _ = io_closed.await;
                request.complete();
            }
            // Else hyper failed before the hand-over, which follows the
            // 101's last byte: the client left without its upgrade, and the
            // request's drop says so.
        }
        // Whatever ended the connection, the client can no longer be
        // answered on it; a shutdown's own cause, if first, wins.
        Ended::ClientGone.end(&cancel);
    }
}

/// The connection's hold on the end of a request that upgraded it, taken
/// out when the connection task ends, however it ends (the end refers to
/// the connection: left in place, the two would keep each other alive).
struct Upgraded(Arc<PerConnection>);

impl Upgraded {
    fn take(&self) -> Option<RequestEnd> {
        self.0.take_upgraded()
    }
}

impl Drop for Upgraded {
    fn drop(&mut self) {
        drop(self.take());
    }
}

pin_project! {
    /// A TCP stream that reports its end of file one poll late. A client
    /// may send a request and close at once; hyper reads both in one go and
    /// would drop the request before ever polling it, so its handler would
    /// never run. One poll's delay lets hyper start the handler first,
    /// which then sees its context end with `ClientGone` at once, as a Go
    /// handler runs with the context of a client that already left.
    ///
    /// Its drop closes `_closed`: how the connection task learns that an
    /// upgraded connection, handed over to the handler, is gone.
    struct DeferEof {
        #[pin]
        stream: TcpStream,
        deferred: bool,
        _closed: oneshot::Sender<()>,
    }
}

impl AsyncRead for DeferEof {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        ready!(this.stream.poll_read(cx, buf))?;
        let eof = buf.filled().len() == before && buf.remaining() > 0;
        if eof && !*this.deferred {
            *this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for DeferEof {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

#[cfg(all(test, feature = "axum"))]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_router_keeps_its_routes_and_other_services_pass_unchanged() {
        let router = axum::Router::new()
            .route("/", axum::routing::get(|| async { "root" }))
            .fallback(|| async { (http::StatusCode::NOT_FOUND, "none") });
        let router = eager_routes(router);
        for (path, status) in [("/", 200), ("/elsewhere", 404)] {
            let request = Request::get(path).body(axum::body::Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), status, "{path}");
        }
        assert_eq!(eager_routes(7_u8), 7);
    }
}
