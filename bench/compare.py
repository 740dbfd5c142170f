#!/usr/bin/env python3
"""Pairs Go's, tokio-util's and ctxkit's results of one compare.sh run and
prints them as one Markdown table, with the ratios and each row's target.

Inputs (all written by compare.sh):
  --go FILE...        `go test -bench` output (Go's own benchmarks and bench/go)
  --criterion DIR     criterion's output directory (CRITERION_HOME)
  --rust-log FILE     the bench binary's stdout (bytes-per-live-child lines)
  --filtered          the run was filtered: Go's and criterion's filters
                      select differently, so list only the rows ctxkit ran
                      and do not count a row without Go's side as missed
"""

import argparse
import json
import pathlib
import re
import sys

# Row-name pattern -> (peer, highest allowed ctxkit/peer ratio), from the
# issue's targets. First match wins.
TARGETS = [
    (r"^ContextCancelDone$", "Go", 0.5),
    (r"^CheckCanceled/", "Go", 0.5),
    (r"^CommonParentCancel$", "Go", 1.0),
    (r"^CancelTree/", "Go", 0.5),
    (r"^WithTimeout/", "Go", 1.0),
    (r"^MoveDeadline/", "Go", 1.0),
    (r"^Merge$", "Go", 1.0),
    (r"^MergeBackground$", "tokio-util", 1.0),
    (r"^DeepValueSameGoRoutine/depth=100$", "Go", 0.25),
    (r"^ChildCreateCancel$", "tokio-util", 1.0),
    (r"^FanOutWake$", "tokio-util", 1.0),
    (r"^BytesPerLiveChild$", "Go", 1.0),
]

# Go reports these rows in a metric of their own rather than ns/op.
GO_METRIC = {"FanOutWake": "ns/fanout", "BytesPerLiveChild": "B/child"}

BENCH_LINE = re.compile(r"^Benchmark(\S+?)(-\d+)?\s+\d+\s+(.*)$")


def parse_go(paths):
    """Go benchmark name (without `Benchmark` and `-GOMAXPROCS`) -> value."""
    results = {}
    for path in paths:
        for line in pathlib.Path(path).read_text().splitlines():
            match = BENCH_LINE.match(line)
            if not match:
                continue
            name, metrics = match.group(1), match.group(3).split()
            unit = GO_METRIC.get(name, "ns/op")
            pairs = dict(zip(metrics[1::2], metrics[0::2]))
            if unit in pairs:
                results[name] = float(pairs[unit])
    return results


def parse_criterion(home):
    """`row/library` -> ns per iteration, from each benchmark's
    new/estimates.json (the slope when criterion fitted one, else the mean)."""
    results = {}
    for benchmark in pathlib.Path(home).glob("**/new/benchmark.json"):
        full_id = json.loads(benchmark.read_text())["full_id"]
        estimates = json.loads((benchmark.parent / "estimates.json").read_text())
        estimate = estimates.get("slope") or estimates["mean"]
        results[full_id] = estimate["point_estimate"]
    return results


def parse_bytes(path):
    """library -> heap bytes per live child, malloc-rounded."""
    results = {}
    pattern = re.compile(r"^bytes-per-live-child (\S+) requested=\S+ malloc=(\S+)$")
    for line in pathlib.Path(path).read_text().splitlines():
        match = pattern.match(line.strip())
        if match:
            results[match.group(1)] = float(match.group(2))
    return results


def fmt_time(ns):
    if ns is None:
        return "-"
    for unit, scale in (("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--go", nargs="+", required=True)
    parser.add_argument("--criterion", required=True)
    parser.add_argument("--rust-log", required=True)
    parser.add_argument("--filtered", action="store_true")
    args = parser.parse_args()

    go = parse_go(args.go)
    ours = parse_criterion(args.criterion)
    rows = {}
    for full_id, ns in ours.items():
        row, _, library = full_id.rpartition("/")
        rows.setdefault(row, {})[library] = ns
    for library, size in parse_bytes(args.rust_log).items():
        rows.setdefault("BytesPerLiveChild", {})[library] = size
    for row in go:
        rows.setdefault(row, {})
    # Go's order, then ours for rows Go lacks.
    order = list(go) + [row for row in rows if row not in go]
    if args.filtered:
        order = [row for row in order if "ctxkit" in rows[row]]

    print("| benchmark | Go | tokio-util | ctxkit | ctxkit/Go | ctxkit/tokio-util | target | met |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    missed = 0
    for row in order:
        values = {"Go": go.get(row), **rows.get(row, {})}
        fmt = (lambda v: "-" if v is None else f"{v:.1f} B") if row == "BytesPerLiveChild" else fmt_time
        target, met = "", ""
        for pattern, peer, limit in TARGETS:
            if re.search(pattern, row):
                target = f"≤ {limit}x {peer}"
                ctxkit, other = values.get("ctxkit"), values.get(peer)
                if ctxkit is None or other is None:
                    met = "no data"
                    missed += not args.filtered
                else:
                    met = "yes" if ctxkit / other <= limit else "**no**"
                    missed += ctxkit / other > limit
                break
        print(
            f"| {row} | {fmt(values.get('Go'))} | {fmt(values.get('tokio-util'))} "
            f"| {fmt(values.get('ctxkit'))} | {fmt_ratio(values.get('ctxkit'), values.get('Go'))} "
            f"| {fmt_ratio(values.get('ctxkit'), values.get('tokio-util'))} | {target} | {met} |"
        )
    print(f"\n{missed} target(s) missed." if missed else "\nEvery target met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
