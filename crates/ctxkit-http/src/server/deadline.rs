//! The caller's deadline, read from its headers under the server's policy.

use crate::deadline_header::{HeaderError, TimeoutHeader};
use http::header::HeaderName;
use http::HeaderMap;
use std::time::Duration;

/// What the server does with a deadline header it cannot parse.
///
/// ```
/// use ctxkit::Context;
/// use ctxkit_http::{ContextLayer, MalformedDeadline};
///
/// assert_eq!(MalformedDeadline::default(), MalformedDeadline::Reject);
/// let lenient = ContextLayer::new(Context::background()).on_malformed_deadline(MalformedDeadline::Ignore);
/// # let _ = lenient;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MalformedDeadline {
    /// Answer 400 Bad Request, with a body that names the header and the
    /// expected format; the handler does not run.
    #[default]
    Reject,
    /// Serve the request as if the header were absent.
    Ignore,
}

/// The caller's budget: the shortest of the values of `headers` present in
/// `map` (every value of each), or `None` if there are none.
///
/// # Errors
///
/// The first malformed value, unless `policy` says to ignore them.
pub(crate) fn caller_timeout(
    map: &HeaderMap,
    headers: &[TimeoutHeader],
    policy: MalformedDeadline,
) -> Result<Option<Duration>, HeaderError> {
    let mut shortest: Option<Duration> = None;
    for &header in headers {
        for value in map.get_all(name_of(header)) {
            match header.decode(value.as_bytes()) {
                Ok(timeout) => shortest = Some(shortest.map_or(timeout, |s| s.min(timeout))),
                Err(error) if policy == MalformedDeadline::Reject => return Err(error),
                Err(_) => {}
            }
        }
    }
    Ok(shortest)
}

/// The header's name, ready for lookups (a `&str` would be parsed anew
/// on every request).
pub(crate) fn name_of(header: TimeoutHeader) -> &'static HeaderName {
    static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    static CONNECT_TIMEOUT_MS: HeaderName = HeaderName::from_static("connect-timeout-ms");
    match header {
        TimeoutHeader::GrpcTimeout => &GRPC_TIMEOUT,
        TimeoutHeader::ConnectTimeoutMs => &CONNECT_TIMEOUT_MS,
    }
}

/// The earlier of the server's maximum and the caller's budget.
pub(crate) fn effective(max: Option<Duration>, caller: Option<Duration>) -> Option<Duration> {
    match (max, caller) {
        (Some(max), Some(caller)) => Some(max.min(caller)),
        (one, None) | (None, one) => one,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static [u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.append(name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn the_shortest_value_wins() {
        let map = headers(&[
            ("grpc-timeout", b"2S"),
            ("connect-timeout-ms", b"1500"),
            ("grpc-timeout", b"3S"),
        ]);
        let got = caller_timeout(&map, &TimeoutHeader::ALL, MalformedDeadline::Reject);
        assert_eq!(got, Ok(Some(Duration::from_millis(1500))));
    }

    #[test]
    fn malformed_values_reject_or_are_ignored() {
        let map = headers(&[("grpc-timeout", b"1x"), ("connect-timeout-ms", b"20")]);
        let error =
            caller_timeout(&map, &TimeoutHeader::ALL, MalformedDeadline::Reject).unwrap_err();
        assert_eq!(error.header(), TimeoutHeader::GrpcTimeout);
        let got = caller_timeout(&map, &TimeoutHeader::ALL, MalformedDeadline::Ignore);
        assert_eq!(got, Ok(Some(Duration::from_millis(20))));
    }

    #[test]
    fn only_the_configured_headers_count() {
        let map = headers(&[("grpc-timeout", b"1x")]);
        let only_connect = [TimeoutHeader::ConnectTimeoutMs];
        assert_eq!(
            caller_timeout(&map, &only_connect, MalformedDeadline::Reject),
            Ok(None)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_header_value_is_answered_never_panics(
            grpc in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            connect in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            max_ms in proptest::option::of(0u64..10_000),
        ) {
            let mut map = HeaderMap::new();
            for (header, bytes) in [(TimeoutHeader::GrpcTimeout, &grpc), (TimeoutHeader::ConnectTimeoutMs, &connect)] {
                if let Ok(value) = HeaderValue::from_bytes(bytes) {
                    map.insert(name_of(header), value);
                }
            }
            let max = max_ms.map(Duration::from_millis);
            let decoded: Vec<_> = TimeoutHeader::ALL
                .iter()
                .filter_map(|&h| map.get(name_of(h)).map(|v| h.decode(v.as_bytes())))
                .collect();
            let rejected = caller_timeout(&map, &TimeoutHeader::ALL, MalformedDeadline::Reject);
            proptest::prop_assert_eq!(rejected.is_err(), decoded.iter().any(Result::is_err));
            let ignored = caller_timeout(&map, &TimeoutHeader::ALL, MalformedDeadline::Ignore).unwrap();
            let shortest = decoded.iter().filter_map(|d| d.as_ref().ok()).min().copied();
            proptest::prop_assert_eq!(ignored, shortest);
            if let (Some(max), Some(timeout)) = (max, effective(max, ignored)) {
                proptest::prop_assert!(timeout <= max);
            }
        }
    }

    #[test]
    fn the_server_maximum_clamps() {
        let max = Some(Duration::from_secs(1));
        assert_eq!(effective(max, Some(Duration::MAX)), max);
        assert_eq!(effective(max, None), max);
        assert_eq!(
            effective(None, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(effective(None, None), None);
    }
}
