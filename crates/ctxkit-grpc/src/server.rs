//! [`ServerLayer`]: a context for every call a tonic server serves.

use crate::{context_status, timeout_header_status, IntoStatus, Propagation};
use bytes::Buf;
use ctxkit::{CancelHandle, Context, OwnedDone};
use ctxkit_http::deadline_header::TimeoutHeader;
use ctxkit_http::Ended;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

/// The header's name, parsed once (a `&str` name is parsed on every lookup).
const GRPC_TIMEOUT: http::HeaderName =
    http::HeaderName::from_static(TimeoutHeader::GrpcTimeout.name());

/// A [`Layer`] for [`tonic::transport::Server`] (or any tower server of
/// `http` requests) that gives every call its own [`Context`], derived from
/// a root, in the request's extensions.
///
/// The call's context:
/// - has the earlier of the caller's `grpc-timeout` and the server's
///   [`max_timeout`](Self::max_timeout) as its deadline (measured from the
///   call's arrival);
/// - is cancelled with the cause [`Ended::ClientGone`] when the caller
///   resets the stream (RST_STREAM, which drops the call) or the connection
///   drops, and with [`Ended::Completed`] once the response is sent, its
///   trailers included;
/// - carries the caller's propagated values as a
///   [`ForwardHeaders`](crate::ForwardHeaders) (see [`Propagation`]);
/// - is a child of the root, so cancelling the root cancels every call.
///
/// Statuses follow grpc-go: a call whose context ended before the handler
/// answered ends with `DEADLINE_EXCEEDED` or `CANCELLED`, as the context's
/// `err()` says, whatever the handler answers later; a handler still running
/// at that point is dropped (spawn work that must outlive the call). A
/// malformed `grpc-timeout` is answered with `INTERNAL` without calling the
/// handler, as grpc-go does.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_grpc::demo::work_server::{Work, WorkServer};
/// use ctxkit_grpc::demo::{WorkReply, WorkRequest};
/// use ctxkit_grpc::{RequestExt, ServerLayer};
/// use std::time::Duration;
/// use tonic::{Request, Response, Status};
///
/// struct Hop;
///
/// #[tonic::async_trait]
/// impl Work for Hop {
///     async fn r#do(&self, request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
///         let ctx = request.context(); // at most 10 s, whatever the caller sent
///         let remaining_ms = ctx.remaining().map_or(-1, |left| left.as_millis() as i64);
///         Ok(Response::new(WorkReply { remaining_ms, ..Default::default() }))
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let address = listener.local_addr().unwrap();
/// tokio::spawn(
///     tonic::transport::Server::builder()
///         .layer(ServerLayer::new(Context::background()).max_timeout(Duration::from_secs(10)))
///         .add_service(WorkServer::new(Hop))
///         .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
/// );
///
/// // A plain tonic client asking for a minute: the server's maximum wins.
/// let mut client = ctxkit_grpc::demo::work_client::WorkClient::connect(format!("http://{address}"))
///     .await
///     .unwrap();
/// let mut call = Request::new(WorkRequest { work_ms: 0 });
/// call.set_timeout(Duration::from_secs(60));
/// let reply = client.r#do(call).await.unwrap().into_inner();
/// assert!((0..=10_000).contains(&reply.remaining_ms));
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct ServerLayer {
    config: Arc<Config>,
}

#[derive(Clone, Debug)]
struct Config {
    root: Context,
    max_timeout: Option<Duration>,
    propagation: Propagation,
    telemetry: crate::telemetry::Telemetry,
}

impl ServerLayer {
    /// Calls get contexts derived from `root`; no maximum deadline;
    /// the [default](Propagation::default) values are restored.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_grpc::ServerLayer;
    ///
    /// let (root, shutdown) = Context::background().with_cancel();
    /// let layer = ServerLayer::new(root); // cancelling `shutdown` ends every call
    /// # let _ = (layer, shutdown);
    /// ```
    pub fn new(root: Context) -> ServerLayer {
        ServerLayer {
            config: Arc::new(Config {
                root,
                max_timeout: None,
                propagation: Propagation::default(),
                telemetry: Default::default(),
            }),
        }
    }

    /// No call runs longer than `max`, whatever its caller sends (or when
    /// it sends no deadline).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_grpc::ServerLayer;
    /// use std::time::Duration;
    ///
    /// let layer = ServerLayer::new(Context::background()).max_timeout(Duration::from_secs(10));
    /// # let _ = layer;
    /// ```
    pub fn max_timeout(mut self, max: Duration) -> ServerLayer {
        Arc::make_mut(&mut self.config).max_timeout = Some(max);
        self
    }

    /// Restores these values from the caller's metadata instead of the
    /// default ones.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_grpc::{Propagation, ServerLayer};
    /// use http::HeaderName;
    ///
    /// let layer = ServerLayer::new(Context::background())
    ///     .propagation(Propagation::default().with(HeaderName::from_static("x-tenant")));
    /// # let _ = layer;
    /// ```
    pub fn propagation(mut self, propagation: Propagation) -> ServerLayer {
        Arc::make_mut(&mut self.config).propagation = propagation;
        self
    }

    /// The propagator that reads each call's `opentelemetry::Context` from
    /// its metadata (feature `opentelemetry`), instead of the global one
    /// (see [`otel`](crate::otel)).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_grpc::ServerLayer;
    /// use opentelemetry::propagation::TextMapCompositePropagator;
    /// use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    ///
    /// let layer = ServerLayer::new(Context::background()).propagator(TextMapCompositePropagator::new(vec![
    ///     Box::new(TraceContextPropagator::new()),
    ///     Box::new(BaggagePropagator::new()),
    /// ]));
    /// # let _ = layer;
    /// ```
    #[cfg(feature = "opentelemetry")]
    pub fn propagator<P>(mut self, propagator: P) -> ServerLayer
    where
        P: opentelemetry::propagation::TextMapPropagator + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.config).telemetry.propagator = Some(Arc::new(propagator));
        self
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service [`ServerLayer`] wraps around a server's routes.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_grpc::{ServerLayer, ServerService};
/// use tower_layer::Layer;
///
/// fn wrap<S>(inner: S) -> ServerService<S> {
///     ServerLayer::new(Context::background()).layer(inner) // what Server::builder().layer(..) does
/// }
/// # let _ = wrap(());
/// ```
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ServerService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ServerBody<ResBody>>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        // One walk over the metadata for both the propagated values and
        // `grpc-timeout`.
        let (values, timeout) = config
            .propagation
            .restore_seeing(request.headers(), Some(&GRPC_TIMEOUT));
        let caller_timeout = match timeout {
            None => None,
            Some(value) => match TimeoutHeader::GrpcTimeout.decode(value.as_bytes()) {
                Ok(timeout) => Some(timeout),
                Err(error) => return ServerFuture::answered(timeout_header_status(&error)),
            },
        };
        let limit = match (caller_timeout, config.max_timeout) {
            (Some(caller), Some(max)) => Some(caller.min(max)),
            (one, other) => one.or(other),
        };
        // A deadline past what `Instant` can hold (99999999H) is no deadline.
        // The clock is read only for a call that has one: the deadline is
        // measured from the call's arrival, which is now.
        let deadline = limit.and_then(|limit| Instant::now().checked_add(limit));
        let parent = match values {
            Some(values) => config.root.with_value(values),
            None => config.root.clone(),
        };
        let (ctx, cancel) = match deadline {
            Some(deadline) => parent.with_deadline(deadline),
            None => parent.with_cancel(),
        };
        let (ctx, span) = config.telemetry.call_context(&request, ctx);
        request.extensions_mut().insert(ctx.clone());
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ServerFuture {
            state: State::Running {
                inner,
                call: Call {
                    ctx,
                    done: None,
                    guard: CallGuard::new(Some(cancel), deadline),
                    span,
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`ServerService`]: the handler's, raced
    /// against the call's context. Dropped before it completes (the caller
    /// reset the stream or the connection dropped), it cancels the call's
    /// context with [`Ended::ClientGone`].
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_grpc::{Ended, ServerFuture, ServerLayer};
    /// use std::future::Pending;
    /// use std::sync::{Arc, Mutex};
    /// use std::task::Poll;
    /// use tower_layer::Layer;
    /// use tower_service::Service;
    ///
    /// /// A handler that never answers, and keeps its call's context.
    /// struct Stuck(Arc<Mutex<Option<Context>>>);
    ///
    /// impl Service<http::Request<()>> for Stuck {
    ///     type Response = http::Response<()>;
    ///     type Error = std::convert::Infallible;
    ///     type Future = Pending<Result<http::Response<()>, Self::Error>>;
    ///
    ///     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
    ///         Poll::Ready(Ok(()))
    ///     }
    ///
    ///     fn call(&mut self, request: http::Request<()>) -> Self::Future {
    ///         *self.0.lock().unwrap() = request.extensions().get::<Context>().cloned();
    ///         std::future::pending()
    ///     }
    /// }
    ///
    /// let seen = Arc::new(Mutex::new(None));
    /// let mut service = ServerLayer::new(Context::background()).layer(Stuck(seen.clone()));
    /// let future: ServerFuture<_> = service.call(http::Request::new(()));
    /// let ctx = seen.lock().unwrap().take().unwrap();
    /// assert!(!ctx.is_done());
    /// drop(future); // what hyper does when the caller resets the stream
    /// assert_eq!(Ended::of(&ctx), Some(Ended::ClientGone));
    /// ```
    pub struct ServerFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] inner: F, call: Call },
        Answered { status: Option<Status> },
    }
}

impl<F> ServerFuture<F> {
    fn answered(status: Status) -> ServerFuture<F> {
        ServerFuture {
            state: State::Answered {
                status: Some(status),
            },
        }
    }
}

impl<F, ResBody, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<ServerBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let (inner, call) = match self.project().state.project() {
            StateProj::Answered { status } => {
                let status = status.take().expect("ServerFuture polled after completion");
                return Poll::Ready(Ok(status.into_http()));
            }
            StateProj::Running { inner, call } => (inner, call),
        };
        let polled = {
            let _entered = call.span.enter();
            inner.poll(cx)
        };
        match polled {
            Poll::Ready(Ok(response)) => return Poll::Ready(Ok(call.respond(response))),
            Poll::Ready(Err(error)) => {
                call.guard.end(Ended::Completed);
                return Poll::Ready(Err(error));
            }
            Poll::Pending => {}
        }
        match call.ended(cx) {
            Some(status) => Poll::Ready(Ok(status.into_http())),
            None => Poll::Pending,
        }
    }
}

/// One call's context and the handle that ends it.
struct Call {
    ctx: Context,
    /// Registered only once the handler is pending: a handler that answers
    /// at once costs no waiter.
    done: Option<OwnedDone>,
    guard: CallGuard,
    span: crate::telemetry::CallSpan,
}

impl Call {
    /// The handler answered: its response, unless the call's context ended
    /// first (then the context's status, as grpc-go sends it).
    fn respond<B>(&mut self, response: http::Response<B>) -> http::Response<ServerBody<B>> {
        if let Some(status) = self.status() {
            return status.into_http();
        }
        let guard = CallGuard::new(self.guard.cancel.take(), self.guard.deadline);
        response.map(|body| ServerBody {
            inner: Some(body),
            guard,
        })
    }

    /// The status to answer with if the call's context has ended, waking
    /// the task when it ends otherwise.
    fn ended(&mut self, cx: &mut std::task::Context<'_>) -> Option<Status> {
        if let Some(status) = self.status() {
            return Some(status);
        }
        let done = self.done.get_or_insert_with(|| self.ctx.done_owned());
        ready_or_none(Pin::new(done).poll(cx))?;
        self.status()
    }

    /// The context's status once it ended, or once its deadline has passed:
    /// tonic runs its own timer on `grpc-timeout` outside this layer, and
    /// polls this future before it answers `CANCELLED` ("Timeout expired"),
    /// so the deadline is checked here too, whichever timer fires first.
    fn status(&mut self) -> Option<Status> {
        if let Some(status) = context_status(&self.ctx) {
            self.guard.end(Ended::Completed); // already ended: keeps err and cause
            return Some(status);
        }
        if !self.guard.past_deadline() {
            return None;
        }
        self.guard.end_at_deadline();
        Some(ctxkit::Error::DeadlineExceeded.into_status())
    }
}

fn ready_or_none<T>(poll: Poll<T>) -> Option<T> {
    match poll {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// Cancels the call's context with [`Ended::ClientGone`] if dropped before
/// the call ended: hyper drops a call's future and body when the caller
/// resets the stream or the connection goes. Dropped at or after the call's
/// deadline, before the context's timer fired, it ends the context with
/// `DeadlineExceeded` instead: a caller gives up at its own deadline, which
/// falls a transit before the call's, so a reset arriving after the call's
/// deadline is the deadline's doing, and the context says so.
#[derive(Debug)]
struct CallGuard {
    cancel: Option<CancelHandle>,
    /// The call's deadline, if it has one.
    deadline: Option<Instant>,
    /// Set when the body said it has nothing more to send: hyper may then
    /// drop it without polling it again, and the call completed.
    sent: AtomicBool,
}

impl CallGuard {
    fn new(cancel: Option<CancelHandle>, deadline: Option<Instant>) -> CallGuard {
        CallGuard {
            cancel,
            deadline,
            sent: AtomicBool::new(false),
        }
    }

    /// Whether the clock has reached the call's deadline.
    fn past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Ends the context with `DeadlineExceeded` now, when the clock passed
    /// its deadline before its timer fired, so that the context agrees with
    /// the status sent (a deadline moved to the past ends it before
    /// `set_deadline` returns; the handle's drop then changes nothing).
    fn end_at_deadline(&mut self) {
        if let (Some(cancel), Some(deadline)) = (self.cancel.take(), self.deadline) {
            cancel.set_deadline(deadline);
        }
    }

    /// Ends the call's context with `why`; a completed call's context that
    /// nobody holds any more is let go instead ([`Ended::finish`]).
    fn end(&mut self, why: Ended) {
        if let Some(cancel) = self.cancel.take() {
            why.finish(cancel);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.cancel.is_none() {
            return;
        }
        if *self.sent.get_mut() {
            self.end(Ended::Completed);
        } else if self.past_deadline() {
            self.end_at_deadline();
        } else {
            self.end(Ended::ClientGone);
        }
    }
}

pin_project! {
    /// The response body of a call served under [`ServerLayer`]: the
    /// handler's body, which keeps the call's context live until it has
    /// sent its last frame (trailers included); dropped before that, the
    /// caller went away, and the context ends with [`Ended::ClientGone`].
    ///
    /// ```
    /// use bytes::Bytes;
    /// use ctxkit::Context;
    /// use ctxkit_grpc::{Ended, ServerBody, ServerLayer};
    /// use http_body_util::{BodyExt, Full};
    /// use std::future::Ready;
    /// use std::sync::{Arc, Mutex};
    /// use std::task::Poll;
    /// use tower_layer::Layer;
    /// use tower_service::Service;
    ///
    /// /// A handler that answers at once, and keeps its call's context.
    /// struct Hello(Arc<Mutex<Option<Context>>>);
    ///
    /// impl Service<http::Request<()>> for Hello {
    ///     type Response = http::Response<Full<Bytes>>;
    ///     type Error = std::convert::Infallible;
    ///     type Future = Ready<Result<Self::Response, Self::Error>>;
    ///
    ///     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
    ///         Poll::Ready(Ok(()))
    ///     }
    ///
    ///     fn call(&mut self, request: http::Request<()>) -> Self::Future {
    ///         *self.0.lock().unwrap() = request.extensions().get::<Context>().cloned();
    ///         std::future::ready(Ok(http::Response::new(Full::new(Bytes::from_static(b"hi")))))
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let seen = Arc::new(Mutex::new(None));
    /// let mut service = ServerLayer::new(Context::background()).layer(Hello(seen.clone()));
    /// let response = service.call(http::Request::new(())).await.unwrap();
    /// let body: ServerBody<Full<Bytes>> = response.into_body();
    /// let ctx = seen.lock().unwrap().take().unwrap();
    /// assert!(!ctx.is_done()); // the answer is not sent yet
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
    /// assert_eq!(Ended::of(&ctx), Some(Ended::Completed)); // sent: the call is over
    /// # });
    /// ```
    pub struct ServerBody<B> {
        #[pin]
        inner: Option<B>,
        guard: CallGuard,
    }
}

impl<B> Default for ServerBody<B> {
    /// No frames: the body of a status answered by the layer itself.
    fn default() -> Self {
        ServerBody {
            inner: None,
            guard: CallGuard::new(None, None),
        }
    }
}

impl<B> Body for ServerBody<B>
where
    B: Body,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(inner.poll_frame(cx));
        let last = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(frame)) => frame.is_trailers(),
        };
        if last {
            this.guard.end(Ended::Completed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.as_ref().is_none_or(Body::is_end_stream);
        if end {
            // Relaxed: read by `Drop` through `&mut`, which orders it.
            self.guard.sent.store(true, Ordering::Relaxed);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A handler that never answers, and keeps its call's context.
    struct Stuck(Arc<Mutex<Option<Context>>>);

    impl Service<http::Request<()>> for Stuck {
        type Response = http::Response<()>;
        type Error = std::convert::Infallible;
        type Future = std::future::Pending<Result<http::Response<()>, Self::Error>>;

        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            *self.0.lock().unwrap() = request.extensions().get::<Context>().cloned();
            std::future::pending()
        }
    }

    /// Starts a call carrying `grpc-timeout: timeout`; its future and context.
    fn start(
        timeout: &'static str,
    ) -> (
        ServerFuture<<Stuck as Service<http::Request<()>>>::Future>,
        Context,
    ) {
        let seen = Arc::new(Mutex::new(None));
        let mut service = ServerLayer::new(Context::background()).layer(Stuck(seen.clone()));
        let mut request = http::Request::new(());
        request
            .headers_mut()
            .insert(GRPC_TIMEOUT, http::HeaderValue::from_static(timeout));
        let future = service.call(request);
        let ctx = seen.lock().unwrap().take().expect("the handler was called");
        (future, ctx)
    }

    #[test]
    fn a_reset_before_the_deadline_is_the_client_gone() {
        let (call, ctx) = start("1H");
        drop(call);
        assert_eq!(ctx.err(), Some(ctxkit::Error::Canceled));
        assert_eq!(Ended::of(&ctx), Some(Ended::ClientGone));
    }

    #[test]
    fn a_reset_at_or_after_the_deadline_is_the_deadline() {
        let (call, ctx) = start("1m");
        let deadline = ctx.deadline().expect("a deadline");
        // Dropped as soon as the clock passes the deadline, usually before
        // the timer has ended the context: either way, the deadline did.
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
        drop(call);
        assert_eq!(ctx.err(), Some(ctxkit::Error::DeadlineExceeded));
        assert_eq!(Ended::of(&ctx), None);
    }
}
