//! The guide, `docs/guide.md`, as this library's documentation: every code
//! block in it is a doc test (`cargo test --doc -p ctxkit-tests`), so the
//! guide cannot drift from the code. The programs it shows are also the
//! examples (`tests/guide.rs` checks they are the same text and that the
//! output shown is what they print).
//!
//! The library itself is empty; the package's integration tests,
//! benchmarks and examples are the rest of it.
#![doc = include_str!("../../../docs/guide.md")]
#![deny(missing_docs)]

/// The core crate's README (`crates/ctxkit/README.md`, what crates.io
/// shows), run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../ctxkit/README.md")]
struct CoreReadme;
