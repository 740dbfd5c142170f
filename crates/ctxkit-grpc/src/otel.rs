//! OpenTelemetry context propagation over gRPC metadata (feature
//! `opentelemetry`).
//!
//! [`MetadataExtractor`] and [`MetadataInjector`] implement OpenTelemetry's
//! [`Extractor`] and [`Injector`] over tonic's [`MetadataMap`], for code
//! that holds a `tonic::Request` (an interceptor, a handler). The layers
//! work on the HTTP request underneath and use `ctxkit-http`'s
//! [`HeaderExtractor`] and [`HeaderInjector`], re-exported here:
//!
//! - [`ServerLayer`](crate::ServerLayer) extracts every call's
//!   `opentelemetry::Context` from its metadata, with the global propagator
//!   (`opentelemetry::global::set_text_map_propagator`) or the one given to
//!   [`ServerLayer::propagator`](crate::ServerLayer::propagator), and keeps
//!   it in the call's context: `request.context().value::<opentelemetry::Context>()`
//!   (when the caller sent a span context or baggage; otherwise the call
//!   holds none and pays for no value);
//! - [`ClientLayer`](crate::ClientLayer) injects the `opentelemetry::Context`
//!   it finds in a call's context with the global propagator ([`inject`]),
//!   before the [`ForwardHeaders`](crate::ForwardHeaders): metadata set on the
//!   call itself wins, then the context's trace context, then the raw
//!   forwarded values.
//!
//! A handler that starts a span of its own and calls on under it puts the
//! new `opentelemetry::Context` in the context it calls with:
//!
//! ```
//! use ctxkit_grpc::RequestExt;
//! use opentelemetry::trace::{TraceContextExt, Tracer};
//! use opentelemetry_sdk::trace::SdkTracer;
//!
//! fn next_hop<T>(request: &tonic::Request<T>, tracer: &SdkTracer) -> ctxkit::Context {
//!     let ctx = request.context();
//!     let parent = ctx.value::<opentelemetry::Context>().cloned().unwrap_or_default();
//!     let span = tracer.start_with_context("next hop", &parent);
//!     ctx.with_value(parent.with_span(span)) // give it to `RequestExt::with_context`
//! }
//! # use opentelemetry::trace::TracerProvider;
//! # let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! # let ctx = next_hop(&tonic::Request::new(()), &provider.tracer("doc"));
//! # assert!(ctx.value::<opentelemetry::Context>().unwrap().has_active_span());
//! ```

pub use ctxkit_http::otel::{carries_anything, extract, extract_with, inject, inject_with};
pub use ctxkit_http::otel::{HeaderExtractor, HeaderInjector};
use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};

/// OpenTelemetry's [`Extractor`] over tonic's [`MetadataMap`].
///
/// Only ASCII metadata is text: binary (`-bin`) entries are neither listed
/// nor found. Metadata is untrusted input: a value that is not UTF-8 is
/// skipped (as if absent), and no lookup panics, whatever the key or the
/// bytes.
///
/// ```
/// use ctxkit_grpc::otel::MetadataExtractor;
/// use opentelemetry::propagation::{Extractor, TextMapPropagator};
/// use opentelemetry::trace::TraceContextExt;
/// use opentelemetry_sdk::propagation::TraceContextPropagator;
///
/// let mut metadata = tonic::metadata::MetadataMap::new();
/// metadata.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// assert_eq!(MetadataExtractor(&metadata).keys(), ["traceparent"]);
///
/// let cx = TraceContextPropagator::new().extract(&MetadataExtractor(&metadata));
/// assert_eq!(cx.span().span_context().span_id().to_string(), "00f067aa0ba902b7");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    /// The first value of the ASCII key `key` that is UTF-8.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get_all(key)
            .iter()
            .find_map(|value| std::str::from_utf8(value.as_encoded_bytes()).ok())
    }

    /// Every ASCII key, once each, in lower case.
    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }

    /// Every UTF-8 value of the ASCII key `key`, in order; `None` when there
    /// is none.
    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .filter_map(|value| std::str::from_utf8(value.as_encoded_bytes()).ok())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// OpenTelemetry's [`Injector`] over tonic's [`MetadataMap`].
///
/// `set` replaces every earlier value of the key. A key that is not a valid
/// ASCII metadata key (binary `-bin` keys included) or a value that is not
/// valid ASCII metadata is skipped: a propagator never makes a call
/// unsendable.
///
/// ```
/// use ctxkit_grpc::otel::MetadataInjector;
/// use opentelemetry::baggage::BaggageExt;
/// use opentelemetry::propagation::{Injector, TextMapPropagator};
/// use opentelemetry::KeyValue;
/// use opentelemetry_sdk::propagation::BaggagePropagator;
///
/// let cx = opentelemetry::Context::new().with_baggage([KeyValue::new("tenant", "acme")]);
/// let mut request = tonic::Request::new(());
/// BaggagePropagator::new().inject_context(&cx, &mut MetadataInjector(request.metadata_mut()));
/// assert_eq!(request.metadata().get("baggage").unwrap(), "tenant=acme");
///
/// MetadataInjector(request.metadata_mut()).set("trace-bin", "x".to_string()); // skipped
/// assert_eq!(request.metadata().len(), 1);
/// ```
#[derive(Debug)]
pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // from_bytes lower-cases the key and refuses a `-bin` one.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }

    fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue};

    fn non_utf8() -> AsciiMetadataValue {
        // SAFETY-free: from_bytes only checks for header-value bytes.
        AsciiMetadataValue::try_from(&b"\xff\xfe"[..]).unwrap()
    }

    #[test]
    fn get_skips_values_that_are_not_utf8() {
        let mut metadata = MetadataMap::new();
        metadata.append("baggage", non_utf8());
        metadata.append("baggage", AsciiMetadataValue::from_static("k=v"));
        metadata.insert("traceparent", non_utf8());
        let extractor = MetadataExtractor(&metadata);
        assert_eq!(extractor.get("baggage"), Some("k=v"));
        assert_eq!(extractor.get("traceparent"), None);
        assert_eq!(extractor.get_all("baggage"), Some(vec!["k=v"]));
        assert_eq!(extractor.get_all("traceparent"), None);
    }

    #[test]
    fn binary_entries_and_bad_keys_are_absent() {
        let mut metadata = MetadataMap::new();
        metadata.insert_bin("trace-bin", BinaryMetadataValue::from_bytes(b"\x00\x01"));
        metadata.insert("x-request-id", AsciiMetadataValue::from_static("r-1"));
        let extractor = MetadataExtractor(&metadata);
        assert_eq!(extractor.keys(), ["x-request-id"]);
        assert_eq!(extractor.get("trace-bin"), None);
        assert_eq!(extractor.get_all("trace-bin"), None);
        assert_eq!(extractor.get("X-Request-Id"), Some("r-1"));
        assert_eq!(extractor.get("not a key"), None);
        assert_eq!(extractor.get(""), None);
        assert_eq!(extractor.get("\u{0}\u{ff}"), None);
    }

    #[test]
    fn keys_lists_each_key_once() {
        let mut metadata = MetadataMap::new();
        metadata.append("baggage", AsciiMetadataValue::from_static("a=1"));
        metadata.append("baggage", AsciiMetadataValue::from_static("b=2"));
        metadata.insert("traceparent", AsciiMetadataValue::from_static("x"));
        let extractor = MetadataExtractor(&metadata);
        let mut keys = extractor.keys();
        keys.sort_unstable();
        assert_eq!(keys, ["baggage", "traceparent"]);
        assert_eq!(
            MetadataExtractor(&metadata).get_all("baggage"),
            Some(vec!["a=1", "b=2"])
        );
        assert!(MetadataExtractor(&MetadataMap::new()).keys().is_empty());
    }

    #[test]
    fn set_overwrites_every_earlier_value() {
        let mut metadata = MetadataMap::new();
        metadata.append("baggage", AsciiMetadataValue::from_static("a=1"));
        metadata.append("baggage", AsciiMetadataValue::from_static("b=2"));
        MetadataInjector(&mut metadata).set("Baggage", "c=3".to_string());
        let values: Vec<_> = metadata.get_all("baggage").iter().collect();
        assert_eq!(values, ["c=3"]);
    }

    #[test]
    fn set_skips_what_is_not_ascii_metadata() {
        let mut metadata = MetadataMap::new();
        let mut injector = MetadataInjector(&mut metadata);
        injector.set("trace-bin", "v".to_string());
        injector.set("with space", "v".to_string());
        injector.set("", "v".to_string());
        injector.set("ok", "line\nbreak".to_string());
        injector.reserve(4);
        assert!(metadata.is_empty());
    }
}
