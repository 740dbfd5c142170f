//! The deadline headers callers send, parsed as the untrusted input they are.
//!
//! Two wire formats carry "how long I will wait for you":
//!
//! - [`TimeoutHeader::GrpcTimeout`], gRPC's `grpc-timeout`: 1 to 8 ASCII
//!   digits and one unit, `H` (hours), `M` (minutes), `S` (seconds), `m`
//!   (milliseconds), `u` (microseconds) or `n` (nanoseconds), e.g. `250m`;
//! - [`TimeoutHeader::ConnectTimeoutMs`], the Connect protocol's
//!   `connect-timeout-ms`: 1 to 10 ASCII digits of milliseconds.
//!
//! Decoding never panics and never overflows: anything else (a sign,
//! white space, a ninth digit, an unknown unit, an empty value) is a
//! [`HeaderError`] that names the header and the expected format. The
//! largest well-formed values (`99999999H`, `9999999999`) decode to their
//! full length; clamping them to a server's maximum is the caller's policy.
//!
//! Encoding rounds *up*: a deadline sent downstream is never shorter than
//! the caller's own, `decode(encode(d)) >= d`, and longer by less than the
//! unit it is written in. `grpc-timeout` is written as grpc-go writes it, in
//! the finest unit whose value fits in 8 digits. A budget longer than a
//! format can carry encodes to `None`: send no header.
//!
//! The codec serves both the HTTP layer of this crate and `ctxkit-grpc`.
//!
//! ```
//! use ctxkit_http::deadline_header::TimeoutHeader;
//! use std::time::Duration;
//!
//! let grpc = TimeoutHeader::GrpcTimeout;
//! assert_eq!(grpc.decode(b"250m"), Ok(Duration::from_millis(250)));
//! assert_eq!(grpc.encode(Duration::from_millis(250)).unwrap(), "250000u");
//! assert_eq!(grpc.encode(Duration::from_secs(3600)).unwrap(), "3600000m");
//!
//! let error = grpc.decode(b"-5S").unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "malformed grpc-timeout header: '-' is not an ASCII digit; \
//!      expected 1 to 8 ASCII digits and one unit of H, M, S, m, u, n (e.g. 250m)"
//! );
//!
//! let connect = TimeoutHeader::ConnectTimeoutMs;
//! assert_eq!(connect.decode(b"1500"), Ok(Duration::from_millis(1500)));
//! assert_eq!(connect.encode(Duration::from_micros(1500)).unwrap(), "2"); // rounded up
//! ```

use std::fmt;
use std::time::Duration;

/// The largest value `grpc-timeout` can carry: 8 digits.
const GRPC_MAX_VALUE: u64 = 99_999_999;
/// The largest value `connect-timeout-ms` can carry: 10 digits.
const CONNECT_MAX_VALUE: u64 = 9_999_999_999;

/// One of the two deadline headers, with its codec.
///
/// ```
/// use ctxkit_http::deadline_header::TimeoutHeader;
///
/// assert_eq!(TimeoutHeader::GrpcTimeout.name(), "grpc-timeout");
/// assert_eq!(TimeoutHeader::ConnectTimeoutMs.name(), "connect-timeout-ms");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutHeader {
    /// gRPC's `grpc-timeout`: 1 to 8 digits and a unit of `H M S m u n`.
    GrpcTimeout,
    /// The Connect protocol's `connect-timeout-ms`: 1 to 10 digits of
    /// milliseconds.
    ConnectTimeoutMs,
}

impl TimeoutHeader {
    /// Both headers, in the order a server looks for them.
    ///
    /// ```
    /// use ctxkit_http::deadline_header::TimeoutHeader;
    /// use std::time::Duration;
    ///
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("connect-timeout-ms", http::HeaderValue::from_static("1500"));
    /// // The first one present decides.
    /// let budget = TimeoutHeader::ALL.iter().find_map(|header| {
    ///     let value = headers.get(header.name())?;
    ///     header.decode(value.as_bytes()).ok()
    /// });
    /// assert_eq!(budget, Some(Duration::from_millis(1500)));
    /// ```
    pub const ALL: [TimeoutHeader; 2] =
        [TimeoutHeader::GrpcTimeout, TimeoutHeader::ConnectTimeoutMs];

    /// The header's name, lower case as HTTP/2 sends it.
    ///
    /// ```
    /// use ctxkit_http::deadline_header::TimeoutHeader;
    ///
    /// assert_eq!(TimeoutHeader::GrpcTimeout.name(), "grpc-timeout");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            TimeoutHeader::GrpcTimeout => "grpc-timeout",
            TimeoutHeader::ConnectTimeoutMs => "connect-timeout-ms",
        }
    }

    /// What a well-formed value looks like, for error messages.
    ///
    /// ```
    /// use ctxkit_http::deadline_header::TimeoutHeader;
    ///
    /// let error = TimeoutHeader::GrpcTimeout.decode(b"soon").unwrap_err();
    /// assert!(error.to_string().ends_with(TimeoutHeader::GrpcTimeout.expected_format()));
    /// ```
    pub const fn expected_format(self) -> &'static str {
        match self {
            TimeoutHeader::GrpcTimeout => {
                "1 to 8 ASCII digits and one unit of H, M, S, m, u, n (e.g. 250m)"
            }
            TimeoutHeader::ConnectTimeoutMs => "1 to 10 ASCII digits of milliseconds (e.g. 250)",
        }
    }

    /// Parses a header value. Never panics, whatever the bytes.
    ///
    /// ```
    /// use ctxkit_http::deadline_header::TimeoutHeader;
    /// use std::time::Duration;
    ///
    /// let hours = TimeoutHeader::GrpcTimeout.decode(b"99999999H").unwrap();
    /// assert_eq!(hours, Duration::from_secs(99_999_999 * 3600));
    /// assert!(TimeoutHeader::GrpcTimeout.decode(b"123456789m").is_err());
    /// assert!(TimeoutHeader::ConnectTimeoutMs.decode(b" 5").is_err());
    /// ```
    pub fn decode(self, value: &[u8]) -> Result<Duration, HeaderError> {
        let fail = |problem| HeaderError {
            header: self,
            problem,
        };
        match self {
            TimeoutHeader::GrpcTimeout => {
                let (&unit, digits) = value.split_last().ok_or(fail(Problem::Empty))?;
                if unit.is_ascii_digit() {
                    return Err(fail(Problem::MissingUnit));
                }
                let of_unit = grpc_unit(unit).ok_or(fail(Problem::UnknownUnit(unit)))?;
                let count = parse_digits(digits, 8).map_err(fail)?;
                Ok(of_unit(count))
            }
            TimeoutHeader::ConnectTimeoutMs => {
                if value.is_empty() {
                    return Err(fail(Problem::Empty));
                }
                parse_digits(value, 10)
                    .map(Duration::from_millis)
                    .map_err(fail)
            }
        }
    }

    /// Writes `timeout` in this header's format, rounded up; `None` when it
    /// is longer than the format can carry (99,999,999 hours for
    /// `grpc-timeout`, about 115 days for `connect-timeout-ms`). Send no
    /// header then: no deadline never cuts the caller's budget short, where
    /// the largest value would.
    ///
    /// ```
    /// use ctxkit_http::deadline_header::TimeoutHeader;
    /// use std::time::Duration;
    ///
    /// let grpc = TimeoutHeader::GrpcTimeout;
    /// let encode = |timeout| grpc.encode(timeout).unwrap();
    /// assert_eq!(encode(Duration::ZERO), "0n");
    /// assert_eq!(encode(Duration::from_nanos(99_999_999)), "99999999n");
    /// assert_eq!(encode(Duration::from_nanos(100_000_001)), "100001u");
    /// assert_eq!(grpc.encode(Duration::MAX), None);
    /// ```
    pub fn encode(self, timeout: Duration) -> Option<String> {
        match self {
            TimeoutHeader::GrpcTimeout => encode_grpc_timeout(timeout),
            TimeoutHeader::ConnectTimeoutMs => {
                let millis = div_ceil_nanos(timeout, 1_000_000);
                (millis <= u128::from(CONNECT_MAX_VALUE)).then(|| millis.to_string())
            }
        }
    }
}

impl TimeoutHeader {
    /// Like [`encode`](Self::encode), in the same unit, but rounded *down*:
    /// for a budget passed on to the next hop, which must never outlive the
    /// caller's own, `decode(encode_floor(d)) <= d`. `None` when `encode`
    /// gives `None`.
    ///
    /// ```
    /// use ctxkit_http::deadline_header::TimeoutHeader;
    /// use std::time::Duration;
    ///
    /// let almost = Duration::from_micros(1999);
    /// assert_eq!(TimeoutHeader::ConnectTimeoutMs.encode_floor(almost).unwrap(), "1");
    /// assert_eq!(TimeoutHeader::ConnectTimeoutMs.encode(almost).unwrap(), "2");
    /// assert_eq!(TimeoutHeader::GrpcTimeout.encode_floor(almost).unwrap(), "1999000n");
    /// ```
    pub fn encode_floor(self, timeout: Duration) -> Option<String> {
        let ceiling = self.encode(timeout)?;
        let unit = match self {
            TimeoutHeader::GrpcTimeout => {
                let unit = ceiling.len() - 1;
                let nanos_per_unit = grpc_nanos_per_unit(ceiling.as_bytes()[unit]);
                return Some(format!(
                    "{}{}",
                    timeout.as_nanos() / nanos_per_unit,
                    &ceiling[unit..]
                ));
            }
            TimeoutHeader::ConnectTimeoutMs => 1_000_000,
        };
        Some((timeout.as_nanos() / unit).to_string())
    }
}

/// Nanoseconds in one gRPC unit written by [`encode_grpc_timeout`].
fn grpc_nanos_per_unit(unit: u8) -> u128 {
    match unit {
        b'n' => 1,
        b'u' => 1_000,
        b'm' => 1_000_000,
        b'S' => 1_000_000_000,
        b'M' => 60_000_000_000,
        _ => 3_600_000_000_000,
    }
}

impl fmt::Display for TimeoutHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A deadline header whose value is not in its format.
///
/// Its `Display` names the header, what was wrong and what is expected, so
/// that it can be sent back to the caller as it is (a 400 body, a gRPC
/// status message).
///
/// ```
/// use ctxkit_http::deadline_header::TimeoutHeader;
///
/// let error = TimeoutHeader::GrpcTimeout.decode(b"5 S").unwrap_err();
/// assert!(error.to_string().starts_with("malformed grpc-timeout header: "));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderError {
    header: TimeoutHeader,
    problem: Problem,
}

impl HeaderError {
    /// The header whose value was malformed.
    ///
    /// ```
    /// use ctxkit_http::deadline_header::TimeoutHeader;
    ///
    /// let error = TimeoutHeader::ConnectTimeoutMs.decode(b"").unwrap_err();
    /// assert_eq!(error.header(), TimeoutHeader::ConnectTimeoutMs);
    /// ```
    pub fn header(&self) -> TimeoutHeader {
        self.header
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed {} header: {}; expected {}",
            self.header.name(),
            self.problem,
            self.header.expected_format()
        )
    }
}

impl std::error::Error for HeaderError {}

/// What was wrong with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    Empty,
    NoDigits,
    MissingUnit,
    TooManyDigits(usize),
    NotADigit(u8),
    UnknownUnit(u8),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::Empty => f.write_str("the value is empty"),
            Problem::NoDigits => f.write_str("no digits before the unit"),
            Problem::MissingUnit => f.write_str("the unit is missing"),
            Problem::TooManyDigits(max) => write!(f, "more than {max} digits"),
            Problem::NotADigit(byte) => write!(f, "{} is not an ASCII digit", Shown(byte)),
            Problem::UnknownUnit(byte) => write!(f, "{} is not a unit", Shown(byte)),
        }
    }
}

/// A byte from the wire, printed so that no control character or invalid
/// UTF-8 reaches a log or a response: printable ASCII quoted, the rest in hex.
struct Shown(u8);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "byte 0x{:02x}", self.0)
        }
    }
}

/// Parses 1 to `max_digits` ASCII digits. The bound keeps the value far
/// below `u64::MAX`, so the sum cannot overflow.
fn parse_digits(digits: &[u8], max_digits: usize) -> Result<u64, Problem> {
    if digits.is_empty() {
        return Err(Problem::NoDigits);
    }
    if let Some(&byte) = digits.iter().find(|byte| !byte.is_ascii_digit()) {
        return Err(Problem::NotADigit(byte));
    }
    if digits.len() > max_digits {
        return Err(Problem::TooManyDigits(max_digits));
    }
    Ok(digits
        .iter()
        .fold(0, |value, &digit| value * 10 + u64::from(digit - b'0')))
}

/// The constructor of a `Duration` of `count` gRPC `unit`s, or `None` for
/// a byte that is not a unit. 8 digits of hours are about 3.6e11 seconds:
/// no product below can overflow.
fn grpc_unit(unit: u8) -> Option<fn(u64) -> Duration> {
    Some(match unit {
        b'H' => |count| Duration::from_secs(count * 3600),
        b'M' => |count| Duration::from_secs(count * 60),
        b'S' => Duration::from_secs,
        b'm' => Duration::from_millis,
        b'u' => Duration::from_micros,
        b'n' => Duration::from_nanos,
        _ => return None,
    })
}

/// grpc-go's `encodeTimeout`: the finest unit whose value, rounded up, fits
/// in 8 digits.
fn encode_grpc_timeout(timeout: Duration) -> Option<String> {
    const UNITS: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    UNITS.iter().find_map(|&(nanos_per_unit, unit)| {
        let value = div_ceil_nanos(timeout, nanos_per_unit);
        (value <= u128::from(GRPC_MAX_VALUE)).then(|| format!("{value}{unit}"))
    })
}

/// `timeout` in units of `nanos_per_unit` nanoseconds, rounded up.
fn div_ceil_nanos(timeout: Duration, nanos_per_unit: u128) -> u128 {
    timeout.as_nanos().div_ceil(nanos_per_unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GRPC: TimeoutHeader = TimeoutHeader::GrpcTimeout;
    const CONNECT: TimeoutHeader = TimeoutHeader::ConnectTimeoutMs;

    #[test]
    fn every_grpc_unit_decodes() {
        let cases: [(&[u8], Duration); 6] = [
            (b"2H", Duration::from_secs(7200)),
            (b"3M", Duration::from_secs(180)),
            (b"4S", Duration::from_secs(4)),
            (b"5m", Duration::from_millis(5)),
            (b"6u", Duration::from_micros(6)),
            (b"7n", Duration::from_nanos(7)),
        ];
        for (value, expected) in cases {
            assert_eq!(
                GRPC.decode(value),
                Ok(expected),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn the_longest_values_decode_in_full() {
        assert_eq!(
            GRPC.decode(b"99999999H"),
            Ok(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(GRPC.decode(b"00000001n"), Ok(Duration::from_nanos(1)));
        assert_eq!(
            CONNECT.decode(b"9999999999"),
            Ok(Duration::from_millis(9_999_999_999))
        );
    }

    #[test]
    fn malformed_values_name_their_problem() {
        let cases: [(TimeoutHeader, &[u8], &str); 14] = [
            (GRPC, b"", "the value is empty"),
            (GRPC, b"m", "no digits before the unit"),
            (GRPC, b"100", "the unit is missing"),
            (GRPC, b"123456789m", "more than 8 digits"),
            (GRPC, b"10x", "'x' is not a unit"),
            (GRPC, b"10s", "'s' is not a unit"),
            (GRPC, b"-10m", "'-' is not an ASCII digit"),
            (GRPC, b"+10m", "'+' is not an ASCII digit"),
            (GRPC, b" 10m", "byte 0x20 is not an ASCII digit"),
            (GRPC, b"10m ", "byte 0x20 is not a unit"),
            (GRPC, b"1 0m", "byte 0x20 is not an ASCII digit"),
            (CONNECT, b"", "the value is empty"),
            (CONNECT, b"12345678901", "more than 10 digits"),
            (CONNECT, b"1.5", "'.' is not an ASCII digit"),
        ];
        for (header, value, problem) in cases {
            let error = header.decode(value).unwrap_err();
            let message = error.to_string();
            assert_eq!(error.header(), header);
            assert!(
                message.starts_with(&format!("malformed {} header: ", header.name())),
                "{message}"
            );
            assert!(message.contains(problem), "{message} should say {problem}");
            assert!(message.ends_with(header.expected_format()), "{message}");
        }
    }

    #[test]
    fn grpc_encoding_matches_grpc_go() {
        let cases = [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(1), "1n"),
            (Duration::from_millis(99), "99000000n"),
            (Duration::from_millis(100), "100000u"),
            (Duration::from_nanos(100_000_001), "100001u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::from_secs(99_999_999 * 60 + 1), "1666667H"),
            (Duration::from_secs(99_999_999 * 3600), "99999999H"),
        ];
        for (timeout, expected) in cases {
            assert_eq!(
                GRPC.encode(timeout).as_deref(),
                Some(expected),
                "{timeout:?}"
            );
        }
        assert_eq!(
            GRPC.encode(Duration::from_secs(99_999_999 * 3600) + Duration::from_nanos(1)),
            None
        );
        assert_eq!(GRPC.encode(Duration::MAX), None);
    }

    #[test]
    fn connect_encoding_rounds_up_and_gives_up_past_ten_digits() {
        let encode = |timeout| CONNECT.encode(timeout);
        assert_eq!(encode(Duration::ZERO).as_deref(), Some("0"));
        assert_eq!(encode(Duration::from_nanos(1)).as_deref(), Some("1"));
        assert_eq!(encode(Duration::from_millis(250)).as_deref(), Some("250"));
        assert_eq!(
            encode(Duration::from_millis(9_999_999_999)).as_deref(),
            Some("9999999999")
        );
        assert_eq!(
            encode(Duration::from_millis(9_999_999_999) + Duration::from_nanos(1)),
            None
        );
    }

    /// The size of one unit of the encoded value: how far decoding may
    /// overshoot the original.
    fn unit_of(encoded: &str) -> Duration {
        match encoded.as_bytes()[encoded.len() - 1] {
            b'H' => Duration::from_secs(3600),
            b'M' => Duration::from_secs(60),
            b'S' => Duration::from_secs(1),
            b'm' => Duration::from_millis(1),
            b'u' => Duration::from_micros(1),
            b'n' => Duration::from_nanos(1),
            _ => Duration::from_millis(1), // connect-timeout-ms
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn decoding_never_panics(header in prop_oneof![Just(GRPC), Just(CONNECT)],
                                 bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = header.decode(&bytes);
        }

        #[test]
        fn near_valid_values_never_panic(digits in "[0-9+ -]{0,12}", unit in "[HMSmun x]?") {
            let value = format!("{digits}{unit}");
            let _ = GRPC.decode(value.as_bytes());
            let _ = CONNECT.decode(value.as_bytes());
        }

        #[test]
        fn encode_then_decode_never_shortens(header in prop_oneof![Just(GRPC), Just(CONNECT)],
                                              secs in prop_oneof![0u64..100, 0u64..20_000_000_000, any::<u64>()],
                                              nanos in 0u32..1_000_000_000) {
            let timeout = Duration::new(secs, nanos);
            let Some(encoded) = header.encode(timeout) else {
                // Longer than the format can say: no header, no deadline.
                let longest: &[u8] = if header == GRPC { b"99999999H" } else { b"9999999999" };
                prop_assert!(timeout > header.decode(longest).unwrap());
                return Ok(());
            };
            let decoded = header.decode(encoded.as_bytes()).unwrap();
            prop_assert!(decoded >= timeout, "{timeout:?} -> {encoded} -> {decoded:?}");
            prop_assert!(decoded - timeout < unit_of(&encoded), "{timeout:?} -> {encoded} -> {decoded:?}");
        }

        #[test]
        fn encode_floor_never_lengthens(header in prop_oneof![Just(GRPC), Just(CONNECT)],
                                        secs in prop_oneof![0u64..100, 0u64..20_000_000_000, any::<u64>()],
                                        nanos in 0u32..1_000_000_000) {
            let timeout = Duration::new(secs, nanos);
            let (Some(floor), Some(ceiling)) = (header.encode_floor(timeout), header.encode(timeout)) else {
                prop_assert_eq!(header.encode_floor(timeout), None);
                return Ok(());
            };
            let decoded = header.decode(floor.as_bytes()).unwrap();
            prop_assert!(decoded <= timeout, "{timeout:?} -> {floor} -> {decoded:?}");
            prop_assert!(timeout - decoded < unit_of(&ceiling), "{timeout:?} -> {floor} -> {decoded:?}");
            prop_assert_eq!(unit_of(&floor), unit_of(&ceiling));
        }

        #[test]
        fn grpc_values_stay_within_eight_digits(secs in 0u64..400_000_000_000, nanos in 0u32..1_000_000_000) {
            if let Some(encoded) = GRPC.encode(Duration::new(secs, nanos)) {
                prop_assert!(encoded.len() <= 9, "{encoded}");
                prop_assert!(GRPC.decode(encoded.as_bytes()).is_ok(), "{encoded}");
            }
        }
    }
}
