//! Deadlines as eight bytes.
//!
//! Every cancellation scope stores the earliest deadline above it, so its
//! size is paid once per live context. `Option<Instant>` takes sixteen bytes;
//! a [`Deadline`] takes eight: signed nanoseconds from a process-wide epoch
//! (the first time ctxkit needed one), with `NEVER` for "no deadline". That
//! covers about 292 years either side of the epoch exactly, to the
//! nanosecond, which is all a monotonic clock can be asked for in practice.
//! An instant beyond that range saturates to the range's edge.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A point on the monotonic clock, or [`Deadline::NEVER`].
///
/// Ordered as the instants are, with `NEVER` after all of them, so the
/// earliest of two deadlines is their `min`, and "no deadline" needs no
/// special case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Deadline(i64);

impl Deadline {
    /// No deadline: later than any instant.
    pub(crate) const NEVER: Deadline = Deadline(i64::MAX);

    pub(crate) fn now() -> Deadline {
        Deadline::from_instant(Instant::now())
    }

    pub(crate) fn from_instant(instant: Instant) -> Deadline {
        let epoch = epoch();
        let nanos = match instant.checked_duration_since(epoch) {
            Some(after) => saturating_nanos(after),
            None => -saturating_nanos(epoch - instant),
        };
        // `i64::MAX` stands for `NEVER`: an instant that far saturates just
        // before it.
        Deadline(nanos.min(i64::MAX - 1))
    }

    /// The instant, or `None` for `NEVER`.
    pub(crate) fn instant(self) -> Option<Instant> {
        if self == Deadline::NEVER {
            return None;
        }
        let offset = Duration::from_nanos(self.0.unsigned_abs());
        Some(if self.0 >= 0 {
            epoch() + offset
        } else {
            epoch() - offset
        })
    }

    /// The raw value, for an atomic.
    pub(crate) fn raw(self) -> i64 {
        self.0
    }

    /// The deadline whose [`raw`](Deadline::raw) value is `raw`.
    pub(crate) fn from_raw(raw: i64) -> Deadline {
        Deadline(raw)
    }
}

/// `now + timeout`, saturating a century ahead rather than overflowing.
pub(crate) fn instant_after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

fn saturating_nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_instants_exactly() {
        let now = Instant::now();
        for instant in [
            now,
            now + Duration::from_nanos(1),
            now + Duration::from_secs(3600 * 24 * 365),
            now - Duration::from_millis(1),
            epoch(),
        ] {
            assert_eq!(Deadline::from_instant(instant).instant(), Some(instant));
        }
    }

    #[test]
    fn orders_as_instants_with_never_last() {
        let now = Instant::now();
        let earlier = Deadline::from_instant(now);
        let later = Deadline::from_instant(now + Duration::from_nanos(1));
        assert!(earlier < later);
        assert!(later < Deadline::NEVER);
        assert_eq!(Deadline::NEVER.instant(), None);
    }

    #[test]
    fn saturates_before_never() {
        let far = Instant::now() + Duration::from_secs(400 * 365 * 24 * 3600);
        let deadline = Deadline::from_instant(far);
        assert_ne!(deadline, Deadline::NEVER);
        assert!(deadline.instant().is_some());
    }
}
