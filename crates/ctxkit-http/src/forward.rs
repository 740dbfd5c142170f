//! [`ForwardHeaders`]: request-scoped header values a service passes on.

use ctxkit::Context;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// Header values that travel with a context from one service to the next:
/// by default `x-request-id` and the W3C `traceparent` and `baggage`.
///
/// The server layer stores the configured headers of each incoming request
/// in its context as a `ForwardHeaders`; the client helpers send the
/// configured ones downstream. Code that starts a request chain adds them
/// itself.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::ForwardHeaders;
///
/// let ctx = Context::background().with_value(ForwardHeaders::new().with("x-request-id", "r-42"));
/// let forwarded = ForwardHeaders::of(&ctx).unwrap();
/// assert_eq!(forwarded.get("x-request-id").unwrap(), "r-42");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardHeaders(HeaderMap);

/// The headers forwarded when nothing else is configured.
pub const DEFAULT_FORWARDED: [HeaderName; 3] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("baggage"),
];

impl ForwardHeaders {
    /// No headers.
    pub fn new() -> ForwardHeaders {
        ForwardHeaders::default()
    }

    /// These headers plus `name: value` (replacing an earlier `name`).
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name or `value` not a valid header
    /// value; build them with [`HeaderName`] / [`HeaderValue`] and use
    /// [`insert`](Self::insert) for values from outside.
    pub fn with(mut self, name: &'static str, value: &'static str) -> ForwardHeaders {
        self.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        self
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.insert(name, value);
    }

    /// The value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&HeaderValue> {
        self.0.get(name)
    }

    /// All the headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.0
    }

    /// The `ForwardHeaders` nearest to `ctx`, if any.
    pub fn of(ctx: &Context) -> Option<&ForwardHeaders> {
        ctx.value::<ForwardHeaders>()
    }

    /// The headers among `names` present in `headers`, or `None` when there
    /// are none (so that a request without them costs no context value).
    pub fn capture(headers: &HeaderMap, names: &[HeaderName]) -> Option<ForwardHeaders> {
        let mut captured = HeaderMap::new();
        for name in names {
            if let Some(value) = headers.get(name) {
                captured.insert(name.clone(), value.clone());
            }
        }
        (!captured.is_empty()).then_some(ForwardHeaders(captured))
    }
}
