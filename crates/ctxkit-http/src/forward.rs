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
///
/// ```
/// use ctxkit_http::DEFAULT_FORWARDED;
///
/// assert_eq!(DEFAULT_FORWARDED.map(|name| name.to_string()), ["x-request-id", "traceparent", "baggage"]);
/// ```
pub const DEFAULT_FORWARDED: [HeaderName; 3] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("baggage"),
];

impl ForwardHeaders {
    /// No headers.
    ///
    /// ```
    /// use ctxkit_http::ForwardHeaders;
    ///
    /// assert!(ForwardHeaders::new().headers().is_empty());
    /// ```
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
    ///
    /// ```
    /// use ctxkit_http::ForwardHeaders;
    ///
    /// let values = ForwardHeaders::new().with("x-request-id", "r-1").with("x-request-id", "r-2");
    /// assert_eq!(values.get("x-request-id").unwrap(), "r-2"); // replaced
    /// ```
    pub fn with(mut self, name: &'static str, value: &'static str) -> ForwardHeaders {
        self.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        self
    }

    /// Sets `name` to `value`, replacing an earlier value.
    ///
    /// ```
    /// use ctxkit_http::ForwardHeaders;
    /// use http::{HeaderName, HeaderValue};
    ///
    /// let mut values = ForwardHeaders::new();
    /// let from_outside = HeaderValue::from_str("tenant=acme").unwrap(); // checked, no panic
    /// values.insert(HeaderName::from_static("baggage"), from_outside);
    /// assert_eq!(values.headers().len(), 1);
    /// assert_eq!(values.get("baggage").unwrap(), "tenant=acme");
    /// ```
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.insert(name, value);
    }

    /// The value of `name`, if any.
    ///
    /// ```
    /// use ctxkit_http::ForwardHeaders;
    ///
    /// let values = ForwardHeaders::new().with("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    /// assert!(values.get("traceparent").is_some());
    /// assert!(values.get("baggage").is_none());
    /// ```
    pub fn get(&self, name: &str) -> Option<&HeaderValue> {
        self.0.get(name)
    }

    /// All the headers.
    ///
    /// ```
    /// use ctxkit_http::ForwardHeaders;
    ///
    /// let values = ForwardHeaders::new().with("x-request-id", "r-1").with("baggage", "k=v");
    /// let names: Vec<&str> = values.headers().keys().map(|name| name.as_str()).collect();
    /// assert_eq!(names.len(), 2);
    /// ```
    pub fn headers(&self) -> &HeaderMap {
        &self.0
    }

    /// The `ForwardHeaders` nearest to `ctx`, if any.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::ForwardHeaders;
    ///
    /// assert!(ForwardHeaders::of(&Context::background()).is_none());
    /// let ctx = Context::background().with_value(ForwardHeaders::new().with("x-request-id", "r-1"));
    /// let (child, _cancel) = ctx.with_cancel();
    /// assert!(ForwardHeaders::of(&child).is_some()); // inherited
    /// ```
    pub fn of(ctx: &Context) -> Option<&ForwardHeaders> {
        ctx.value::<ForwardHeaders>()
    }

    /// The headers among `names` present in `headers`, or `None` when there
    /// are none (so that a request without them costs no context value).
    ///
    /// ```
    /// use ctxkit_http::{ForwardHeaders, DEFAULT_FORWARDED};
    /// use http::HeaderMap;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-request-id", "r-9".parse().unwrap());
    /// headers.insert("cookie", "secret".parse().unwrap());
    /// let kept = ForwardHeaders::capture(&headers, &DEFAULT_FORWARDED).unwrap();
    /// assert_eq!(kept.get("x-request-id").unwrap(), "r-9");
    /// assert!(kept.get("cookie").is_none()); // only the names asked for
    /// assert!(ForwardHeaders::capture(&HeaderMap::new(), &DEFAULT_FORWARDED).is_none());
    /// ```
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
