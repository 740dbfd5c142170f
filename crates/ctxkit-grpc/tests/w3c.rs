//! The metadata checks on untrusted input: never a panic, and what passes
//! is within the W3C limits.

use ctxkit_grpc::w3c;
use ctxkit_grpc::Propagation;
use proptest::prelude::*;

proptest! {
    // Debug builds generate long strings slowly: fewer cases keep this
    // file to a second or two.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn checks_never_panic(value in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = w3c::valid_traceparent(&value);
        let _ = w3c::valid_tracestate(&value);
        let _ = w3c::valid_request_id(&value);
        if let Some(held) = w3c::held_baggage(&value) {
            prop_assert!(held.len() <= w3c::BAGGAGE_MAX_BYTES);
            prop_assert!(held.split(',').count() <= w3c::BAGGAGE_MAX_MEMBERS);
        }
    }

    /// Baggage made of many valid members is held to the limits by keeping
    /// its leading members, whole.
    #[test]
    fn baggage_is_held_to_its_limits(
        members in proptest::collection::vec(("[a-z]{1,8}", "[a-zA-Z0-9]{0,300}"), 1..120)
    ) {
        let members: Vec<String> = members.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let header = members.join(",");
        let held = w3c::held_baggage(header.as_bytes()).unwrap();
        prop_assert!(held.len() <= w3c::BAGGAGE_MAX_BYTES);
        let kept: Vec<&str> = held.split(',').collect();
        prop_assert!(kept.len() <= w3c::BAGGAGE_MAX_MEMBERS);
        prop_assert_eq!(&kept[..], &members[..kept.len()]);
    }

    /// Whatever the metadata, what is restored passes its check.
    #[test]
    fn restored_values_pass_their_checks(
        id in "[ -~]{0,300}",
        parent in "[0-9a-f-]{50,60}",
        baggage in "[ -~]{0,100}",
    ) {
        let mut metadata = http::HeaderMap::new();
        for (name, value) in [("x-request-id", &id), ("traceparent", &parent), ("baggage", &baggage)] {
            if let Ok(value) = http::HeaderValue::from_str(value) {
                metadata.insert(name, value);
            }
        }
        if let Some(values) = Propagation::default().restore(&metadata) {
            if let Some(id) = values.get("x-request-id") {
                prop_assert!(w3c::valid_request_id(id.as_bytes()));
            }
            if let Some(parent) = values.get("traceparent") {
                prop_assert!(w3c::valid_traceparent(parent.as_bytes()));
            }
            if let Some(baggage) = values.get("baggage") {
                prop_assert!(w3c::held_baggage(baggage.as_bytes()).is_some());
            }
        }
    }
}

#[test]
fn traceparent_versions() {
    let id = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert!(w3c::valid_traceparent(format!("00-{id}").as_bytes()));
    assert!(!w3c::valid_traceparent(format!("00-{id}-extra").as_bytes()));
    assert!(w3c::valid_traceparent(format!("01-{id}-extra").as_bytes()));
    assert!(!w3c::valid_traceparent(format!("01-{id}extra").as_bytes()));
    assert!(!w3c::valid_traceparent(format!("ff-{id}").as_bytes()));
    assert!(!w3c::valid_traceparent(
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"
    ));
}

#[test]
fn tracestate_limits() {
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    assert!(w3c::valid_tracestate(many[..32].join(",").as_bytes()));
    assert!(!w3c::valid_tracestate(many.join(",").as_bytes()));
    assert!(w3c::valid_tracestate(b"a=1,,b=2"));
    assert!(w3c::valid_tracestate(b"a=1 ,b=x y "));
    assert!(!w3c::valid_tracestate(b"a=1,b=x=y"));
}
