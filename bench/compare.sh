#!/usr/bin/env bash
# Runs Go's context benchmarks and ctxkit's mirror of them (with tokio-util's
# CancellationToken alongside) in one go, and prints one table: benchmark,
# Go, tokio-util, ctxkit, the ratios and the targets. See BENCHMARKS.md.
#
# Usage: bench/compare.sh [criterion filter]
# Environment: GO_BENCHTIME (default 1s), WARM_UP (seconds, default 0.5),
# MEASURE (seconds, default 1), OUT (default target/bench-compare).
# Takes about five minutes on two cores, build included.
set -euo pipefail
cd "$(dirname "$0")/.."

# Absolute, as criterion is told where to write from another directory.
out=$(realpath -m "${OUT:-target/bench-compare}")
go_benchtime=${GO_BENCHTIME:-1s}
warm_up=${WARM_UP:-0.5}
measure=${MEASURE:-1}
filter=${1:-}

step() { printf '\n==> %s\n' "$*" >&2; }

if ! command -v go >/dev/null; then
    step "installing Go (Debian's golang-go)"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -q
    $sudo apt-get install -y -q golang-go
fi

rm -rf "$out"
mkdir -p "$out"
{
    echo "cores: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "go: $(go version)"
    echo "rustc: $(rustc --version)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt" >&2

step "building the ctxkit benchmarks"
cargo bench -p ctxkit-tests --bench context --no-run

# Go's own file, from GOROOT: needs no module and no network.
step "Go: src/context/benchmark_test.go (-benchtime $go_benchtime)"
go test -run XXX -bench "${filter:-.}" -benchmem -benchtime "$go_benchtime" context |
    tee "$out/go-context.txt" >&2

step "Go: bench/go (rows Go's file lacks)"
(cd bench/go && GOPROXY=off GOFLAGS=-mod=mod go test -run XXX -bench "${filter:-.}" \
    -benchmem -benchtime "$go_benchtime" .) | tee "$out/go-extra.txt" >&2

step "ctxkit and tokio-util (criterion: warm-up ${warm_up}s, measurement ${measure}s)"
CRITERION_HOME="$out/criterion" cargo bench -p ctxkit-tests --bench context -- \
    --warm-up-time "$warm_up" --measurement-time "$measure" ${filter:+"$filter"} |
    tee "$out/rust.txt" >&2

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt" >&2
step "results"
python3 bench/compare.py --go "$out/go-context.txt" "$out/go-extra.txt" \
    --criterion "$out/criterion" --rust-log "$out/rust.txt" ${filter:+--filtered} |
    tee "$out/table.md"
