//! Checks for the values a server takes from a caller's metadata, which are
//! untrusted input: W3C Trace Context (`traceparent`, `tracestate`), W3C
//! Baggage (`baggage`) and request ids.
//!
//! A value that breaks its format is dropped whole, as the W3C
//! specifications ask; `baggage` is also held to its limits (64 members,
//! 8192 bytes) by keeping its leading members. None of these functions
//! panics, whatever the bytes.
//!
//! ```
//! use ctxkit_grpc::w3c;
//!
//! assert!(w3c::valid_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
//! assert!(!w3c::valid_traceparent(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
//! assert_eq!(w3c::held_baggage(b"a=1, b=2").as_deref(), Some("a=1,b=2"));
//! assert_eq!(w3c::held_baggage(b"a=1,=2"), None); // a member without a key
//! ```

/// At most this many `baggage` members are kept (W3C Baggage).
///
/// ```
/// use ctxkit_grpc::w3c;
///
/// let many = (0..100).map(|n| format!("k{n}=v")).collect::<Vec<_>>().join(",");
/// let held = w3c::held_baggage(many.as_bytes()).unwrap();
/// assert_eq!(held.split(',').count(), w3c::BAGGAGE_MAX_MEMBERS); // the leading 64
/// ```
pub const BAGGAGE_MAX_MEMBERS: usize = 64;
/// At most this many bytes of `baggage` are kept (W3C Baggage).
///
/// ```
/// use ctxkit_grpc::w3c;
///
/// let long = format!("k={}", "v".repeat(10_000));
/// assert!(w3c::held_baggage(long.as_bytes()).map_or(0, |b| b.len()) <= w3c::BAGGAGE_MAX_BYTES);
/// ```
pub const BAGGAGE_MAX_BYTES: usize = 8192;
/// A `tracestate` with more members than this is dropped (W3C Trace Context).
///
/// ```
/// use ctxkit_grpc::w3c;
///
/// assert_eq!(w3c::TRACESTATE_MAX_MEMBERS, 32); // more members: the header is dropped
/// ```
pub const TRACESTATE_MAX_MEMBERS: usize = 32;
/// A request id longer than this is dropped.
///
/// ```
/// use ctxkit_grpc::w3c;
///
/// assert!(w3c::valid_request_id(&[b'x'; w3c::REQUEST_ID_MAX_BYTES]));
/// assert!(!w3c::valid_request_id(&[b'x'; w3c::REQUEST_ID_MAX_BYTES + 1]));
/// ```
pub const REQUEST_ID_MAX_BYTES: usize = 256;
/// Any other forwarded value longer than this is dropped.
///
/// ```
/// use ctxkit_grpc::w3c;
///
/// assert!(w3c::valid_other(&[b'x'; w3c::OTHER_MAX_BYTES]));
/// assert!(!w3c::valid_other(&[b'x'; w3c::OTHER_MAX_BYTES + 1]));
/// ```
pub const OTHER_MAX_BYTES: usize = 4096;

const TRACEPARENT_LEN: usize = 55;

/// Whether `value` is a W3C `traceparent` this server understands:
/// `version-traceid-parentid-flags` in lower-case hex, neither id all zeros,
/// version not `ff`; a version above `00` may carry more fields after a `-`.
///
/// ```
/// use ctxkit_grpc::w3c::valid_traceparent;
///
/// assert!(valid_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
/// assert!(!valid_traceparent(b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-00")); // upper case
/// assert!(!valid_traceparent(b"not a traceparent"));
/// ```
pub fn valid_traceparent(value: &[u8]) -> bool {
    if value.len() < TRACEPARENT_LEN {
        return false;
    }
    let (head, rest) = value.split_at(TRACEPARENT_LEN);
    let version = &head[0..2];
    let trace_id = &head[3..35];
    let parent_id = &head[36..52];
    let flags = &head[53..55];
    let separators = head[2] == b'-' && head[35] == b'-' && head[52] == b'-';
    let fields = [version, trace_id, parent_id, flags]
        .iter()
        .all(|f| lower_hex(f));
    let tail_ok = match version {
        b"00" => rest.is_empty(),
        _ => rest.is_empty() || rest[0] == b'-',
    };
    separators
        && fields
        && version != b"ff"
        && !all_zeros(trace_id)
        && !all_zeros(parent_id)
        && tail_ok
}

/// Whether `value` is a well-formed W3C `tracestate`: at most 32
/// comma-separated `key=value` members with distinct keys (empty members
/// are allowed, as the specification says).
///
/// ```
/// use ctxkit_grpc::w3c::valid_tracestate;
///
/// assert!(valid_tracestate(b"congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"));
/// assert!(valid_tracestate(b"tenant@vendor=x"));
/// assert!(!valid_tracestate(b"Upper=1"));
/// assert!(!valid_tracestate(b"a=1,a=2")); // duplicate key
/// ```
pub fn valid_tracestate(value: &[u8]) -> bool {
    let mut keys: Vec<&[u8]> = Vec::new();
    for member in value.split(|&b| b == b',').map(trim_ows) {
        if member.is_empty() {
            continue;
        }
        let Some(eq) = member.iter().position(|&b| b == b'=') else {
            return false;
        };
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if !tracestate_key(key) || !tracestate_value(value) || keys.contains(&key) {
            return false;
        }
        keys.push(key);
        if keys.len() > TRACESTATE_MAX_MEMBERS {
            return false;
        }
    }
    true
}

/// A W3C `baggage` value held to the specification's limits: its leading
/// members, at most [`BAGGAGE_MAX_MEMBERS`] of them and at most
/// [`BAGGAGE_MAX_BYTES`] bytes in all, joined by `,`; `None` when a member
/// is malformed (the whole header is dropped then) or none is left.
///
/// ```
/// use ctxkit_grpc::w3c::{held_baggage, BAGGAGE_MAX_MEMBERS};
///
/// let many: Vec<String> = (0..100).map(|i| format!("k{i}=v")).collect();
/// let held = held_baggage(many.join(",").as_bytes()).unwrap();
/// assert_eq!(held.split(',').count(), BAGGAGE_MAX_MEMBERS);
/// assert_eq!(held_baggage(b"user=alice;ttl=1").as_deref(), Some("user=alice;ttl=1"));
/// ```
pub fn held_baggage(value: &[u8]) -> Option<String> {
    let mut held = String::new();
    let mut members = 0;
    for member in value.split(|&b| b == b',').map(trim_ows) {
        if !baggage_member(member) {
            return None;
        }
        // Checked above: the member is ASCII.
        let member = std::str::from_utf8(member).ok()?;
        let extra = member.len() + usize::from(members > 0);
        if members == BAGGAGE_MAX_MEMBERS || held.len() + extra > BAGGAGE_MAX_BYTES {
            break;
        }
        if members > 0 {
            held.push(',');
        }
        held.push_str(member);
        members += 1;
    }
    (members > 0).then_some(held)
}

/// Whether `value` can serve as a request id: 1 to
/// [`REQUEST_ID_MAX_BYTES`] visible ASCII characters.
///
/// ```
/// use ctxkit_grpc::w3c::valid_request_id;
///
/// assert!(valid_request_id(b"r-42"));
/// assert!(!valid_request_id(b"has space"));
/// assert!(!valid_request_id(&[b'x'; 10_000]));
/// ```
pub fn valid_request_id(value: &[u8]) -> bool {
    (1..=REQUEST_ID_MAX_BYTES).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic)
}

/// Whether `value` can be forwarded under a name with no format of its
/// own: 1 to [`OTHER_MAX_BYTES`] printable ASCII characters.
///
/// ```
/// use ctxkit_grpc::w3c::valid_other;
///
/// assert!(valid_other(b"tenant acme"));
/// assert!(!valid_other(b"")); // empty
/// assert!(!valid_other(b"line\nbreak")); // not printable
/// ```
pub fn valid_other(value: &[u8]) -> bool {
    (1..=OTHER_MAX_BYTES).contains(&value.len())
        && value.iter().all(|&b| b == b' ' || b.is_ascii_graphic())
}

fn lower_hex(field: &[u8]) -> bool {
    field
        .iter()
        .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn all_zeros(field: &[u8]) -> bool {
    field.iter().all(|&b| b == b'0')
}

/// Strips optional white space (space and tab) at both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn tracestate_key(key: &[u8]) -> bool {
    let key_char = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/');
    match key.iter().position(|&b| b == b'@') {
        None => {
            key.len() <= 256
                && key.first().is_some_and(u8::is_ascii_lowercase)
                && key.iter().all(key_char)
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=241).contains(&tenant.len())
                && tenant
                    .first()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && tenant.iter().all(key_char)
                && (1..=14).contains(&system.len())
                && system.first().is_some_and(u8::is_ascii_lowercase)
                && system.iter().all(key_char)
        }
    }
}

fn tracestate_value(value: &[u8]) -> bool {
    let non_blank = |b: &u8| matches!(b, 0x21..=0x2B | 0x2D..=0x3C | 0x3E..=0x7E);
    (1..=256).contains(&value.len())
        && value.last().is_some_and(non_blank)
        && value.iter().all(|b| *b == b' ' || non_blank(b))
}

/// `key OWS "=" OWS value *( OWS ";" OWS property )`, where a property is
/// `key OWS "=" OWS value` or a lone `key`.
fn baggage_member(member: &[u8]) -> bool {
    let mut parts = member.split(|&b| b == b';').map(trim_ows);
    let pair = parts.next().unwrap_or_default();
    baggage_pair(pair, false) && parts.all(|property| baggage_pair(property, true))
}

fn baggage_pair(pair: &[u8], lone_key_allowed: bool) -> bool {
    match pair.iter().position(|&b| b == b'=') {
        Some(eq) => token(trim_ows(&pair[..eq])) && baggage_value(trim_ows(&pair[eq + 1..])),
        None => lone_key_allowed && token(pair),
    }
}

/// An RFC 7230 token.
fn token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn baggage_value(s: &[u8]) -> bool {
    s.iter()
        .all(|&b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
}
