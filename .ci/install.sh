#!/usr/bin/env bash
# Installs what the integration tests need and CI cannot assume: Debian's
# PostgreSQL (the SQL tests start their own cluster from its binaries), curl,
# wrk and h2load (nghttp2-client) for the HTTP checks and benchmarks,
# valgrind, Graphviz (the live tree's DOT output is checked with `dot`), and
# Python's grpcio in a venv for the gRPC interop tests.
# Idempotent: what is already there is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v curl >/dev/null || missing+=(curl)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v dot >/dev/null || missing+=(graphviz)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install: ${missing[*]}"
    as_root apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The interop tests look for this interpreter (CTXKIT_GRPC_PYTHON).
venv=target/grpc-venv
if ! "$venv/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
    echo "install: grpcio, grpcio-tools into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q grpcio grpcio-tools
fi
