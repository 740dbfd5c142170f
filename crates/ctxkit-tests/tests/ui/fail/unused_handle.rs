//! A derived context whose handle is thrown away at once is cancelled
//! before anyone can use it: a denied `unused_must_use` catches it.
#![deny(unused_must_use)]
use ctxkit::Context;
use std::time::Duration;

fn main() {
    let root = Context::background();
    root.with_timeout(Duration::from_secs(1));
    root.with_timeout_detached(Duration::from_secs(1));
}
