//! [`ClientLayer`]: calls that honour the context they are made under.

use crate::{context_status, ForwardHeaders, IntoStatus, Propagation};
use ctxkit::{Context, OwnedDone};
use ctxkit_http::deadline_header::TimeoutHeader;
use http::header::Entry;
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
///   already on the call, e.g. tonic's own, is kept). It is measured when
///   the call enters this layer, above the channel's queue: a call that
///   then waits there (a lazy channel's first connection, a full buffer)
///   gives the server that much more time than its caller has left, where
///   grpc-go measures as it writes the headers. Connect the channel first
///   (`Endpoint::connect`) where that matters; the caller's own deadline
///   still ends the call on time;
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
    // One lookup for both the check and the insert.
    match metadata.entry(GRPC_TIMEOUT) {
        Entry::Occupied(mut set) => {
            let shorter_set = TimeoutHeader::GrpcTimeout
                .decode(set.get().as_bytes())
                .is_ok_and(|set| set <= remaining);
            if !shorter_set {
                if let Some(value) = timeout_value(remaining) {
                    set.insert(value);
                }
            }
        }
        Entry::Vacant(unset) => {
            if let Some(value) = timeout_value(remaining) {
                unset.insert(value);
            }
        }
    }
}

/// `remaining` as a `grpc-timeout` value, written as
/// [`TimeoutHeader::encode`] writes it (grpc-go's encoding: the finest unit
/// whose value, rounded up, fits in 8 digits), but without its formatting
/// machinery and its string, as this runs on every call; `None` when no
/// header can say it (longer than 99,999,999 hours: send none).
fn timeout_value(remaining: Duration) -> Option<HeaderValue> {
    const UNITS: [(u64, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    const MAX_VALUE: u64 = 99_999_999;
    // Past u64 nanoseconds (584 years) only hours can fit, and the codec
    // says whether they do.
    let Ok(nanos) = u64::try_from(remaining.as_nanos()) else {
        let encoded = TimeoutHeader::GrpcTimeout.encode(remaining)?;
        return Some(sensitive(HeaderValue::try_from(encoded).ok()?));
    };
    let (value, unit) = UNITS.iter().find_map(|&(nanos_per_unit, unit)| {
        let value = nanos.div_ceil(nanos_per_unit);
        (value <= MAX_VALUE).then_some((value, unit))
    })?;
    // At most 8 digits and the unit.
    let mut text = [0u8; 9];
    let mut start = text.len() - 1;
    text[start] = unit;
    let mut rest = value;
    loop {
        start -= 1;
        text[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let value = HeaderValue::from_bytes(&text[start..]).expect("digits and a unit");
    Some(sensitive(value))
}

/// `value`, marked never to be indexed: a `grpc-timeout` changes with every
/// call, and HPACK indexing it would only churn both ends' dynamic tables
/// (and cost CPU on each).
fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

pin_project! {
    /// The response future of [`ClientService`]: the transport's, raced
    /// against the call's context. When the context ends first, the
    /// transport's future is dropped at once, which resets the stream, and
    /// the call fails with the context's status.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_grpc::{ClientFuture, ClientLayer};
    /// use std::future::Pending;
    /// use std::task::Poll;
    /// use tonic::{Code, Status};
    /// use tower_layer::Layer;
    /// use tower_service::Service;
    ///
    /// /// A transport whose calls never get an answer.
    /// struct Silent;
    ///
    /// impl Service<http::Request<()>> for Silent {
    ///     type Response = http::Response<()>;
    ///     type Error = std::convert::Infallible;
    ///     type Future = Pending<Result<http::Response<()>, Self::Error>>;
    ///
    ///     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
    ///         Poll::Ready(Ok(()))
    ///     }
    ///
    ///     fn call(&mut self, _: http::Request<()>) -> Self::Future {
    ///         std::future::pending()
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut request = http::Request::new(());
    /// request.extensions_mut().insert(ctx.clone()); // what `RequestExt::with_context` does
    /// let call: ClientFuture<_> = ClientLayer::new().layer(Silent).call(request);
    /// cancel.cancel(); // the caller gives up: the call ends, the stream is reset
    /// let Err(error) = call.await else { panic!("answered") };
    /// let status = error.downcast_ref::<Status>().unwrap();
    /// assert_eq!(status.code(), Code::Cancelled);
    /// # });
    /// ```
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
                // The body takes over the registration for the context's
                // end, if the call made one: one per call, not two.
                Ok(response) => {
                    let done = this.done.take();
                    Ok(response.map(|body| ClientBody::new(body, ctx, done)))
                }
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
    // No check before: a context already ended makes the wait ready at once.
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
    ///
    /// ```
    /// use bytes::Bytes;
    /// use ctxkit::Context;
    /// use ctxkit_grpc::{ClientBody, ClientLayer};
    /// use http_body_util::{BodyExt, Full};
    /// use std::future::Ready;
    /// use std::task::Poll;
    /// use tonic::{Code, Status};
    /// use tower_layer::Layer;
    /// use tower_service::Service;
    ///
    /// /// A transport that answers every call with one frame.
    /// struct Answering;
    ///
    /// impl Service<http::Request<()>> for Answering {
    ///     type Response = http::Response<Full<Bytes>>;
    ///     type Error = std::convert::Infallible;
    ///     type Future = Ready<Result<Self::Response, Self::Error>>;
    ///
    ///     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
    ///         Poll::Ready(Ok(()))
    ///     }
    ///
    ///     fn call(&mut self, _: http::Request<()>) -> Self::Future {
    ///         std::future::ready(Ok(http::Response::new(Full::new(Bytes::from_static(b"frame")))))
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut request = http::Request::new(());
    /// request.extensions_mut().insert(ctx);
    /// let response = ClientLayer::new().layer(Answering).call(request).await.unwrap();
    /// let body: ClientBody<Full<Bytes>> = response.into_body();
    /// cancel.cancel(); // before the body is read: it ends with the context's status
    /// let error = body.collect().await.unwrap_err();
    /// assert_eq!(error.downcast_ref::<Status>().unwrap().code(), Code::Cancelled);
    /// # });
    /// ```
    pub struct ClientBody<B> {
        #[pin]
        inner: Option<B>,
        ctx: Option<Context>,
        done: Option<OwnedDone>,
    }
}

impl<B> ClientBody<B> {
    fn new(inner: B, ctx: Option<Context>, done: Option<OwnedDone>) -> ClientBody<B> {
        ClientBody {
            inner: Some(inner),
            ctx,
            done,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(remaining: Duration) -> Option<String> {
        let value = timeout_value(remaining)?;
        assert!(value.is_sensitive());
        Some(value.to_str().unwrap().to_owned())
    }

    #[test]
    fn timeout_values_match_the_codec_at_every_unit_edge() {
        let edges = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(99_999_999),
            Duration::from_nanos(100_000_000),
            Duration::from_nanos(100_000_001),
            Duration::from_millis(99_999_999),
            Duration::from_millis(99_999_999) + Duration::from_nanos(1),
            Duration::from_secs(99_999_999),
            Duration::from_secs(99_999_999 * 60 + 1),
            Duration::from_secs(99_999_999 * 3600),
            Duration::from_secs(99_999_999 * 3600) + Duration::from_nanos(1),
            Duration::from_nanos(u64::MAX),
            Duration::from_nanos(u64::MAX) + Duration::from_nanos(1),
            Duration::MAX,
        ];
        for remaining in edges {
            assert_eq!(
                written(remaining),
                TimeoutHeader::GrpcTimeout.encode(remaining),
                "{remaining:?}"
            );
        }
    }

    #[test]
    fn a_shorter_timeout_already_set_is_kept_and_a_longer_one_replaced() {
        let mut metadata = HeaderMap::new();
        metadata.insert(GRPC_TIMEOUT, HeaderValue::from_static("1S"));
        send_timeout(&mut metadata, Duration::from_secs(5));
        assert_eq!(metadata.get(&GRPC_TIMEOUT).unwrap(), "1S");
        send_timeout(&mut metadata, Duration::from_millis(500));
        assert_eq!(metadata.get(&GRPC_TIMEOUT).unwrap(), "500000u");
        metadata.insert(GRPC_TIMEOUT, HeaderValue::from_static("garbage"));
        send_timeout(&mut metadata, Duration::from_millis(500));
        assert_eq!(metadata.get(&GRPC_TIMEOUT).unwrap(), "500000u");
        assert_eq!(metadata.get_all(&GRPC_TIMEOUT).iter().count(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn timeout_values_match_the_codec(
            secs in prop_oneof![0u64..100, 0u64..20_000_000_000, any::<u64>()],
            nanos in 0u32..1_000_000_000,
        ) {
            let remaining = Duration::new(secs, nanos);
            prop_assert_eq!(written(remaining), TimeoutHeader::GrpcTimeout.encode(remaining));
        }
    }
}
