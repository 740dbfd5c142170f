#!/usr/bin/env bash
# ctxkit-http's cost over TCP, side by side in one run: the same axum
# hello-world handler served bare and under ctxkit-http, loaded with wrk
# (HTTP/1.1) and h2load (HTTP/2, prior knowledge). See BENCHMARKS.md.
#
# Usage: bench/http.sh
# Environment: ROUNDS (default 5), DURATION (seconds per wrk run, default 3),
# REQUESTS (per h2load run, default 100000), CONNECTIONS (default 50),
# OUT (default target/bench-http).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-5}
duration=${DURATION:-3}
requests=${REQUESTS:-100000}
connections=${CONNECTIONS:-50}
out=$(realpath -m "${OUT:-target/bench-http}")
modes=(axum bare layer server)

for tool in wrk h2load; do
    command -v "$tool" >/dev/null || { echo "bench/http.sh: $tool is missing (bash .ci/install.sh)" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out"
{
    echo "cores: $(nproc)"
    echo "rustc: $(rustc --version)"
    echo "wrk: $(wrk --version 2>&1 | head -1)"
    echo "h2load: $(h2load --version 2>&1 | head -1)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt" >&2

cargo build --release -q -p ctxkit-http --example bench_server
server_bin=target/release/examples/bench_server

# start MODE: starts the server, sets $pid and $addr.
start() {
    : >"$out/server.out"
    "$server_bin" "$1" 127.0.0.1:0 >"$out/server.out" 2>"$out/server.err" &
    pid=$!
    for _ in $(seq 100); do
        addr=$(sed -n 's/{"listening":"\(.*\)"}/\1/p' "$out/server.out")
        [ -n "$addr" ] && return
        sleep 0.05
    done
    echo "bench/http.sh: the $1 server did not start" >&2
    exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
# The server's CPU time so far, in clock ticks (user + system).
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
# measure FILE COMMAND...: runs the load COMMAND into FILE, then appends the
# server's CPU ticks meanwhile, which depend less than throughput on what
# else the machine runs.
measure() {
    local file=$1 before
    shift
    before=$(cpu)
    "$@" >"$file"
    echo "cpu_ticks $(($(cpu) - before))" >>"$file"
}

# Interleaved rounds, so that a change in the machine's load hits every
# mode alike.
for round in $(seq "$rounds"); do
    for mode in "${modes[@]}"; do
        start "$mode"
        wrk -t2 -c"$connections" -d1s "http://$addr/" >/dev/null # warm-up
        measure "$out/wrk-$mode-$round.txt" wrk -t2 -c"$connections" -d"${duration}s" "http://$addr/"
        measure "$out/h2load-$mode-$round.txt" h2load -n"$requests" -c"$connections" -m10 -t2 "http://$addr/"
        stop
        printf '%s round %s: wrk %s req/s, h2load %s req/s\n' "$mode" "$round" \
            "$(awk '/Requests\/sec/ {print $2}' "$out/wrk-$mode-$round.txt")" \
            "$(awk '/finished in/ {print $4}' "$out/h2load-$mode-$round.txt")" >&2
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt" >&2

# The table: median of the rounds per mode and tool, the ratio to the
# reference, and the server's CPU time per request (user + system, from
# /proc; less sensitive than throughput to what else the machine runs).
python3 - "$out" "$rounds" "$(getconf CLK_TCK)" "${modes[@]}" <<'PY'
import re, statistics, sys
out, rounds, tck, modes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def run(tool, mode, r):
    """(requests/s, server CPU µs per request) of one run."""
    text = open(f"{out}/{tool}-{mode}-{r}.txt").read()
    ticks = int(re.search(r"cpu_ticks (\d+)", text).group(1))
    if tool == "wrk":
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        done = int(re.search(r"(\d+) requests in", text).group(1))
    else:
        failed = int(re.search(r"requests: .* (\d+) failed", text).group(1))
        assert failed == 0, f"h2load {mode} round {r}: {failed} failed"
        rate = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
        done = int(re.search(r"requests: (\d+) total", text).group(1))
    return rate, ticks / tck * 1e6 / done
pairs = {"bare": "axum", "layer": "bare", "server": "bare"}
print(f"Medians of {rounds} interleaved rounds; 'added' is the difference to the mode in 'vs'.\n")
print("| tool | mode | req/s | vs | ratio | server CPU µs/request | added |")
print("|---|---|---|---|---|---|---|")
for tool in ("wrk", "h2load"):
    runs = {m: [run(tool, m, r) for r in range(1, rounds + 1)] for m in modes}
    med = {m: [statistics.median(x[i] for x in runs[m]) for i in range(2)] for m in modes}
    for m in modes:
        rate, cpu = med[m]
        ref = pairs.get(m)
        if ref is None:
            print(f"| {tool} | {m} | {rate:,.0f} | | | {cpu:.2f} | |")
            continue
        r = med[ref]
        print(f"| {tool} | {m} | {rate:,.0f} | {ref} | {rate / r[0]:.3f} | {cpu:.2f} | {cpu - r[1]:+.2f} |")
PY
