//! Shared test helpers.

use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

/// Generous: these machines are shared and noisy.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A cause of our own, to tell causes apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Why(pub &'static str);

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Why {}

/// The `Why` inside a cause, if it is one.
pub fn why(cause: &ctxkit::Cause) -> Option<&'static str> {
    cause.downcast_ref::<Why>().map(|why| why.0)
}

/// The `ctxkit::Error` inside a cause, if it is one.
pub fn plain(cause: &ctxkit::Cause) -> Option<ctxkit::Error> {
    cause.downcast_ref::<ctxkit::Error>().copied()
}

/// Receives within `PATIENCE`, or fails the test with `what`.
pub fn expect<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}
