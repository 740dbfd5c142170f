#!/usr/bin/env bash
# The tests that drive the core hardest, under valgrind's memcheck: the
# unsafe reference counting of src/node_ref.rs must never read, write or free
# memory it does not own. Installs Debian's valgrind if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then apt-get install -y -q valgrind >/dev/null; else sudo apt-get install -y -q valgrind >/dev/null; fi
fi

# The test executables, as cargo reports them (debug build, all features):
# the core's unit tests, and three of its integration tests, which live in
# crates/ctxkit-tests.
mapfile -t binaries < <(
    cargo test -p ctxkit -p ctxkit-tests --all-features --no-run --message-format=json \
        --lib --test conformance --test model --test panic_safety 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    # --lib also selects crates/ctxkit-tests'"'"' own library: not one of ours.
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["profile"]["test"] \
            and message["target"]["name"] != "ctxkit_tests":
        print(message["executable"])
'
)
if [ "${#binaries[@]}" -ne 4 ]; then
    echo "memcheck: expected 4 test executables, found ${#binaries[@]}" >&2
    exit 1
fi
for binary in "${binaries[@]}"; do
    echo "memcheck: $(basename "$binary")"
    valgrind --quiet --error-exitcode=99 --leak-check=no "$binary" --test-threads=2 -q
done
