//! What the server layer adds to every request for `tracing` and
//! OpenTelemetry. With both features off, every type here is empty and every
//! call compiles to nothing.

use ctxkit::Context;
use http::Request;

/// The layer's configuration for the two features.
#[derive(Clone, Debug, Default)]
pub(crate) struct Telemetry {
    /// The propagator to read incoming headers with; the global one if
    /// `None`.
    #[cfg(feature = "opentelemetry")]
    pub(crate) propagator:
        Option<std::sync::Arc<dyn opentelemetry::propagation::TextMapPropagator + Send + Sync>>,
}

impl Telemetry {
    /// `ctx` with the request's `opentelemetry::Context` and span as values,
    /// and the span for the handler's future to run in.
    #[inline]
    pub(crate) fn request_context<B>(
        &self,
        request: &Request<B>,
        ctx: Context,
    ) -> (Context, RequestSpan) {
        #[cfg(feature = "opentelemetry")]
        let ctx = crate::otel::with_extracted(ctx, request.headers(), self.propagator.as_deref());
        #[cfg(feature = "tracing")]
        {
            let span = crate::trace::request_span(request, &ctx);
            if span.is_disabled() {
                return (ctx, RequestSpan { span });
            }
            (ctx.with_value(span.clone()), RequestSpan { span })
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = request;
            (ctx, RequestSpan {})
        }
    }
}

/// The request's span, entered while the handler's future is polled.
pub(crate) struct RequestSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

#[cfg(feature = "tracing")]
impl RequestSpan {
    #[inline]
    pub(crate) fn enter(&self) -> tracing::span::Entered<'_> {
        self.span.enter()
    }
}

/// What entering no span gives: nothing.
#[cfg(not(feature = "tracing"))]
pub(crate) struct NotEntered;

#[cfg(not(feature = "tracing"))]
impl RequestSpan {
    #[inline(always)]
    pub(crate) fn enter(&self) -> NotEntered {
        NotEntered
    }
}
