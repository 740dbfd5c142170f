#!/usr/bin/env bash
# ctxkit-http's cost over TCP, side by side in one run: the same axum
# hello-world handler served bare and under ctxkit-http, loaded with wrk
# (HTTP/1.1) and h2load (HTTP/2, prior knowledge). See BENCHMARKS.md.
#
# Usage: bench/http.sh
# Environment: ROUNDS (default 5), DURATION (seconds per load, default 3),
# CONNECTIONS (per server, default 25),
# OUT (default target/bench-http).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-5}
duration=${DURATION:-3}
connections=${CONNECTIONS:-25}
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

# start MODE: starts a server, records its pid and address.
declare -A pid addr
start() {
    : >"$out/server-$1.out"
    "$server_bin" "$1" 127.0.0.1:0 >"$out/server-$1.out" 2>"$out/server-$1.err" &
    pid[$1]=$!
    for _ in $(seq 100); do
        addr[$1]=$(sed -n 's/{"listening":"\(.*\)"}/\1/p' "$out/server-$1.out")
        [ -n "${addr[$1]}" ] && return
        sleep 0.05
    done
    echo "bench/http.sh: the $1 server did not start" >&2
    exit 1
}
# The server's CPU time so far, in clock ticks (user + system).
cpu() { awk '{print $14 + $15}' "/proc/${pid[$1]}/stat"; }

# load TOOL ROUND: loads every server at once, each with its own client,
# for the same wall time. They share the machine (and whatever else runs on
# it) alike, so each server's throughput and CPU per request compare
# directly; then records each server's CPU ticks.
load() {
    local tool=$1 round=$2 mode clients=() before=() order=()
    for mode in "${modes[@]}"; do before+=("$(cpu "$mode")"); done
    # Each round starts the clients in another order: the first one
    # started gets a head start.
    for i in "${!modes[@]}"; do order+=("${modes[(i + round) % ${#modes[@]}]}"); done
    for mode in "${order[@]}"; do
        if [ "$tool" = wrk ]; then
            wrk -t1 -c"$connections" -d"${duration}s" "http://${addr[$mode]}/"
        else
            h2load -D"$duration" -c"$connections" -m10 -t1 "http://${addr[$mode]}/"
        fi >"$out/$tool-$mode-$round.txt" &
        clients+=($!)
    done
    wait "${clients[@]}"
    local i=0
    for mode in "${modes[@]}"; do
        echo "cpu_ticks $(($(cpu "$mode") - before[i]))" >>"$out/$tool-$mode-$round.txt"
        i=$((i + 1))
    done
}

for mode in "${modes[@]}"; do start "$mode"; done
trap 'kill "${pid[@]}" 2>/dev/null || true' EXIT
for mode in "${modes[@]}"; do wrk -t1 -c"$connections" -d1s "http://${addr[$mode]}/" >/dev/null; done # warm-up
for round in $(seq "$rounds"); do
    for tool in wrk h2load; do
        load "$tool" "$round"
        for mode in "${modes[@]}"; do
            printf '%s round %s %s: %s\n' "$tool" "$round" "$mode" \
                "$(grep -hE 'Requests/sec|finished in' "$out/$tool-$mode-$round.txt" | tr -s ' ')" >&2
        done
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
        done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", text).group(1))
    return rate, ticks / tck * 1e6 / done
pairs = {"bare": "axum", "layer": "bare", "server": "bare"}
print(f"All servers loaded at once; medians of {rounds} rounds; 'added' is the difference to the mode in 'vs'.\n")
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
