//! What the server layer adds to every call for `tracing` and
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
    /// `ctx` with the call's `opentelemetry::Context` and span as values,
    /// and the span for the handler's future to run in.
    #[inline]
    pub(crate) fn call_context<B>(
        &self,
        request: &Request<B>,
        ctx: Context,
    ) -> (Context, CallSpan) {
        #[cfg(feature = "opentelemetry")]
        let ctx =
            ctxkit_http::otel::with_extracted(ctx, request.headers(), self.propagator.as_deref());
        #[cfg(feature = "tracing")]
        {
            let span = crate::trace::call_span(request);
            if span.is_disabled() {
                return (ctx, CallSpan { span });
            }
            (ctx.with_value(span.clone()), CallSpan { span })
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = request;
            (ctx, CallSpan {})
        }
    }
}

/// The call's span, entered while the handler's future is polled.
pub(crate) struct CallSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

#[cfg(feature = "tracing")]
impl CallSpan {
    #[inline]
    pub(crate) fn enter(&self) -> tracing::span::Entered<'_> {
        self.span.enter()
    }
}

/// What entering no span gives: nothing.
#[cfg(not(feature = "tracing"))]
pub(crate) struct NotEntered;

#[cfg(not(feature = "tracing"))]
impl CallSpan {
    #[inline(always)]
    pub(crate) fn enter(&self) -> NotEntered {
        NotEntered
    }
}
