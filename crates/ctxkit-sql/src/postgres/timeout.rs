//! A context's remaining time as PostgreSQL's `statement_timeout`.

use std::time::Duration;

/// The largest `statement_timeout` PostgreSQL accepts: `INT_MAX`
/// milliseconds (about 24.8 days).
///
/// ```
/// use ctxkit_sql::postgres::{statement_timeout_ms, MAX_STATEMENT_TIMEOUT_MS};
/// use std::time::Duration;
///
/// assert_eq!(statement_timeout_ms(Duration::from_secs(100 * 365 * 86_400)), MAX_STATEMENT_TIMEOUT_MS);
/// ```
pub const MAX_STATEMENT_TIMEOUT_MS: u32 = i32::MAX as u32;

/// `remaining` as a `statement_timeout` in milliseconds: rounded **up**, so
/// the server never stops a statement before the client's deadline; at least
/// 1 (0 would switch the timeout off); at most
/// [`MAX_STATEMENT_TIMEOUT_MS`], so a deadline years away is clamped instead
/// of overflowing.
///
/// ```
/// use ctxkit_sql::postgres::statement_timeout_ms;
/// use std::time::Duration;
///
/// assert_eq!(statement_timeout_ms(Duration::from_micros(1500)), 2);
/// assert_eq!(statement_timeout_ms(Duration::ZERO), 1);
/// assert_eq!(statement_timeout_ms(Duration::from_secs(10 * 365 * 86_400)), i32::MAX as u32);
/// ```
pub fn statement_timeout_ms(remaining: Duration) -> u32 {
    let ms = remaining.as_nanos().div_ceil(1_000_000);
    ms.clamp(1, u128::from(MAX_STATEMENT_TIMEOUT_MS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_early_never_zero_never_over(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let remaining = Duration::new(secs, nanos);
            let ms = statement_timeout_ms(remaining);
            prop_assert!(ms >= 1);
            prop_assert!(ms <= MAX_STATEMENT_TIMEOUT_MS);
            if ms < MAX_STATEMENT_TIMEOUT_MS {
                prop_assert!(Duration::from_millis(u64::from(ms)) >= remaining);
                prop_assert!(Duration::from_millis(u64::from(ms)) < remaining + Duration::from_millis(1) || ms == 1);
            }
        }
    }
}
