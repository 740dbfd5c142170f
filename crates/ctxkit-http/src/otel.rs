//! OpenTelemetry context propagation over HTTP headers (feature
//! `opentelemetry`).
//!
//! [`HeaderExtractor`] and [`HeaderInjector`] implement OpenTelemetry's
//! [`Extractor`] and [`Injector`] over an [`http::HeaderMap`], so that any
//! [`TextMapPropagator`] (`TraceContextPropagator`, `BaggagePropagator`
//! from `opentelemetry_sdk::propagation`, or a
//! [`TextMapCompositePropagator`](opentelemetry::propagation::TextMapCompositePropagator)
//! of them) reads and writes `traceparent`, `tracestate` and `baggage`.
//!
//! Across ctxkit's layers, the `opentelemetry::Context` travels as a value
//! of the ctxkit [`Context`]:
//!
//! - [`ContextLayer`](crate::ContextLayer) (feature `server`) extracts it
//!   from every request's headers, with the global propagator
//!   (`opentelemetry::global::set_text_map_propagator`) or the one given to
//!   [`ContextLayer::propagator`](crate::ContextLayer::propagator), and keeps
//!   it in the request's context: `ctx.value::<opentelemetry::Context>()`
//!   (when the caller sent a span context or baggage; otherwise the request
//!   holds none and pays for no value);
//! - the client helpers (feature `client`: [`client::PropagateLayer`](crate::client::PropagateLayer),
//!   `send_ctx`) inject the `opentelemetry::Context` they find in the
//!   request's ctxkit context, with the global propagator ([`inject`]).
//!
//! A handler that starts a span of its own puts the new
//! `opentelemetry::Context` in the ctxkit context it calls downstream with,
//! so that the next hop sees its span as the parent:
//!
//! ```
//! use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
//! use opentelemetry_sdk::trace::SdkTracer;
//!
//! fn downstream(ctx: &ctxkit::Context, tracer: &SdkTracer) -> ctxkit::Context {
//!     let parent = ctx.value::<opentelemetry::Context>().cloned().unwrap_or_default();
//!     let span = tracer.start_with_context("fetch the price", &parent);
//!     ctx.with_value(parent.with_span(span)) // what `send_ctx` and the gRPC client send
//! }
//! # let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! # let ctx = downstream(&ctxkit::Context::background(), &provider.tracer("doc"));
//! # assert!(ctx.value::<opentelemetry::Context>().unwrap().has_active_span());
//! ```
//!
//! With the `tracing-opentelemetry` bridge, the same context is the parent
//! to give the request's [`tracing::Span`] (feature `tracing`) with
//! `span.set_parent(..)`.

use ctxkit::Context;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;

/// OpenTelemetry's [`Extractor`] over an [`http::HeaderMap`]: what a
/// [`TextMapPropagator`] reads incoming context from.
///
/// Header values are untrusted input: a value that is not UTF-8 is skipped
/// (as if absent), and no lookup panics, whatever the key or the bytes.
///
/// ```
/// use ctxkit_http::otel::HeaderExtractor;
/// use opentelemetry::propagation::{Extractor, TextMapPropagator};
/// use opentelemetry::trace::TraceContextExt;
/// use opentelemetry_sdk::propagation::TraceContextPropagator;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// assert_eq!(HeaderExtractor(&headers).keys(), ["traceparent"]);
///
/// let cx = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
/// assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    /// The first value of `key` that is UTF-8 (header names are
    /// case-insensitive; an invalid name is absent).
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get_all(key)
            .iter()
            .find_map(|value| std::str::from_utf8(value.as_bytes()).ok())
    }

    /// Every header name, once each, in lower case.
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    /// Every UTF-8 value of `key`, in order; `None` when there is none.
    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// OpenTelemetry's [`Injector`] over an [`http::HeaderMap`]: what a
/// [`TextMapPropagator`] writes outgoing context to.
///
/// `set` replaces every earlier value of the header. A key that is not a
/// valid header name, or a value that is not a valid header value, is
/// skipped: a propagator never makes a request unsendable.
///
/// ```
/// use ctxkit_http::otel::HeaderInjector;
/// use opentelemetry::baggage::BaggageExt;
/// use opentelemetry::propagation::{Injector, TextMapPropagator};
/// use opentelemetry::KeyValue;
/// use opentelemetry_sdk::propagation::BaggagePropagator;
///
/// let cx = opentelemetry::Context::new().with_baggage([KeyValue::new("tenant", "acme")]);
/// let mut headers = http::HeaderMap::new();
/// BaggagePropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
/// assert_eq!(headers["baggage"], "tenant=acme");
///
/// HeaderInjector(&mut headers).set("Baggage", "tenant=other".to_string());
/// assert_eq!(headers.get_all("baggage").iter().count(), 1); // replaced
/// HeaderInjector(&mut headers).set("bad key", "x".to_string()); // skipped
/// assert_eq!(headers.len(), 1);
/// ```
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // from_bytes lower-cases the name, as HTTP/2 requires.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }

    fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }
}

/// The `opentelemetry::Context` carried by `headers`, read with the global
/// propagator (`opentelemetry::global::set_text_map_propagator`; none is
/// set by default, and then the context is empty).
///
/// It is extracted on top of an empty context, not the thread's current
/// one: a server's caller is the only parent of its request.
///
/// ```
/// use opentelemetry::trace::TraceContextExt;
///
/// opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
/// let mut headers = http::HeaderMap::new();
/// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// let cx = ctxkit_http::otel::extract(&headers);
/// assert!(cx.span().span_context().is_remote());
/// ```
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| extract_with(propagator, headers))
}

/// The `opentelemetry::Context` carried by `headers`, read with
/// `propagator`, on top of an empty context.
///
/// ```
/// use opentelemetry::baggage::BaggageExt;
/// use opentelemetry_sdk::propagation::BaggagePropagator;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("baggage", "tenant=acme".parse().unwrap());
/// let cx = ctxkit_http::otel::extract_with(&BaggagePropagator::new(), &headers);
/// assert_eq!(cx.baggage().get("tenant").unwrap().as_str(), "acme");
/// ```
pub fn extract_with(
    propagator: &dyn TextMapPropagator,
    headers: &HeaderMap,
) -> opentelemetry::Context {
    propagator.extract_with_context(&opentelemetry::Context::new(), &HeaderExtractor(headers))
}

/// Writes the `opentelemetry::Context` that `ctx` holds (as a value) into
/// `headers` with the global propagator. Headers `headers` already has are
/// kept: what a caller set on the request itself wins. Nothing happens
/// when `ctx` holds no `opentelemetry::Context`.
///
/// The client helpers call this before they add the context's
/// [`ForwardHeaders`](crate::ForwardHeaders), so the trace context of the
/// handler's own span is sent rather than the raw `traceparent` the request
/// came with.
///
/// ```
/// use opentelemetry::baggage::BaggageExt;
/// use opentelemetry::KeyValue;
///
/// opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::BaggagePropagator::new());
/// let cx = opentelemetry::Context::new().with_baggage([KeyValue::new("tenant", "acme")]);
/// let ctx = ctxkit::Context::background().with_value(cx);
/// let mut headers = http::HeaderMap::new();
/// ctxkit_http::otel::inject(&ctx, &mut headers);
/// assert_eq!(headers["baggage"], "tenant=acme");
/// ```
pub fn inject(ctx: &Context, headers: &mut HeaderMap) {
    if let Some(cx) = ctx.value::<opentelemetry::Context>() {
        opentelemetry::global::get_text_map_propagator(|propagator| {
            inject_missing(propagator, cx, headers);
        });
    }
}

/// [`inject`] with `propagator` instead of the global one.
///
/// ```
/// use opentelemetry::baggage::BaggageExt;
/// use opentelemetry::KeyValue;
/// use opentelemetry_sdk::propagation::BaggagePropagator;
///
/// let cx = opentelemetry::Context::new().with_baggage([KeyValue::new("tenant", "acme")]);
/// let ctx = ctxkit::Context::background().with_value(cx);
/// let mut headers = http::HeaderMap::new();
/// headers.insert("baggage", "set=by-caller".parse().unwrap());
/// ctxkit_http::otel::inject_with(&BaggagePropagator::new(), &ctx, &mut headers);
/// assert_eq!(headers["baggage"], "set=by-caller"); // kept
/// ```
pub fn inject_with(propagator: &dyn TextMapPropagator, ctx: &Context, headers: &mut HeaderMap) {
    if let Some(cx) = ctx.value::<opentelemetry::Context>() {
        inject_missing(propagator, cx, headers);
    }
}

/// `ctx` with the `opentelemetry::Context` that `headers` carry as a
/// value, read with `propagator` (the global one when `None`): what
/// ctxkit's server layers, HTTP and gRPC, do with every request. A request
/// without a span context or baggage gets no value (see
/// [`carries_anything`]) and `ctx` comes back as it was.
///
/// ```
/// use opentelemetry::baggage::BaggageExt;
/// use opentelemetry_sdk::propagation::BaggagePropagator;
///
/// let mut headers = http::HeaderMap::new();
/// let propagator = BaggagePropagator::new();
/// let ctx = ctxkit_http::otel::with_extracted(ctxkit::Context::background(), &headers, Some(&propagator));
/// assert!(ctx.value::<opentelemetry::Context>().is_none()); // nothing sent, nothing kept
///
/// headers.insert("baggage", "tenant=acme".parse().unwrap());
/// let ctx = ctxkit_http::otel::with_extracted(ctx, &headers, Some(&propagator));
/// let cx = ctx.value::<opentelemetry::Context>().unwrap();
/// assert_eq!(cx.baggage().get("tenant").unwrap().as_str(), "acme");
/// ```
pub fn with_extracted(
    ctx: Context,
    headers: &HeaderMap,
    propagator: Option<&(dyn TextMapPropagator + Send + Sync)>,
) -> Context {
    let cx = match propagator {
        Some(propagator) => extract_with(propagator, headers),
        None => extract(headers),
    };
    if carries_anything(&cx) {
        ctx.with_value(cx)
    } else {
        ctx
    }
}

/// Whether `cx` carries a span context or baggage: what the server layers
/// keep. Another propagator's own values in an otherwise empty context are
/// not seen (OpenTelemetry's `Context` cannot list them).
///
/// ```
/// use opentelemetry::baggage::BaggageExt;
/// use opentelemetry::KeyValue;
///
/// assert!(!ctxkit_http::otel::carries_anything(&opentelemetry::Context::new()));
/// let cx = opentelemetry::Context::new().with_baggage([KeyValue::new("tenant", "acme")]);
/// assert!(ctxkit_http::otel::carries_anything(&cx));
/// ```
pub fn carries_anything(cx: &opentelemetry::Context) -> bool {
    cx.has_active_span() || !cx.baggage().is_empty()
}

fn inject_missing(
    propagator: &dyn TextMapPropagator,
    cx: &opentelemetry::Context,
    headers: &mut HeaderMap,
) {
    let mut injected = HeaderMap::new();
    propagator.inject_context(cx, &mut HeaderInjector(&mut injected));
    // A HeaderMap's `into_iter` yields a name only with the first of its
    // values; the injector set one value per name.
    for (name, value) in injected {
        if let Some(name) = name {
            if !headers.contains_key(&name) {
                headers.insert(name, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn non_utf8() -> HeaderValue {
        HeaderValue::from_bytes(b"\xff\xfe").unwrap()
    }

    #[test]
    fn get_skips_values_that_are_not_utf8() {
        let mut headers = HeaderMap::new();
        headers.append("baggage", non_utf8());
        headers.append("baggage", HeaderValue::from_static("k=v"));
        headers.insert("traceparent", non_utf8());
        let extractor = HeaderExtractor(&headers);
        assert_eq!(extractor.get("baggage"), Some("k=v"));
        assert_eq!(extractor.get("traceparent"), None);
        assert_eq!(extractor.get_all("baggage"), Some(vec!["k=v"]));
        assert_eq!(extractor.get_all("traceparent"), None);
    }

    #[test]
    fn get_accepts_utf8_beyond_ascii_and_any_key() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-name",
            HeaderValue::from_bytes("café".as_bytes()).unwrap(),
        );
        let extractor = HeaderExtractor(&headers);
        assert_eq!(extractor.get("X-Name"), Some("café"));
        assert_eq!(extractor.get("not a header name"), None);
        assert_eq!(extractor.get(""), None);
        assert_eq!(extractor.get("\u{0}\u{ff}"), None);
        assert_eq!(extractor.get_all("absent"), None);
    }

    #[test]
    fn keys_lists_each_name_once() {
        let mut headers = HeaderMap::new();
        headers.append("baggage", HeaderValue::from_static("a=1"));
        headers.append("baggage", HeaderValue::from_static("b=2"));
        headers.insert("traceparent", HeaderValue::from_static("x"));
        let extractor = HeaderExtractor(&headers);
        let mut keys = extractor.keys();
        keys.sort_unstable();
        assert_eq!(keys, ["baggage", "traceparent"]);
        assert_eq!(
            HeaderExtractor(&headers).get_all("baggage"),
            Some(vec!["a=1", "b=2"])
        );
        assert!(HeaderExtractor(&HeaderMap::new()).keys().is_empty());
    }

    #[test]
    fn set_overwrites_every_earlier_value() {
        let mut headers = HeaderMap::new();
        headers.append("baggage", HeaderValue::from_static("a=1"));
        headers.append("baggage", HeaderValue::from_static("b=2"));
        HeaderInjector(&mut headers).set("BAGGAGE", "c=3".to_string());
        let values: Vec<_> = headers.get_all("baggage").iter().collect();
        assert_eq!(values, ["c=3"]);
    }

    #[test]
    fn set_skips_what_is_not_a_header() {
        let mut headers = HeaderMap::new();
        let mut injector = HeaderInjector(&mut headers);
        injector.set("with space", "v".to_string());
        injector.set("", "v".to_string());
        injector.set("ok", "line\nbreak".to_string());
        injector.reserve(4);
        assert!(headers.is_empty());
    }

    #[test]
    fn inject_keeps_what_the_request_has() {
        #[derive(Debug)]
        struct Fixed;
        impl TextMapPropagator for Fixed {
            fn inject_context(&self, _: &opentelemetry::Context, injector: &mut dyn Injector) {
                injector.set("traceparent", "from-context".to_string());
                injector.set("baggage", "from=context".to_string());
            }
            fn extract_with_context(
                &self,
                cx: &opentelemetry::Context,
                _: &dyn Extractor,
            ) -> opentelemetry::Context {
                cx.clone()
            }
            fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
                opentelemetry::propagation::text_map_propagator::FieldIter::new(&[])
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert("baggage", HeaderValue::from_static("set=by-caller"));
        inject_with(&Fixed, &Context::background(), &mut headers);
        assert_eq!(headers.len(), 1, "no opentelemetry::Context: nothing sent");
        let ctx = Context::background().with_value(opentelemetry::Context::new());
        inject_with(&Fixed, &ctx, &mut headers);
        assert_eq!(headers["baggage"], "set=by-caller");
        assert_eq!(headers["traceparent"], "from-context");
    }
}
