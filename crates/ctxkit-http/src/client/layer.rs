//! [`PropagateLayer`]: the client helper as a tower layer, for any
//! `tower::Service<http::Request<_>>` client.

use super::error::ClientError;
use super::propagation::Propagation;
use ctxkit::{Context, OwnedDone};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// A tower [`Layer`] for HTTP clients: each request that carries a
/// [`Context`] in its extensions
///
/// - fails at once with the context's error, sending nothing, if the
///   context is already done;
/// - carries the remaining deadline and the forwarded values
///   ([`Propagation`]);
/// - is aborted (its inner future dropped) when the context ends before
///   the response head arrives, and its response body then fails with the
///   context's error when the context ends while it is read.
///
/// A request without a context passes through untouched.
///
/// ```
/// use ctxkit_http::client::{ClientError, PropagateLayer};
/// use ctxkit::Context;
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let inner = tower::service_fn(|request: http::Request<String>| async move {
///     let sent = request.headers().get("connect-timeout-ms").is_some();
///     Ok::<_, std::convert::Infallible>(http::Response::new(format!("deadline sent: {sent}")))
/// });
/// let mut client = tower::ServiceBuilder::new().layer(PropagateLayer::default()).service(inner);
///
/// let (ctx, cancel) = Context::background().with_timeout(std::time::Duration::from_secs(5));
/// let mut request = http::Request::new(String::new());
/// request.extensions_mut().insert(ctx.clone());
/// let response = client.ready().await.unwrap().call(request).await.unwrap();
/// assert_eq!(response.into_body().into_inner(), "deadline sent: true");
///
/// cancel.cancel();
/// let mut request = http::Request::new(String::new());
/// request.extensions_mut().insert(ctx);
/// let error = client.ready().await.unwrap().call(request).await.unwrap_err();
/// assert_eq!(error.context_error(), Some(ctxkit::Error::Canceled));
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct PropagateLayer {
    propagation: Arc<Propagation>,
}

impl PropagateLayer {
    /// A layer that propagates as `propagation` says.
    ///
    /// ```
    /// use ctxkit_http::client::{PropagateLayer, Propagation};
    /// use ctxkit_http::deadline_header::TimeoutHeader;
    ///
    /// // Only grpc-timeout, for a gRPC-speaking backend.
    /// let layer = PropagateLayer::new(Propagation::new().deadline_headers(&[TimeoutHeader::GrpcTimeout]));
    /// # let _ = layer;
    /// ```
    pub fn new(propagation: Propagation) -> PropagateLayer {
        PropagateLayer {
            propagation: Arc::new(propagation),
        }
    }
}

impl<S> Layer<S> for PropagateLayer {
    type Service = PropagateService<S>;

    fn layer(&self, inner: S) -> PropagateService<S> {
        PropagateService {
            inner,
            propagation: self.propagation.clone(),
        }
    }
}

/// The [`Service`] of [`PropagateLayer`]: see there.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::client::{PropagateLayer, PropagateService, Propagation};
/// use ctxkit_http::deadline_header::TimeoutHeader;
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use tower::{Layer, Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // The backend answers with the grpc-timeout header it received, if any.
/// let backend = tower::service_fn(|request: http::Request<()>| async move {
///     Ok::<_, Infallible>(http::Response::new(request.headers().get("grpc-timeout").cloned()))
/// });
/// let grpc_only = Propagation::new().deadline_headers(&[TimeoutHeader::GrpcTimeout]);
/// let mut client: PropagateService<_> = PropagateLayer::new(grpc_only).layer(backend);
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(10));
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(ctx);
/// let response = client.ready().await.unwrap().call(request).await.unwrap();
/// let sent = response.into_body().into_inner().expect("a grpc-timeout header");
/// let budget = TimeoutHeader::GrpcTimeout.decode(sent.as_bytes()).unwrap();
/// assert!(budget <= Duration::from_secs(10), "what is left, never more");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PropagateService<S> {
    inner: S,
    propagation: Arc<Propagation>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for PropagateService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ClientBody<ResB>>;
    type Error = ClientError<S::Error>;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ClientError::Inner)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let Some(ctx) = request.extensions().get::<Context>().cloned() else {
            return ClientFuture::new(self.inner.call(request), None);
        };
        if self.propagation.apply(&ctx, request.headers_mut()).is_err() {
            return ClientFuture::failed(ClientError::from_context(&ctx));
        }
        ClientFuture::new(self.inner.call(request), Some(ctx))
    }
}

pin_project! {
    /// The future of [`PropagateService`]: the inner response, or the
    /// context's error if the context ends first.
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use ctxkit_http::client::{ClientFuture, PropagateLayer};
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use tower::{Layer, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // A backend that never answers.
    /// let backend = tower::service_fn(|_: http::Request<String>| {
    ///     std::future::pending::<Result<http::Response<String>, Infallible>>()
    /// });
    /// let mut client = PropagateLayer::default().layer(backend);
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    /// let mut request = http::Request::new(String::new());
    /// request.extensions_mut().insert(ctx);
    /// let call: ClientFuture<_> = client.ready().await.unwrap().call(request);
    /// // The deadline ends the wait, and dropping the backend's future aborts the request.
    /// let error = call.await.unwrap_err();
    /// assert_eq!(error.context_error(), Some(Error::DeadlineExceeded));
    /// # }
    /// ```
    pub struct ClientFuture<F> {
        #[pin]
        future: Option<F>,
        watch: Option<Watch>,
        failed: Option<ClientError<()>>,
    }
}

impl<F> ClientFuture<F> {
    fn new(future: F, ctx: Option<Context>) -> ClientFuture<F> {
        ClientFuture {
            future: Some(future),
            watch: ctx.map(Watch::new),
            failed: None,
        }
    }

    fn failed(error: ClientError<()>) -> ClientFuture<F> {
        ClientFuture {
            future: None,
            watch: None,
            failed: Some(error),
        }
    }
}

impl<F, B, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ClientBody<B>>, ClientError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(failed) = this.failed.take() {
            return Poll::Ready(Err(failed.with_inner()));
        }
        if let Some(ended) = this.watch.as_mut().and_then(|watch| watch.ended(cx)) {
            // Dropping the inner future aborts the request.
            this.future.set(None);
            return Poll::Ready(Err(ended));
        }
        let future = this
            .future
            .as_pin_mut()
            .expect("ClientFuture polled after completion");
        let response = std::task::ready!(future.poll(cx)).map_err(ClientError::Inner)?;
        let watch = this.watch.take();
        Poll::Ready(Ok(response.map(|body| ClientBody { body, watch })))
    }
}

/// A request's context, watched for its end.
struct Watch {
    ctx: Context,
    done: OwnedDone,
}

impl Watch {
    fn new(ctx: Context) -> Watch {
        let done = ctx.done_owned();
        Watch { ctx, done }
    }

    /// The context's error once it has ended; until then, `cx` is woken
    /// when it does.
    fn ended<E>(&mut self, cx: &mut TaskContext<'_>) -> Option<ClientError<E>> {
        Pin::new(&mut self.done)
            .poll(cx)
            .is_ready()
            .then(|| ClientError::from_context(&self.ctx))
    }
}

impl ClientError<()> {
    /// The same context error, for any inner error type.
    fn with_inner<E>(self) -> ClientError<E> {
        match self {
            ClientError::Context { error, cause } => ClientError::Context { error, cause },
            ClientError::Inner(()) => unreachable!("only context errors are made early"),
        }
    }
}

pin_project! {
    /// The response body of [`PropagateService`]: the inner body, failing
    /// with the context's error as soon as the context ends while it is read.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use ctxkit::{Context, Error};
    /// use ctxkit_http::client::{ClientBody, PropagateLayer};
    /// use futures::StreamExt;
    /// use http_body::Frame;
    /// use http_body_util::{BodyExt, StreamBody};
    /// use std::convert::Infallible;
    /// use tower::{Layer, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // A backend that sends the head and one chunk of the body, then stalls.
    /// let backend = tower::service_fn(|_: http::Request<String>| async {
    ///     let first = Frame::data(Bytes::from("first"));
    ///     let chunks = futures::stream::iter([Ok::<_, Infallible>(first)]).chain(futures::stream::pending());
    ///     Ok::<_, Infallible>(http::Response::new(StreamBody::new(chunks)))
    /// });
    /// let mut client = PropagateLayer::default().layer(backend);
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut request = http::Request::new(String::new());
    /// request.extensions_mut().insert(ctx);
    /// let response = client.ready().await.unwrap().call(request).await.unwrap();
    /// let mut body: ClientBody<_> = response.into_body();
    /// let first = body.frame().await.unwrap().unwrap();
    /// assert_eq!(first.into_data().unwrap(), "first");
    ///
    /// // The next read would wait forever: another task's cancel ends it.
    /// let canceller = tokio::spawn(async move { cancel.cancel() });
    /// let error = body.frame().await.unwrap().unwrap_err();
    /// assert_eq!(error.context_error(), Some(Error::Canceled));
    /// canceller.await.unwrap();
    /// # }
    /// ```
    pub struct ClientBody<B> {
        #[pin]
        body: B,
        watch: Option<Watch>,
    }
}

impl<B> ClientBody<B> {
    /// The inner body (which the context no longer watches).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use ctxkit::Context;
    /// use ctxkit_http::client::PropagateLayer;
    /// use http_body_util::{BodyExt, Full};
    /// use std::convert::Infallible;
    /// use tower::{Layer, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let backend = tower::service_fn(|_: http::Request<String>| async {
    ///     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("all of it"))))
    /// });
    /// let mut client = PropagateLayer::default().layer(backend);
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut request = http::Request::new(String::new());
    /// request.extensions_mut().insert(ctx);
    /// let response = client.ready().await.unwrap().call(request).await.unwrap();
    /// let body: Full<Bytes> = response.into_body().into_inner();
    /// cancel.cancel();
    /// // Read to the end: the context no longer watches it.
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "all of it");
    /// # }
    /// ```
    pub fn into_inner(self) -> B {
        self.body
    }
}

impl<B: Body> Body for ClientBody<B> {
    type Data = B::Data;
    type Error = ClientError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.project();
        if let Some(ended) = this.watch.as_mut().and_then(|watch| watch.ended(cx)) {
            return Poll::Ready(Some(Err(ended)));
        }
        this.body
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map_err(ClientError::Inner)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ClientBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBody")
            .field("body", &self.body)
            .field("watched", &self.watch.is_some())
            .finish()
    }
}
