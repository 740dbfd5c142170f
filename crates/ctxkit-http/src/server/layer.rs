//! [`ContextLayer`] and [`ContextService`]: a context for every request.

use super::body::ContextBody;
use super::deadline::{caller_timeout, effective, name_of, MalformedDeadline};
use super::request_end::{RequestEnd, RequestKind, ShutdownTally};
use crate::deadline_header::TimeoutHeader;
use crate::forward::{ForwardHeaders, DEFAULT_FORWARDED};
use crate::telemetry::RequestSpan;
use bytes::Bytes;
use ctxkit::{CancelHandle, Context};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// A tower [`Layer`] that gives every request a [`Context`], in the
/// request's extensions, that ends when the request does.
///
/// The request's context is a child of the [`Context`] already in the
/// request's extensions, or else, under [`Server`](crate::Server), of the
/// connection's context, or else of the layer's root. It ends:
///
/// - with [`Ended::ClientGone`](crate::Ended::ClientGone) when the connection
///   drops the request before its response is fully sent: the client closed
///   the connection or reset the HTTP/2 stream;
/// - with [`Ended::Completed`](crate::Ended::Completed) once the response
///   body's end has been handed to the connection (a streaming body keeps the
///   context live until then);
/// - with [`Error::DeadlineExceeded`](ctxkit::Error::DeadlineExceeded) at the
///   earlier of [`max_timeout`](Self::max_timeout) and the caller's
///   `grpc-timeout` / `connect-timeout-ms`;
/// - when its parent ends (e.g. [`Ended::Shutdown`](crate::Ended::Shutdown)
///   from the server, after the grace period).
///
/// A request answered `101 Switching Protocols` (an HTTP/1.1 upgrade, such
/// as a WebSocket handshake), or a `CONNECT` answered with a 2xx (a
/// tunnel; over HTTP/2, also a WebSocket), lives on with the connection or
/// stream it hands over, which its handler usually serves from a task
/// under the request's context. Under [`Server`](crate::Server) an
/// HTTP/1.1 request ends with `Completed` once the upgraded connection is
/// dropped, or with the server's shutdown. Under another server, and for
/// an HTTP/2 stream, the layer cannot see that end, and leaves the context
/// to its parent (under `Server`, the connection's) and its deadline.
///
/// It works with any tower `Service<http::Request<B>>` that answers
/// `http::Response<ResB>` (axum's `Router`, tonic), and with hyper's own
/// services (`hyper::service::service_fn`): [`ContextService`] is both.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::{ContextLayer, MalformedDeadline};
/// use std::time::Duration;
///
/// let layer = ContextLayer::new(Context::background())
///     .max_timeout(Duration::from_secs(30))
///     .on_malformed_deadline(MalformedDeadline::Ignore);
/// let app = tower::ServiceBuilder::new()
///     .layer(layer)
///     .service(axum::Router::<()>::new());
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct ContextLayer {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    root: Context,
    max_timeout: Option<Duration>,
    deadline_headers: Vec<TimeoutHeader>,
    malformed: MalformedDeadline,
    forwarded: Vec<HeaderName>,
    tally: Option<Arc<ShutdownTally>>,
    /// Bit n is set when a header the layer reads (deadline or forwarded)
    /// has a name n bytes long ([`length_bit`]). Most of a request's
    /// headers differ in length from all of them and are passed over at
    /// once.
    watched_lengths: u64,
    telemetry: crate::telemetry::Telemetry,
}

impl ContextLayer {
    /// A layer whose request contexts descend from `root` (when the request
    /// carries no context yet), read both deadline headers, reject malformed
    /// ones with 400, set no server maximum, and keep `x-request-id`,
    /// `traceparent` and `baggage` as [`ForwardHeaders`].
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::ContextLayer;
    ///
    /// let layer = ContextLayer::new(Context::background());
    /// assert!(!layer.root().is_done());
    /// ```
    pub fn new(root: Context) -> ContextLayer {
        let layer = ContextLayer {
            config: Arc::new(Config {
                root,
                max_timeout: None,
                deadline_headers: TimeoutHeader::ALL.to_vec(),
                malformed: MalformedDeadline::Reject,
                forwarded: DEFAULT_FORWARDED.to_vec(),
                tally: None,
                watched_lengths: 0,
                telemetry: Default::default(),
            }),
        };
        layer.with(|_| {})
    }

    /// No request runs longer than `max`, whatever its caller asks for.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::ContextLayer;
    /// use std::time::Duration;
    ///
    /// // Callers may ask for less, never for more than 10 s.
    /// let layer = ContextLayer::new(Context::background()).max_timeout(Duration::from_secs(10));
    /// # let _ = layer;
    /// ```
    pub fn max_timeout(self, max: Duration) -> ContextLayer {
        self.with(|config| config.max_timeout = Some(max))
    }

    /// The deadline headers to read (both by default; none to trust no
    /// caller).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::deadline_header::TimeoutHeader;
    /// use ctxkit_http::ContextLayer;
    ///
    /// // gRPC-style callers only: connect-timeout-ms is ignored.
    /// let layer = ContextLayer::new(Context::background()).deadline_headers(&[TimeoutHeader::GrpcTimeout]);
    /// # let _ = layer;
    /// ```
    pub fn deadline_headers(self, headers: &[TimeoutHeader]) -> ContextLayer {
        self.with(|config| config.deadline_headers = headers.to_vec())
    }

    /// What to do with a malformed deadline header (400 by default).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::{ContextLayer, MalformedDeadline};
    ///
    /// let layer = ContextLayer::new(Context::background()).on_malformed_deadline(MalformedDeadline::Ignore);
    /// # let _ = layer;
    /// ```
    pub fn on_malformed_deadline(self, policy: MalformedDeadline) -> ContextLayer {
        self.with(|config| config.malformed = policy)
    }

    /// The request headers kept in the context as [`ForwardHeaders`].
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::ContextLayer;
    /// use http::HeaderName;
    ///
    /// // Trust no caller's deadline; keep a tenant header instead of the defaults.
    /// let layer = ContextLayer::new(Context::background())
    ///     .deadline_headers(&[])
    ///     .forwarded_headers(&[HeaderName::from_static("x-tenant")]);
    /// assert!(!layer.root().is_done());
    /// ```
    pub fn forwarded_headers(self, names: &[HeaderName]) -> ContextLayer {
        self.with(|config| config.forwarded = names.to_vec())
    }

    /// The propagator that reads each request's `opentelemetry::Context`
    /// from its headers (feature `opentelemetry`), instead of the global one
    /// (see [`otel`](crate::otel)).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::ContextLayer;
    /// use opentelemetry::propagation::TextMapCompositePropagator;
    /// use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    ///
    /// let layer = ContextLayer::new(Context::background()).propagator(TextMapCompositePropagator::new(vec![
    ///     Box::new(TraceContextPropagator::new()),
    ///     Box::new(BaggagePropagator::new()),
    /// ]));
    /// # let _ = layer;
    /// ```
    #[cfg(feature = "opentelemetry")]
    pub fn propagator<P>(self, propagator: P) -> ContextLayer
    where
        P: opentelemetry::propagation::TextMapPropagator + Send + Sync + 'static,
    {
        self.with(|config| config.telemetry.propagator = Some(Arc::new(propagator)))
    }

    /// The root given to [`new`](Self::new).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::ContextLayer;
    ///
    /// let (root, shutdown) = Context::background().with_cancel();
    /// let layer = ContextLayer::new(root);
    /// shutdown.cancel();
    /// assert!(layer.root().is_done()); // every request context descends from it
    /// ```
    pub fn root(&self) -> &Context {
        &self.config.root
    }

    pub(crate) fn with_tally(self, tally: Arc<ShutdownTally>) -> ContextLayer {
        self.with(|config| config.tally = Some(tally))
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> ContextLayer {
        let config = Arc::make_mut(&mut self.config);
        change(config);
        let deadline = config.deadline_headers.iter().map(|&h| name_of(h));
        config.watched_lengths = deadline
            .chain(&config.forwarded)
            .fold(0, |lengths, name| lengths | length_bit(name));
        self
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> ContextService<S> {
        ContextService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The [`Service`] of [`ContextLayer`]: see there.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::ContextLayer;
/// use std::convert::Infallible;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     let handler = service_fn(|request: http::Request<String>| async move {
///         let ctx = request.extensions().get::<Context>().expect("put there by the layer");
///         let left = ctx.remaining().expect("the caller's grpc-timeout");
///         Ok::<_, Infallible>(http::Response::new(format!("{}", left.as_millis() <= 1000)))
///     });
///     let service = ContextLayer::new(Context::background()).layer(handler);
///     let request = http::Request::builder().header("grpc-timeout", "1S").body(String::new()).unwrap();
///     let response = service.oneshot(request).await.unwrap();
///     assert_eq!(response.status(), 200);
/// }
/// ```
#[derive(Clone)]
pub struct ContextService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> ContextService<S> {
    /// This service as hyper's, for one connection of
    /// [`Server`](crate::Server): request contexts are children of
    /// `parent` (when a request carries no context of its own), and the
    /// tower service `S` is cloned and called inside the response future,
    /// as hyper-util's `TowerToHyperService` would, but without nesting
    /// its future in ours: one move of the request fewer.
    pub(crate) fn for_connection(self, parent: Context) -> ConnectionService<S> {
        ConnectionService {
            inner: self.inner,
            connection: Arc::new(PerConnection {
                config: self.config,
                parent,
                upgraded: Mutex::new(None),
            }),
        }
    }
}

/// A [`ContextService`] over a tower service, served by hyper on one
/// connection: see [`ContextService::for_connection`].
pub(crate) struct ConnectionService<S> {
    inner: S,
    /// One `Arc` for what each request's future needs besides the
    /// service: one reference count to move per request, not two.
    connection: Arc<PerConnection>,
}

impl<S> ConnectionService<S> {
    /// What the requests on this connection share with it.
    pub(crate) fn connection(&self) -> &Arc<PerConnection> {
        &self.connection
    }
}

/// The layer's configuration and the connection's context.
pub(crate) struct PerConnection {
    config: Arc<Config>,
    /// Handed over here rather than in each request's extensions, which
    /// would cost an insert and a lookup per request.
    parent: Context,
    /// The end of the request whose `101 Switching Protocols` handed the
    /// connection over to its upgrade: it holds a reference to this
    /// connection, so [`Server`](crate::Server)'s connection task always
    /// takes it out ([`take_upgraded`](Self::take_upgraded)).
    upgraded: Mutex<Option<RequestEnd>>,
}

impl PerConnection {
    /// Gives `request` its context, as [`Config::begin`], with an end that
    /// keeps this reference (the request's own, moved).
    #[inline]
    fn begin<B>(
        self: Arc<Self>,
        request: &mut Request<B>,
    ) -> Result<(RequestEnd, RequestSpan), String> {
        let kind = RequestKind::of(request);
        let (cancel, span) = self.config.give_context(Some(&self.parent), request)?;
        Ok((RequestEnd::new(cancel, kind, Some(self)), span))
    }

    /// The server's count of the requests that end during its shutdown.
    pub(crate) fn tally(&self) -> Option<&ShutdownTally> {
        self.config.tally.as_deref()
    }

    /// Keeps the end of a request answered with `101 Switching
    /// Protocols`. (One per connection: an HTTP/1.1 connection upgrades
    /// at most once.)
    pub(crate) fn keep_upgraded(&self, end: RequestEnd) {
        let previous = self.lock_upgraded().replace(end);
        drop(previous); // after the lock is released: its drop ends a context
    }

    /// The end kept by [`keep_upgraded`](Self::keep_upgraded), if any.
    pub(crate) fn take_upgraded(&self) -> Option<RequestEnd> {
        self.lock_upgraded().take()
    }

    fn lock_upgraded(&self) -> std::sync::MutexGuard<'_, Option<RequestEnd>> {
        // A panic cannot leave the slot half-written: take the value.
        self.upgraded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S, ReqB, ResB> hyper::service::Service<Request<ReqB>> for ConnectionService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    ResB: Body,
    ResB::Data: From<Bytes>,
{
    type Response = Response<ContextBody<ResB>>;
    type Error = S::Error;
    type Future = ConnectionFuture<S, Request<ReqB>, S::Future>;

    fn call(&self, request: Request<ReqB>) -> Self::Future {
        ConnectionFuture::Waiting {
            connection: Some(self.connection.clone()),
            service: self.inner.clone(),
            request: Some(request),
        }
    }
}

pin_project! {
    /// One request on a [`ConnectionService`]: waits for the service to be
    /// ready, then gives the request its context and calls the service;
    /// then as [`ResponseFuture`] (in one enum rather than wrapping one, so
    /// that the service's future is moved into place once).
    ///
    /// The context is made at the first poll, not when hyper hands the
    /// request over: over HTTP/2 hyper takes in every stream a read
    /// brought before it runs any, and contexts made then would all be
    /// live at once under the connection's, which the core registers at a
    /// higher cost than one child at a time.
    #[project = ConnectionFutureProj]
    pub(crate) enum ConnectionFuture<S, R, F> {
        Waiting { connection: Option<Arc<PerConnection>>, service: S, request: Option<R> },
        Called { #[pin] future: F, end: Option<RequestEnd>, span: RequestSpan },
        Rejected { message: Option<String> },
    }
}

impl<S, ReqB, ResB> Future for ConnectionFuture<S, Request<ReqB>, S::Future>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Output = Result<Response<ContextBody<ResB>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                ConnectionFutureProj::Waiting {
                    connection,
                    service,
                    request,
                } => {
                    ready!(service.poll_ready(cx))?;
                    let pending = request.as_mut().expect("polled after the call");
                    let connection = connection.take().expect("polled after the call");
                    match connection.begin(pending) {
                        Ok((end, span)) => {
                            let request = request.take().expect("still here");
                            let future = {
                                let _entered = span.enter();
                                service.call(request)
                            };
                            self.set(ConnectionFuture::Called {
                                future,
                                end: Some(end),
                                span,
                            });
                        }
                        Err(message) => self.set(ConnectionFuture::Rejected {
                            message: Some(message),
                        }),
                    }
                }
                ConnectionFutureProj::Called { future, end, span } => {
                    let result = {
                        let _entered = span.enter();
                        ready!(future.poll(cx))
                    };
                    let end = end.take().expect("polled after completion");
                    return Poll::Ready(answer(result, end));
                }
                ConnectionFutureProj::Rejected { message } => {
                    let message = message.take().expect("polled after completion");
                    return Poll::Ready(Ok(bad_request(message)));
                }
            }
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ContextService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    ResB::Data: From<Bytes>,
{
    type Response = Response<ContextBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let inner = &mut self.inner;
        self.config
            .serve(None, request, |request| inner.call(request))
    }
}

/// hyper's own `Service` (`hyper::service::service_fn`, served by
/// `hyper::server::conn` or hyper-util directly), under the same contract.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::{ContextLayer, RequestContext};
/// use tower::Layer;
///
/// let service = ContextLayer::new(Context::background()).layer(hyper::service::service_fn(
///     |request: http::Request<hyper::body::Incoming>| async move {
///         let ctx = RequestContext::of(&request).unwrap();
///         let text = format!("live: {}", !ctx.is_done());
///         Ok::<_, std::convert::Infallible>(http::Response::new(text))
///     },
/// ));
/// # fn served<S: hyper::service::Service<http::Request<hyper::body::Incoming>>>(_: &S) {}
/// # served(&service);
/// ```
impl<S, ReqB, ResB> hyper::service::Service<Request<ReqB>> for ContextService<S>
where
    S: hyper::service::Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    ResB::Data: From<Bytes>,
{
    type Response = Response<ContextBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn call(&self, request: Request<ReqB>) -> Self::Future {
        self.config
            .serve(None, request, |request| self.inner.call(request))
    }
}

impl Config {
    /// The request, with its context, to `call`; the response future
    /// that ends the context (or the 400 for a malformed deadline header).
    fn serve<B, F>(
        &self,
        parent: Option<&Context>,
        mut request: Request<B>,
        call: impl FnOnce(Request<B>) -> F,
    ) -> ResponseFuture<F> {
        match self.begin(parent, &mut request) {
            Ok((end, span)) => {
                let future = {
                    let _entered = span.enter();
                    call(request)
                };
                ResponseFuture::call(future, end, span)
            }
            Err(message) => ResponseFuture::rejected(message),
        }
    }

    /// Gives `request` its context, in its extensions: the request's end
    /// and span, or the text of a 400 answer.
    #[inline]
    fn begin<B>(
        &self,
        parent: Option<&Context>,
        request: &mut Request<B>,
    ) -> Result<(RequestEnd, RequestSpan), String> {
        let kind = RequestKind::of(request);
        let (cancel, span) = self.give_context(parent, request)?;
        Ok((RequestEnd::new(cancel, kind, None), span))
    }

    /// Gives `request` its context, in its extensions: the context's
    /// handle and the request's span, or the text of a 400 answer.
    #[inline]
    fn give_context<B>(
        &self,
        parent: Option<&Context>,
        request: &mut Request<B>,
    ) -> Result<(CancelHandle, RequestSpan), String> {
        let (ctx, cancel) = self.request_context(parent, request)?;
        let (ctx, span) = self.telemetry.request_context(request, ctx);
        request.extensions_mut().insert(ctx);
        Ok((cancel, span))
    }

    /// The request's context, or the text of a 400 answer.
    fn request_context<B>(
        &self,
        parent: Option<&Context>,
        request: &Request<B>,
    ) -> Result<(Context, CancelHandle), String> {
        let headers = request.headers();
        let (deadline, forwarded) = self.present(headers);
        let caller = if deadline {
            caller_timeout(headers, &self.deadline_headers, self.malformed)
                .map_err(|error| error.to_string())?
        } else {
            None
        };
        let parent = request
            .extensions()
            .get::<Context>()
            .or(parent)
            .unwrap_or(&self.root);
        let (ctx, cancel) = match effective(self.max_timeout, caller) {
            // with_timeout saturates: a 99999999H budget cannot overflow.
            Some(timeout) => parent.with_timeout(timeout),
            None => parent.with_cancel(),
        };
        let ctx = match forwarded
            .then(|| ForwardHeaders::capture(headers, &self.forwarded))
            .flatten()
        {
            Some(forwarded) => ctx.with_value(forwarded),
            None => ctx,
        };
        Ok((ctx, cancel))
    }

    /// Whether `headers` has any of the deadline headers and any of the
    /// forwarded ones the layer reads. Most requests have none, and one
    /// walk over their few names, most of them passed over on their length
    /// alone, costs less than the five hashed lookups it spares (about 800
    /// instructions a request); a request with many headers is looked up
    /// directly.
    fn present(&self, headers: &HeaderMap) -> (bool, bool) {
        const WALK_AT_MOST: usize = 24;
        if headers.keys_len() > WALK_AT_MOST {
            return (true, true);
        }
        let (mut deadline, mut forwarded) = (false, false);
        for name in headers.keys() {
            if self.watched_lengths & length_bit(name) == 0 {
                continue;
            }
            deadline |= self.deadline_headers.iter().any(|&h| name == name_of(h));
            forwarded |= self.forwarded.contains(name);
        }
        (deadline, forwarded)
    }
}

/// One bit for the length of `name`: bit n for n < 64, else bit 0 (no
/// name is empty, so bit 0 stands for every long one).
#[inline]
fn length_bit(name: &HeaderName) -> u64 {
    match name.as_str().len() {
        n @ 1..64 => 1 << n,
        _ => 1,
    }
}

pin_project! {
    /// The future of [`ContextService`]: the inner service's response with
    /// its body wrapped in a [`ContextBody`]. Dropped before it resolves,
    /// it ends the request's context with
    /// [`Ended::ClientGone`](crate::Ended::ClientGone).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::{ContextLayer, Ended};
    /// use std::convert::Infallible;
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() {
    ///     let seen = Arc::new(Mutex::new(None));
    ///     let handler = service_fn({
    ///         let seen = seen.clone();
    ///         move |request: http::Request<String>| {
    ///             *seen.lock().unwrap() = request.extensions().get::<Context>().cloned();
    ///             std::future::pending::<Result<http::Response<String>, Infallible>>() // never answers
    ///         }
    ///     });
    ///     let service = ContextLayer::new(Context::background()).layer(handler);
    ///     let call = service.oneshot(http::Request::new(String::new()));
    ///     // Dropped unanswered, as when the client goes away:
    ///     assert!(tokio::time::timeout(Duration::from_millis(10), call).await.is_err());
    ///     let ctx = seen.lock().unwrap().clone().unwrap();
    ///     assert_eq!(Ended::of(&ctx), Some(Ended::ClientGone));
    /// }
    /// ```
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Call { #[pin] future: F, end: Option<RequestEnd>, span: RequestSpan },
        Reject { message: Option<String> },
    }
}

impl<F> ResponseFuture<F> {
    fn call(future: F, end: RequestEnd, span: RequestSpan) -> ResponseFuture<F> {
        ResponseFuture {
            kind: Kind::Call {
                future,
                end: Some(end),
                span,
            },
        }
    }

    fn rejected(message: String) -> ResponseFuture<F> {
        ResponseFuture {
            kind: Kind::Reject {
                message: Some(message),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ContextBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Call { future, end, span } => {
                let result = {
                    let _entered = span.enter();
                    ready!(future.poll(cx))
                };
                let end = end.take().expect("ResponseFuture polled after completion");
                Poll::Ready(answer(result, end))
            }
            KindProj::Reject { message } => {
                let message = message
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Ok(bad_request(message)))
            }
        }
    }
}

/// The handler's answer, its body keeping `end` until the last frame.
#[inline]
fn answer<B, E>(
    result: Result<Response<B>, E>,
    end: RequestEnd,
) -> Result<Response<ContextBody<B>>, E> {
    match result {
        Ok(response) => {
            let end = end.into_body_end(response.status());
            Ok(response.map(|body| ContextBody::new(body, end)))
        }
        Err(error) => {
            // The handler is over; the connection reports the error.
            end.complete();
            Err(error)
        }
    }
}

fn bad_request<B>(message: String) -> Response<ContextBody<B>> {
    let mut response = Response::new(ContextBody::text(message));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::future::Ready;
    use tower::{service_fn, ServiceExt};

    /// Serves `request` under `layer`: the handler's context, or the
    /// status of an answer the handler never saw.
    async fn context_of(layer: ContextLayer, request: Request<()>) -> Result<Context, StatusCode> {
        let handler = service_fn(|request: Request<()>| -> Ready<Result<_, Infallible>> {
            let mut response = Response::new(String::new());
            if let Some(ctx) = request.extensions().get::<Context>() {
                response.extensions_mut().insert(ctx.clone());
            }
            std::future::ready(Ok(response))
        });
        let response = layer.layer(handler).oneshot(request).await.unwrap();
        let ctx = response.extensions().get::<Context>().cloned();
        ctx.ok_or(response.status())
    }

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/");
        for &(name, value) in headers {
            builder = builder.header(name, value);
        }
        builder.body(()).unwrap()
    }

    #[tokio::test]
    async fn headers_are_found_among_many_and_with_long_names() {
        let long = "x-".to_string() + &"a".repeat(70);
        let layer = ContextLayer::new(Context::background())
            .forwarded_headers(&[HeaderName::try_from(long.as_str()).unwrap()]);
        // More headers than the walk looks at: looked up directly.
        let many: Vec<(String, String)> = (0..40)
            .map(|i| (format!("x-filler-{i}"), "1".into()))
            .collect();
        let mut headers: Vec<(&str, &str)> =
            many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        headers.push(("grpc-timeout", "1S"));
        headers.push((long.as_str(), "kept"));
        for headers in [&headers[..], &headers[38..]] {
            let ctx = context_of(layer.clone(), request(headers)).await.unwrap();
            assert!(ctx.remaining().unwrap() <= Duration::from_secs(1));
            let kept = ctx
                .value::<ForwardHeaders>()
                .expect("the long header, forwarded");
            assert_eq!(kept.get(&long).unwrap(), "kept");
        }
        // Names of the same length as a watched one, but other names.
        let ctx = context_of(
            layer.clone(),
            request(&[("grpc-timeoux", "1x"), ("x-request-ie", "r")]),
        )
        .await
        .unwrap();
        assert_eq!(ctx.remaining(), None);
        assert!(ctx.value::<ForwardHeaders>().is_none());
        // A malformed deadline is still seen, and rejected.
        let rejected = context_of(layer, request(&[("host", "a"), ("grpc-timeout", "1x")])).await;
        assert_eq!(rejected.unwrap_err(), StatusCode::BAD_REQUEST);
    }

    /// A request's future and its response body carry the handler's own
    /// plus three words (the end of the request), not more, besides the
    /// request's span with feature `tracing`: over HTTP/2
    /// hyper runs each stream as a task whose allocation, aligned to 128
    /// bytes, holds the future, and one word more made it 640 bytes
    /// instead of 512, which cost about 2% of the server's throughput
    /// (BENCHMARKS.md, "A smaller request end").
    #[cfg(feature = "axum")]
    #[test]
    fn a_request_carries_three_words_more_than_its_handler() {
        use std::mem::size_of;
        type Req = Request<hyper::body::Incoming>;
        type Router = axum::Router;
        type Handler = <Router as Service<Req>>::Future;
        const WORDS: usize = 3 * size_of::<usize>();
        assert_eq!(size_of::<RequestEnd>(), WORDS);
        let carried = size_of::<Handler>() + WORDS + size_of::<RequestSpan>();
        let future = size_of::<ConnectionFuture<Router, Req, Handler>>();
        assert!(future <= carried, "{future} bytes");
        assert!(size_of::<ResponseFuture<Handler>>() <= carried);
        let body = size_of::<ContextBody<axum::body::Body>>();
        assert!(
            body <= size_of::<axum::body::Body>() + WORDS,
            "{body} bytes"
        );
    }
}
