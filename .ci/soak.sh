#!/usr/bin/env bash
# The long reliability runs, in release mode: a million random operations
# on one shared tree (crates/ctxkit-tests/tests/stress.rs) and ten million
# derive/cancel cycles, synchronous and async, with resident memory and the
# timer checked (crates/ctxkit-tests/tests/soak.rs). About half a minute
# once built.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test -p ctxkit-tests --release --test stress -- --ignored --nocapture
cargo test -p ctxkit-tests --release --test soak -- --ignored --nocapture
