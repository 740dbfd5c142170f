//! [`ClientLayer`]: calls that honour the context they are made under.

use crate::{context_status, ForwardHeaders, IntoStatus, Propagation};
use ctxkit::{Context, OwnedDone};
use ctxkit_http::deadline_header::TimeoutHeader;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

/// The error type of [`ClientService`], as tonic's clients take it: a
/// [`Status`] inside is what the call returns.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A [`Layer`] for a gRPC client's transport (a
/// [`tonic::transport::Channel`]) that makes every unary and
/// server-streaming call issued under a [`Context`] (one set with
/// [`RequestExt::with_context`](crate::RequestExt::with_context)) behave as
/// grpc-go's calls under a `context.Context`:
///
/// - the remaining deadline is sent as `grpc-timeout`, in the finest unit
///   whose value fits in 8 digits, rounded up (a shorter `grpc-timeout`
///   already on the call, e.g. tonic's own, is kept);
/// - a call under a context that is already done fails at once with
///   `DEADLINE_EXCEEDED` or `CANCELLED`, as the context's `err()` says, and
///   nothing is sent;
/// - when the context ends during the call, the stream is reset
///   (RST_STREAM CANCEL, so the server's handler is cancelled) and the call,
///   or the server stream being read, ends with that same status;
/// - the context's [`ForwardHeaders`] named by the layer's [`Propagation`]
///   are sent as metadata.
///
/// Calls without a context pass through untouched.
///
/// ```
/// use ctxkit_grpc::demo::work_client::WorkClient;
/// use ctxkit_grpc::ClientLayer;
/// use tower_layer::Layer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// let client = WorkClient::new(ClientLayer::new().layer(channel));
/// # let _ = client;
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientLayer {
    propagation: Arc<Propagation>,
}

impl ClientLayer {
    /// Forwards the [default](Propagation::default) values.
    ///
    /// ```
    /// use ctxkit_grpc::ClientLayer;
    /// use tower_layer::Layer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
    /// let service = ClientLayer::new().layer(channel); // what a generated client wraps
    /// # let _ = service;
    /// # }
    /// ```
    pub fn new() -> ClientLayer {
        ClientLayer::default()
    }

    /// Forwards these values instead of the default ones.
    ///
    /// ```
    /// use ctxkit_grpc::{ClientLayer, Propagation};
    ///
    /// // Send the deadline and cancellation, but no values at all.
    /// let layer = ClientLayer::new().propagation(Propagation::none());
    /// # let _ = layer;
    /// ```
    pub fn propagation(mut self, propagation: Propagation) -> ClientLayer {
        self.propagation = Arc::new(propagation);
        self
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService {
            inner,
            propagation: self.propagation.clone(),
        }
    }
}

/// The service [`ClientLayer`] wraps around a client's transport.
///
/// ```
/// use ctxkit_grpc::{ClientLayer, ClientService};
/// use tower_layer::Layer;
///
/// fn wrap<S>(channel: S) -> ClientService<S> {
///     ClientLayer::new().layer(channel) // give this to a generated client's `new`
/// }
/// # let _ = wrap(());
/// ```
#[derive(Clone, Debug)]
pub struct ClientService<S> {
    inner: S,
    propagation: Arc<Propagation>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ClientService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<ClientBody<ResBody>>;
    type Error = BoxError;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some(ctx) = request.extensions().get::<Context>().cloned() else {
            return ClientFuture::running(self.inner.call(request), None);
        };
        if let Some(status) = context_status(&ctx) {
            return ClientFuture::failed(status);
        }
        if let Some(remaining) = ctx.remaining() {
            send_timeout(request.headers_mut(), remaining);
        }
        // Before the forwarded values: the context's own trace context (the
        // handler's span) wins over the raw metadata the call came with.
        #[cfg(feature = "opentelemetry")]
        ctxkit_http::otel::inject(&ctx, request.headers_mut());
        if let Some(values) = ForwardHeaders::of(&ctx) {
            self.propagation.forward(values, request.headers_mut());
        }
        ClientFuture::running(self.inner.call(request), Some(ctx))
    }
}

/// The header's name, parsed once (a `&str` name is parsed on every lookup).
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static(TimeoutHeader::GrpcTimeout.name());

/// Sets `grpc-timeout` to `remaining`, unless a shorter one is already set.
fn send_timeout(metadata: &mut HeaderMap, remaining: Duration) {
    let header = TimeoutHeader::GrpcTimeout;
    let shorter_set = metadata
        .get(&GRPC_TIMEOUT)
        .and_then(|set| header.decode(set.as_bytes()).ok())
        .is_some_and(|set| set <= remaining);
    if shorter_set {
        return;
    }
    // `None`: longer than 99,999,999 hours, which no header can say.
    if let Some(encoded) = header.encode(remaining) {
        let mut value =
            HeaderValue::try_from(encoded).expect("digits and a unit are a header value");
        // A value that changes with every call: HPACK indexing it would
        // only churn both ends' dynamic tables (and cost CPU on each).
        value.set_sensitive(true);
        metadata.insert(GRPC_TIMEOUT, value);
    }
}

pin_project! {
    /// The response future of [`ClientService`]: the transport's, raced
    /// against the call's context. When the context ends first, the
    /// transport's future is dropped at once, which resets the stream, and
    /// the call fails with the context's status.
    pub struct ClientFuture<F> {
        #[pin]
        inner: Option<F>,
        ctx: Option<Context>,
        done: Option<OwnedDone>,
        failed: Option<Status>,
    }
}

impl<F> ClientFuture<F> {
    fn running(inner: F, ctx: Option<Context>) -> ClientFuture<F> {
        ClientFuture {
            inner: Some(inner),
            ctx,
            done: None,
            failed: None,
        }
    }

    fn failed(status: Status) -> ClientFuture<F> {
        ClientFuture {
            inner: None,
            ctx: None,
            done: None,
            failed: Some(status),
        }
    }
}

impl<F, ResBody, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<ClientBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            let status = this
                .failed
                .take()
                .expect("ClientFuture polled after completion");
            return Poll::Ready(Err(status.into()));
        };
        if let Poll::Ready(result) = inner.poll(cx) {
            this.inner.set(None);
            let ctx = this.ctx.take();
            return Poll::Ready(match result {
                Ok(response) => Ok(response.map(|body| ClientBody::new(body, ctx))),
                Err(error) => Err(over(ctx.as_ref()).map_or_else(|| error.into(), Into::into)),
            });
        }
        match ended(this.ctx.as_ref(), this.done, cx) {
            Some(status) => {
                this.inner.set(None); // resets the stream
                Poll::Ready(Err(status.into()))
            }
            None => Poll::Pending,
        }
    }
}

/// The context's status if it has ended or its deadline has passed.
///
/// tonic's channel runs a timer of its own on the `grpc-timeout` this layer
/// sends, and fails the call with `CANCELLED` ("Timeout expired", tonic
/// #1826) when it fires; it fires no earlier than the context's deadline
/// (the header is rounded up and read after the context's clock started),
/// so an error that comes once the deadline has passed is the deadline's,
/// `DEADLINE_EXCEEDED`, as grpc-go reports it.
fn over(ctx: Option<&Context>) -> Option<Status> {
    let ctx = ctx?;
    context_status(ctx).or_else(|| {
        let passed = ctx.deadline()? <= Instant::now();
        passed.then(|| ctxkit::Error::DeadlineExceeded.into_status())
    })
}

/// The status of the call if its context has ended; otherwise registers
/// the task to be woken when it ends.
fn ended(
    ctx: Option<&Context>,
    done: &mut Option<OwnedDone>,
    cx: &mut std::task::Context<'_>,
) -> Option<Status> {
    let ctx = ctx?;
    if let Some(status) = context_status(ctx) {
        return Some(status);
    }
    let done = done.get_or_insert_with(|| ctx.done_owned());
    match Pin::new(done).poll(cx) {
        Poll::Ready(_) => context_status(ctx),
        Poll::Pending => None,
    }
}

pin_project! {
    /// The response body of a call made through [`ClientService`]: the
    /// transport's, until the call's context ends; then the body is dropped
    /// (resetting the stream) and its last frame is the context's status as
    /// an error, which tonic returns from the call or the stream.
    pub struct ClientBody<B> {
        #[pin]
        inner: Option<B>,
        ctx: Option<Context>,
        done: Option<OwnedDone>,
    }
}

impl<B> ClientBody<B> {
    fn new(inner: B, ctx: Option<Context>) -> ClientBody<B> {
        ClientBody {
            inner: Some(inner),
            ctx,
            done: None,
        }
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        // Checked first: a stream that keeps sending still stops.
        let status = match this.ctx.as_ref().and_then(context_status) {
            Some(status) => status,
            None => match inner.poll_frame(cx) {
                Poll::Ready(Some(Err(error))) => {
                    let status = over(this.ctx.as_ref());
                    return Poll::Ready(Some(Err(status.map_or_else(|| error.into(), Into::into))));
                }
                Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
                Poll::Pending => match ended(this.ctx.as_ref(), this.done, cx) {
                    Some(status) => status,
                    None => return Poll::Pending,
                },
            },
        };
        this.inner.set(None); // resets the stream
        Poll::Ready(Some(Err(status.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}
