//! [`Propagation`]: what an outgoing request carries from its context.

use crate::deadline_header::TimeoutHeader;
use crate::forward::{ForwardHeaders, DEFAULT_FORWARDED};
use ctxkit::Context;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// What an outgoing request takes from its context: the remaining deadline,
/// in the configured header formats (rounded down: the next hop never
/// outlives its caller), and the configured
/// [`ForwardHeaders`].
///
/// By default both `grpc-timeout` and `connect-timeout-ms` are sent, and
/// `x-request-id`, `traceparent` and `baggage` are forwarded. Headers the
/// request already has are replaced for the deadline (the context is the
/// authority) and kept for forwarded values.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::client::Propagation;
/// use ctxkit_http::deadline_header::TimeoutHeader;
/// use ctxkit_http::ForwardHeaders;
/// use std::time::Duration;
///
/// let (ctx, _cancel) = Context::background()
///     .with_value(ForwardHeaders::new().with("x-request-id", "r-1"))
///     .with_timeout(Duration::from_secs(2));
/// let mut headers = http::HeaderMap::new();
/// Propagation::new()
///     .deadline_headers(&[TimeoutHeader::ConnectTimeoutMs])
///     .apply(&ctx, &mut headers)
///     .unwrap();
/// let sent: u64 = headers["connect-timeout-ms"].to_str().unwrap().parse().unwrap();
/// assert!(sent <= 2000);
/// assert_eq!(headers["x-request-id"], "r-1");
/// assert!(headers.get("grpc-timeout").is_none());
/// ```
#[derive(Clone, Debug)]
pub struct Propagation {
    deadline_headers: Vec<TimeoutHeader>,
    forwarded: Vec<HeaderName>,
}

impl Default for Propagation {
    fn default() -> Propagation {
        Propagation {
            deadline_headers: TimeoutHeader::ALL.to_vec(),
            forwarded: DEFAULT_FORWARDED.to_vec(),
        }
    }
}

impl Propagation {
    /// Both deadline headers, the three default forwarded headers.
    ///
    /// ```
    /// use ctxkit_http::client::Propagation;
    ///
    /// let propagation = Propagation::new(); // grpc-timeout, connect-timeout-ms, x-request-id, traceparent, baggage
    /// # let _ = propagation;
    /// ```
    pub fn new() -> Propagation {
        Propagation::default()
    }

    /// The formats the remaining deadline is sent in (none: send none).
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::client::Propagation;
    /// use std::time::Duration;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(1));
    /// let mut headers = http::HeaderMap::new();
    /// Propagation::new().deadline_headers(&[]).apply(&ctx, &mut headers).unwrap();
    /// assert!(headers.is_empty()); // the deadline is not sent on
    /// ```
    pub fn deadline_headers(mut self, headers: &[TimeoutHeader]) -> Propagation {
        self.deadline_headers = headers.to_vec();
        self
    }

    /// The [`ForwardHeaders`] sent on.
    ///
    /// ```
    /// use ctxkit::Context;
    /// use ctxkit_http::client::Propagation;
    /// use ctxkit_http::ForwardHeaders;
    ///
    /// let ctx = Context::background().with_value(ForwardHeaders::new().with("x-request-id", "r-3"));
    /// let mut headers = http::HeaderMap::new();
    /// Propagation::new().forwarded_headers(&[]).apply(&ctx, &mut headers).unwrap();
    /// assert!(headers.is_empty()); // nothing forwarded, no deadline to send
    /// ```
    pub fn forwarded_headers(mut self, names: &[HeaderName]) -> Propagation {
        self.forwarded = names.to_vec();
        self
    }

    /// Writes the context's deadline and forwarded values into `headers`.
    ///
    /// # Errors
    ///
    /// The context's error if it is already done: send nothing then
    /// ([`ClientError::from_context`](super::ClientError::from_context) gives
    /// the error with its cause).
    ///
    /// ```
    /// use ctxkit::{Context, Error};
    /// use ctxkit_http::client::Propagation;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// let mut headers = http::HeaderMap::new();
    /// assert_eq!(Propagation::new().apply(&ctx, &mut headers), Err(Error::Canceled));
    /// ```
    pub fn apply(&self, ctx: &Context, headers: &mut HeaderMap) -> Result<(), ctxkit::Error> {
        ctx.check()?;
        if let Some(remaining) = ctx.remaining() {
            for &header in &self.deadline_headers {
                // Too long to say: no header, which never cuts the budget short.
                if let Some(value) = header.encode_floor(remaining) {
                    let value = HeaderValue::try_from(value).expect("digits and a unit");
                    headers.insert(header.name(), value);
                }
            }
        }
        // Before the forwarded values: the context's own trace context (the
        // handler's span) wins over the raw headers the request came with.
        #[cfg(feature = "opentelemetry")]
        crate::otel::inject(ctx, headers);
        if let Some(forward) = ForwardHeaders::of(ctx) {
            for name in &self.forwarded {
                if let (Some(value), false) =
                    (forward.get(name.as_str()), headers.contains_key(name))
                {
                    headers.insert(name.clone(), value.clone());
                }
            }
        }
        Ok(())
    }
}
