#!/usr/bin/env bash
# ctxkit-http's cost over TCP against bare axum: the same axum hello-world
# handler served by `axum::serve` and by `ctxkit_http::Server` (ContextLayer
# around the router), loaded with wrk (HTTP/1.1) and h2load (HTTP/2, prior
# knowledge). See BENCHMARKS.md.
#
# Usage: bench/http.sh [load|paired|callgrind]
#
# load (the default): each server is loaded alone; in each round and for
# each tool the servers take turns in the order A B ... B A (the first one
# rotates every round), so that each runs twice, placed symmetrically, and
# a steady drift in the machine's speed during the round hits each alike.
# Per round a server's requests per second is the mean of its two runs and
# its CPU time per request (user + system, from /proc) is over both; its
# ratio to axum is taken within the round. Reported: per server the
# medians over the rounds, the middle half (25th to 75th percentile) and
# the range, how many rounds reached 0.97 of axum, and the load average
# at each run (a VM's neighbours move the numbers more than the code does).
#
# paired: the two servers MODES names (default axum and server) are loaded
# at once, each by its own load generator, both pinned to the same core
# with one tokio worker each, so that they share it as the kernel shares a
# core between two busy threads; whatever else the machine does in those
# seconds hits both alike. Fresh processes every round and tool, started in
# turns. Per round: the ratio of the requests each completed in the same
# seconds, and of their requests per CPU-second (CPU time from each
# server's threads' schedstat, in ns). Reported: the mean with a bootstrap
# 95% interval, the median and range, and each server's CPU µs a request.
# `MODES="axum base:axum" BASELINE=<the same bench_server>` is the method's
# own control: it should read 1.000.
#
# callgrind: each server runs under `valgrind --tool=callgrind`; h2load
# sends a fixed number of requests (HTTP/1.1 with --h1, then HTTP/2), and
# the instructions the server executed for them (user space, the run's
# counters dumped just before and after, one tokio worker thread) are
# divided by the count. Load on the machine barely changes these numbers.
#
# Environment: MODES (default "axum server"; also server-nodelay, bare, axum-layer,
# layer: see crates/ctxkit-http/examples/bench_server.rs), ROUNDS (default
# 9), DURATION (seconds per run, default 2), CONNECTIONS (default 25),
# STREAMS (h2load streams per connection, default 10), REQUESTS (callgrind,
# default 20000), PIN (default 1: with 2 or more cores, the server runs on
# the last core and the load generator on the others, so that they do not
# take turns on one core), OUT (default target/bench-http), BASELINE (a
# bench_server binary built from other code, such as the commit before a
# change: a MODES entry written base:MODE runs MODE with it, so that
# `MODES="axum server base:server"` compares a change with its baseline
# within each round).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-load}
read -r -a modes <<<"${MODES:-axum server}"
rounds=${ROUNDS:-9}
duration=${DURATION:-2}
connections=${CONNECTIONS:-25}
streams=${STREAMS:-10}
requests=${REQUESTS:-20000}
out=$(realpath -m "${OUT:-target/bench-http}")

tools=(wrk h2load)
[ "$what" = callgrind ] && tools=(h2load valgrind callgrind_control)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || { echo "bench/http.sh: $tool is missing (bash .ci/install.sh)" >&2; exit 1; }
done

cores=$(nproc)
server_cpus="" client_cpus=""
if [ "${PIN:-1}" = 1 ] && [ "$cores" -ge 2 ] && command -v taskset >/dev/null; then
    server_cpus=$((cores - 1))
    client_cpus=0-$((cores - 2))
fi
# on CPUS COMMAND...: runs COMMAND on those cores, or anywhere.
on() {
    local cpus=$1
    shift
    if [ -n "$cpus" ]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

rm -rf "$out"
mkdir -p "$out"
{
    echo "cores: $cores"
    echo "server cores: ${server_cpus:-any}; load generator cores: ${client_cpus:-any}"
    echo "rustc: $(rustc --version)"
    echo "wrk: $(wrk --version 2>&1 | head -1)"
    echo "h2load: $(h2load --version 2>&1 | head -1)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt" >&2

cargo build --release -q -p ctxkit-http --example bench_server
server_bin=${CARGO_TARGET_DIR:-target}/release/examples/bench_server

# start MODE [WRAPPER...]: starts a server, records its pid and address.
declare -A pid addr
start() {
    local mode=$1
    shift
    local pin=()
    [ -n "$server_cpus" ] && pin=(taskset -c "$server_cpus")
    # Not through `on`: $! must be the server's own pid (taskset and
    # valgrind exec it), for /proc and callgrind_control.
    local bin=$server_bin run_mode=$mode
    if [[ $mode == base:* ]]; then
        bin=${BASELINE:?"bench/http.sh: $mode needs BASELINE, a bench_server binary"}
        run_mode=${mode#base:}
    fi
    "${pin[@]}" "$@" "$bin" "$run_mode" 127.0.0.1:0 >"$out/server-$mode.out" 2>"$out/server-$mode.err" &
    pid[$mode]=$!
    for _ in $(seq 600); do # valgrind starts slowly
        addr[$mode]=$(sed -n 's/{"listening":"\(.*\)"}/\1/p' "$out/server-$mode.out")
        [ -n "${addr[$mode]}" ] && return
        sleep 0.05
    done
    echo "bench/http.sh: the $mode server did not start" >&2
    exit 1
}
stop() {
    kill "${pid[$1]}" 2>/dev/null || true
    wait "${pid[$1]}" 2>/dev/null || true
}
# generate TOOL MODE SECONDS: loads one server for that long (wrk, or h2load
# with STREAMS streams per connection).
generate() {
    local tool=$1 mode=$2 seconds=$3
    if [ "$tool" = wrk ]; then
        on "$client_cpus" wrk -t1 -c"$connections" -d"${seconds}s" "http://${addr[$mode]}/"
    else
        on "$client_cpus" h2load -D"$seconds" -c"$connections" -m"$streams" -t1 "http://${addr[$mode]}/"
    fi
}
trap 'for m in "${!pid[@]}"; do kill "${pid[$m]}" 2>/dev/null || true; done' EXIT

if [ "$what" = callgrind ]; then
    # h2load for exactly N requests: HTTP/1.1 one at a time per connection,
    # HTTP/2 with STREAMS concurrent streams per connection.
    fixed() {
        local proto=$1 n=$2 mode=$3
        if [ "$proto" = h1 ]; then
            on "$client_cpus" h2load --h1 -n"$n" -c"$connections" -t1 "http://${addr[$mode]}/"
        else
            on "$client_cpus" h2load -n"$n" -c"$connections" -m"$streams" -t1 "http://${addr[$mode]}/"
        fi
    }
    # The instructions counted since the last dump, from the newest dump.
    dumped() {
        local mode=$1 file
        callgrind_control -d "${pid[$mode]}" >/dev/null 2>&1
        file=$(ls -t "$out/callgrind-$mode".out.* | head -1)
        sed -n 's/^summary: //p;s/^totals: //p' "$file" | head -1
    }
    for mode in "${modes[@]}"; do
        # One worker thread: valgrind runs one thread at a time anyway, and
        # a second worker's parking and stealing, which depend on timing,
        # would move the counts by hundreds of instructions a request.
        start "$mode" env TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out/callgrind-$mode.out.%p"
        for proto in h1 h2; do
            fixed "$proto" 2000 "$mode" >/dev/null # warm-up: connections, pools, caches
            dumped "$mode" >/dev/null
            fixed "$proto" "$requests" "$mode" >"$out/callgrind-$mode-$proto.txt"
            grep -q " $requests succeeded" "$out/callgrind-$mode-$proto.txt" || {
                echo "bench/http.sh: not every request to $mode ($proto) succeeded" >&2
                exit 1
            }
            ir=$(dumped "$mode")
            echo "$mode $proto $ir" >>"$out/callgrind.txt"
            printf '%s %s: %s instructions, %.0f per request\n' "$mode" "$proto" "$ir" "$(awk "BEGIN{print $ir / $requests}")" >&2
        done
        stop "$mode"
    done
    python3 - "$out" "$requests" <<'PY'
import sys
out, n = sys.argv[1], int(sys.argv[2])
ir = {}
for line in open(f"{out}/callgrind.txt"):
    mode, proto, count = line.split()
    ir[mode, proto] = int(count) / n
print(f"\nInstructions per request in the server (callgrind, user space, {n} requests after a warm-up).\n")
print("| mode | HTTP/1.1 | vs axum | HTTP/2 | vs axum |")
print("|---|---:|---:|---:|---:|")
for mode in dict.fromkeys(m for m, _ in ir):
    cells = []
    for proto in ("h1", "h2"):
        x = ir.get((mode, proto))
        ref = ir.get(("axum", proto))
        cells.append(f"{x:,.0f}" if x else "")
        cells.append(f"{x - ref:+,.0f}" if x and ref and mode != "axum" else "")
    print(f"| {mode} | " + " | ".join(cells) + " |")
PY
    exit 0
fi

if [ "$what" = paired ]; then
    [ "${#modes[@]}" = 2 ] || { echo "bench/http.sh paired: MODES names two servers, not ${#modes[@]}" >&2; exit 1; }
    # The server's CPU time so far in nanoseconds, over its threads (none
    # of which exits while it serves).
    cpu_ns() { cat /proc/"${pid[$1]}"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
    for round in $(seq "$rounds"); do
        for tool in wrk h2load; do
            # Fresh processes every round (a process's memory layout moves
            # its speed by a percent or so), started in turns.
            order=("${modes[@]}")
            [ $((round % 2)) = 0 ] && order=("${modes[1]}" "${modes[0]}")
            for mode in "${order[@]}"; do start "$mode" env TOKIO_WORKER_THREADS=1; done
            declare -A before=() loaders=()
            for mode in "${order[@]}"; do # warm-up, both at once
                generate "$tool" "$mode" 1 >/dev/null &
                loaders[$mode]=$!
            done
            for mode in "${order[@]}"; do wait "${loaders[$mode]}"; done
            for mode in "${order[@]}"; do before[$mode]=$(cpu_ns "$mode"); done
            for mode in "${order[@]}"; do
                generate "$tool" "$mode" "$duration" >"$out/paired-$tool-$mode-$round.txt" &
                loaders[$mode]=$!
            done
            for mode in "${order[@]}"; do wait "${loaders[$mode]}"; done
            for mode in "${order[@]}"; do
                echo "cpu_ns $(($(cpu_ns "$mode") - before[$mode]))" >>"$out/paired-$tool-$mode-$round.txt"
                echo "loadavg $(cut -d' ' -f1 /proc/loadavg)" >>"$out/paired-$tool-$mode-$round.txt"
                stop "$mode"
            done
            unset before loaders
            printf '%s round %s: %s\n' "$tool" "$round" "$(for m in "${modes[@]}"; do
                printf '%s %s; ' "$m" "$(grep -hoE '[0-9]+ requests in|[0-9]+ done' "$out/paired-$tool-$m-$round.txt")"
            done)" >&2
        done
    done
    python3 - "$out" "$rounds" "${modes[@]}" <<'PY'
import random, re, statistics, sys
sys.path.insert(0, "bench")
from load_output import completed
out, rounds, (a, b) = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def one(tool, mode, r):
    """(requests completed, server CPU seconds) of one server in round r."""
    text = open(f"{out}/paired-{tool}-{mode}-{r}.txt").read()
    _, done = completed(tool, text, f"{mode} round {r}")
    return done, int(re.search(r"cpu_ns (\d+)", text).group(1)) / 1e9
def interval(xs):
    """A bootstrap 95% interval of the mean."""
    rng = random.Random(12)
    means = sorted(statistics.fmean(rng.choices(xs, k=len(xs))) for _ in range(4000))
    return means[100], means[3899]
print(f"{b} against {a}, both loaded at once on one core, {rounds} rounds; per round the ratio of")
print("the requests each completed in the same seconds, and of their requests per CPU-second.\n")
print(f"| tool | ratio | mean (95% interval) | median (range) | rounds ≥ 0.97 | {a} CPU µs/request | {b} CPU µs/request |")
print("|---|---|---:|---:|---:|---:|---:|")
for tool in ("wrk", "h2load"):
    runs = [(one(tool, a, r), one(tool, b, r)) for r in range(1, rounds + 1)]
    rows = {
        "requests": [y[0] / x[0] for x, y in runs],
        "per CPU-second": [(y[0] / y[1]) / (x[0] / x[1]) for x, y in runs],
    }
    cost = lambda i: statistics.median(run[i][1] / run[i][0] * 1e6 for run in runs)
    for name, xs in rows.items():
        lo, hi = interval(xs)
        print(f"| {tool} | {name} | {statistics.fmean(xs):.3f} ({lo:.3f} to {hi:.3f}) | "
              f"{statistics.median(xs):.3f} ({min(xs):.3f} to {max(xs):.3f}) | "
              f"{sum(x >= 0.97 for x in xs)} of {rounds} | {cost(0):.2f} | {cost(1):.2f} |")
PY
    exit 0
fi

# The server's CPU time so far, in clock ticks (user + system).
cpu() { awk '{print $14 + $15}' "/proc/${pid[$1]}/stat"; }

# load TOOL MODE RUN: loads one server alone, then records its CPU ticks
# and the load average.
load() {
    local tool=$1 mode=$2 run=$3 before
    before=$(cpu "$mode")
    generate "$tool" "$mode" "$duration" >"$out/$tool-$mode-$run.txt"
    echo "cpu_ticks $(($(cpu "$mode") - before))" >>"$out/$tool-$mode-$run.txt"
    echo "loadavg $(cut -d' ' -f1 /proc/loadavg)" >>"$out/$tool-$mode-$run.txt"
}

for mode in "${modes[@]}"; do start "$mode"; done
for mode in "${modes[@]}"; do on "$client_cpus" wrk -t1 -c"$connections" -d1s "http://${addr[$mode]}/" >/dev/null; done # warm-up
for round in $(seq "$rounds"); do
    for tool in wrk h2load; do
        # A B ... then ... B A, starting with another server each round.
        order=()
        for i in "${!modes[@]}"; do order+=("${modes[(i + round) % ${#modes[@]}]}"); done
        for ((i = ${#order[@]} - 1; i >= 0; i--)); do order+=("${order[i]}"); done
        declare -A pass=()
        for mode in "${order[@]}"; do
            pass[$mode]=$((${pass[$mode]:-0} + 1))
            load "$tool" "$mode" "$round-${pass[$mode]}"
            printf '%s round %s %s: %s\n' "$tool" "$round" "$mode" \
                "$(grep -hE 'Requests/sec|finished in' "$out/$tool-$mode-$round-${pass[$mode]}.txt" | tr -s ' ')" >&2
        done
        unset pass
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt" >&2

# The table: per mode and tool, over the rounds, requests per second and
# the server's CPU time per request; against axum, the ratio and the
# difference taken within each round (the runs interleaved A B B A).
python3 - "$out" "$rounds" "$(getconf CLK_TCK)" "${modes[@]}" <<'PY'
import re, statistics, sys
sys.path.insert(0, "bench")
from load_output import completed
out, rounds, tck, modes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
loads = []
def one(tool, mode, run):
    """(requests/s, requests, CPU ticks) of one run."""
    text = open(f"{out}/{tool}-{mode}-{run}.txt").read()
    ticks = int(re.search(r"cpu_ticks (\d+)", text).group(1))
    loads.append(float(re.search(r"loadavg ([\d.]+)", text).group(1)))
    rate, done = completed(tool, text, f"{mode} run {run}")
    return rate, done, ticks
def run(tool, mode, r):
    """(requests/s, server CPU µs per request) of one round: both runs."""
    a, b = one(tool, mode, f"{r}-1"), one(tool, mode, f"{r}-2")
    return (a[0] + b[0]) / 2, (a[2] + b[2]) / tck * 1e6 / (a[1] + b[1])
def quartiles(xs):
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]
def spread(xs, fmt):
    lo, hi = quartiles(xs)
    f = fmt.format
    return f"{f(statistics.median(xs))} ({f(lo)} to {f(hi)}; {f(min(xs))} to {f(max(xs))})"
print(f"Each server alone, A B B A within each round; median (middle half; min to max) of {rounds} rounds;")
print("ratio and added are against axum within the same round.\n")
print("| tool | server | req/s | ratio to axum | rounds ≥ 0.97 | server CPU µs/request | added µs/request |")
print("|---|---|---:|---:|---:|---:|---:|")
for tool in ("wrk", "h2load"):
    runs = {m: [run(tool, m, r) for r in range(1, rounds + 1)] for m in modes}
    for m in modes:
        rates = [x[0] for x in runs[m]]
        cpus = [x[1] for x in runs[m]]
        ratio = added = reached = ""
        if m != "axum" and "axum" in runs:
            ratios = [a[0] / b[0] for a, b in zip(runs[m], runs["axum"])]
            ratio = spread(ratios, "{:.3f}")
            reached = f"{sum(x >= 0.97 for x in ratios)} of {rounds}"
            added = spread([a[1] - b[1] for a, b in zip(runs[m], runs["axum"])], "{:+.2f}")
        print(f"| {tool} | {m} | {spread(rates, '{:,.0f}')} | {ratio} | {reached} | {spread(cpus, '{:.2f}')} | {added} |")
print(f"\nLoad average (1 min) at the end of each run: median {statistics.median(loads):.2f}, {min(loads):.2f} to {max(loads):.2f}.")
PY
