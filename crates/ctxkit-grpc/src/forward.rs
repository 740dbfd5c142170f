//! [`Propagation`]: which request-scoped values cross the wire as
//! metadata, checked on the way in.

use crate::w3c;
use ctxkit_http::ForwardHeaders;
use http::header::{Entry, HeaderName, HeaderValue};
use http::HeaderMap;

/// Which metadata values a service takes from its callers and passes on:
/// by default `x-request-id`, `traceparent`, `tracestate` and `baggage`.
///
/// Incoming values are checked ([`w3c`]) before they enter a context: a
/// malformed `traceparent`, `tracestate` or `baggage` is dropped (and
/// `tracestate` with a dropped `traceparent`), `baggage` is held to 64
/// members and 8192 bytes, a request id longer than 256 bytes or with
/// characters other than visible ASCII is dropped, and a name that appears
/// more than once (other than the list-valued `tracestate` and `baggage`)
/// is dropped.
///
/// ```
/// use ctxkit_grpc::Propagation;
/// use http::{HeaderMap, HeaderValue};
///
/// let mut metadata = HeaderMap::new();
/// metadata.insert("x-request-id", HeaderValue::from_static("r-1"));
/// metadata.insert("traceparent", HeaderValue::from_static("garbage"));
/// let restored = Propagation::default().restore(&metadata).unwrap();
/// assert_eq!(restored.get("x-request-id").unwrap(), "r-1");
/// assert!(restored.get("traceparent").is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Propagation {
    names: Vec<HeaderName>,
}

const REQUEST_ID: &str = "x-request-id";
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
const BAGGAGE: &str = "baggage";
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);

impl Default for Propagation {
    fn default() -> Propagation {
        Propagation {
            names: [REQUEST_ID, TRACEPARENT, TRACESTATE, BAGGAGE]
                .map(HeaderName::from_static)
                .to_vec(),
        }
    }
}

impl Propagation {
    /// Propagates nothing.
    ///
    /// ```
    /// use ctxkit_grpc::Propagation;
    ///
    /// assert!(Propagation::none().names().is_empty());
    /// ```
    pub fn none() -> Propagation {
        Propagation { names: Vec::new() }
    }

    /// Also propagates `name`.
    ///
    /// ```
    /// use ctxkit_grpc::Propagation;
    /// use http::HeaderName;
    ///
    /// let propagation = Propagation::none().with(HeaderName::from_static("x-tenant"));
    /// assert_eq!(propagation.names().len(), 1);
    /// assert_eq!(propagation.names()[0], "x-tenant");
    /// ```
    pub fn with(mut self, name: HeaderName) -> Propagation {
        if !self.names.contains(&name) {
            self.names.push(name);
        }
        self
    }

    /// The names propagated.
    ///
    /// ```
    /// use ctxkit_grpc::Propagation;
    ///
    /// let propagation = Propagation::default();
    /// let names: Vec<&str> = propagation.names().iter().map(|n| n.as_str()).collect();
    /// assert_eq!(names, ["x-request-id", "traceparent", "tracestate", "baggage"]);
    /// ```
    pub fn names(&self) -> &[HeaderName] {
        &self.names
    }

    /// The propagated values found in `metadata` that pass their checks, or
    /// `None` when there are none (a call without them costs no context
    /// value).
    ///
    /// ```
    /// use ctxkit_grpc::Propagation;
    /// use http::HeaderMap;
    ///
    /// let mut metadata = HeaderMap::new();
    /// metadata.insert("x-request-id", "r-1".parse().unwrap());
    /// metadata.insert("tracestate", "vendor=1".parse().unwrap()); // without traceparent
    /// let values = Propagation::default().restore(&metadata).unwrap();
    /// assert_eq!(values.get("x-request-id").unwrap(), "r-1");
    /// assert!(values.get("tracestate").is_none()); // meaningless alone: dropped
    /// assert!(Propagation::none().restore(&metadata).is_none());
    /// ```
    pub fn restore(&self, metadata: &HeaderMap) -> Option<ForwardHeaders> {
        self.restore_seeing(metadata, None).0
    }

    /// [`restore`](Self::restore), and the first value of `also` if the
    /// metadata has it, found in the same walk: the server layer reads
    /// `grpc-timeout` this way rather than hashing its name for a lookup.
    pub(crate) fn restore_seeing<'m>(
        &self,
        metadata: &'m HeaderMap,
        also: Option<&HeaderName>,
    ) -> (Option<ForwardHeaders>, Option<&'m HeaderValue>) {
        // One pass over the call's metadata, which holds a handful of names,
        // and no lookup at all: cheaper, on every call, than hashing each
        // configured name to find it absent, or each one found to get its
        // values again.
        let mut restored: Option<ForwardHeaders> = None;
        let mut tracestate = None;
        let mut traceparent_kept = false;
        let mut seen = None;
        let mut fields = metadata.iter().peekable();
        while let Some((name, first)) = fields.next() {
            // A name's further values follow its first one; only a name sent
            // as several fields has any, and only then are they collected.
            let mut rest = Vec::new();
            while let Some((_, value)) = fields.next_if(|(next, _)| *next == name) {
                rest.push(value);
            }
            if also == Some(name) {
                seen = Some(first);
            }
            // The configured name is the one kept: usually static, where the
            // call's own is a slice of its buffer (a clone shares it).
            let Some(name) = self.names.iter().find(|&configured| configured == name) else {
                continue;
            };
            let Some(value) = checked(name, first, &rest) else {
                continue;
            };
            if *name == TRACESTATE_NAME {
                tracestate = Some(value); // kept or not once traceparent is known
                continue;
            }
            traceparent_kept |= *name == TRACEPARENT_NAME;
            restored
                .get_or_insert_with(ForwardHeaders::new)
                .insert(name.clone(), value);
        }
        // W3C Trace Context: without a valid traceparent, tracestate means
        // nothing.
        if let Some(value) = tracestate {
            if traceparent_kept || !self.names.contains(&TRACEPARENT_NAME) {
                restored
                    .get_or_insert_with(ForwardHeaders::new)
                    .insert(TRACESTATE_NAME, value);
            }
        }
        (restored, seen)
    }

    /// Adds to `metadata` the propagated names that `values` holds and
    /// `metadata` does not already carry (metadata set on the call itself
    /// wins).
    ///
    /// ```
    /// use ctxkit_grpc::{ForwardHeaders, Propagation};
    /// use http::HeaderMap;
    ///
    /// let values = ForwardHeaders::new().with("x-request-id", "r-2").with("cookie", "secret");
    /// let mut metadata = HeaderMap::new();
    /// Propagation::default().forward(&values, &mut metadata);
    /// assert_eq!(metadata.get("x-request-id").unwrap(), "r-2");
    /// assert!(metadata.get("cookie").is_none()); // not a propagated name
    /// ```
    pub fn forward(&self, values: &ForwardHeaders, metadata: &mut HeaderMap) {
        // A context holds a value or two: walking them, not the configured
        // names, saves a lookup per absent name on every call.
        for (name, value) in values.headers() {
            if !self.names.contains(name) {
                continue;
            }
            // One lookup for both the check and the insert.
            if let Entry::Vacant(unset) = metadata.entry(name) {
                unset.insert(value.clone());
            }
        }
    }
}

/// The value of `name`, sent as `first` and then `rest` (usually none), if
/// it passes the checks for its kind.
fn checked(name: &HeaderName, first: &HeaderValue, rest: &[&HeaderValue]) -> Option<HeaderValue> {
    match name.as_str() {
        TRACESTATE | BAGGAGE => {
            let joined = join(first, rest.iter().copied());
            let kept = if name == TRACESTATE {
                w3c::valid_tracestate(&joined).then_some(joined)
            } else {
                w3c::held_baggage(&joined).map(String::into_bytes)
            };
            HeaderValue::from_bytes(&kept?).ok()
        }
        _ if !rest.is_empty() => None,
        TRACEPARENT => w3c::valid_traceparent(first.as_bytes()).then(|| first.clone()),
        REQUEST_ID => w3c::valid_request_id(first.as_bytes()).then(|| first.clone()),
        _ => w3c::valid_other(first.as_bytes()).then(|| first.clone()),
    }
}

/// A list-valued header sent as several fields, as one value.
fn join<'a>(first: &'a HeaderValue, rest: impl Iterator<Item = &'a HeaderValue>) -> Vec<u8> {
    let mut joined = first.as_bytes().to_vec();
    for value in rest {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT_VALUE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// The walk over the call's metadata sees a name sent as several fields
    /// as all of them, whatever comes before and after it.
    #[test]
    fn names_sent_as_several_fields_are_joined_or_dropped() {
        let mut metadata = HeaderMap::new();
        metadata.append("x-other", HeaderValue::from_static("1"));
        metadata.append("x-other", HeaderValue::from_static("2"));
        metadata.append("baggage", HeaderValue::from_static("a=1"));
        metadata.append("x-request-id", HeaderValue::from_static("one"));
        metadata.append("baggage", HeaderValue::from_static("b=2"));
        metadata.append("tracestate", HeaderValue::from_static("congo=t61"));
        metadata.append("x-request-id", HeaderValue::from_static("two"));
        metadata.append("tracestate", HeaderValue::from_static("rojo=00f"));
        metadata.append("traceparent", HeaderValue::from_static(TRACEPARENT_VALUE));
        let restored = Propagation::default().restore(&metadata).unwrap();
        assert_eq!(restored.get("baggage").unwrap(), "a=1,b=2");
        assert_eq!(restored.get("tracestate").unwrap(), "congo=t61,rojo=00f");
        assert_eq!(restored.get("traceparent").unwrap(), TRACEPARENT_VALUE);
        assert!(restored.get("x-request-id").is_none()); // two ids: neither
        assert!(restored.get("x-other").is_none()); // not propagated
        assert_eq!(restored.headers().len(), 3);
    }

    #[test]
    fn a_single_field_is_kept_between_several_others() {
        let mut metadata = HeaderMap::new();
        metadata.append("x-other", HeaderValue::from_static("1"));
        metadata.append("x-other", HeaderValue::from_static("2"));
        metadata.append("x-request-id", HeaderValue::from_static("r-1"));
        metadata.append("x-last", HeaderValue::from_static("3"));
        metadata.append("x-last", HeaderValue::from_static("4"));
        let restored = Propagation::default().restore(&metadata).unwrap();
        assert_eq!(restored.get("x-request-id").unwrap(), "r-1");
        assert_eq!(restored.headers().len(), 1);
        assert!(Propagation::default().restore(&HeaderMap::new()).is_none());
    }
}
