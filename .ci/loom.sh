#!/usr/bin/env bash
# The loom models of the core (crates/ctxkit/src/loom_tests.rs), in release
# mode. Each model is checked exhaustively and again with a preemption bound
# of 3; the whole run takes seconds once built. A separate target directory
# keeps `--cfg loom` from invalidating the ordinary build.
set -euo pipefail
cd "$(dirname "$0")/.."

RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test -p ctxkit --lib --release loom_tests -- --nocapture
