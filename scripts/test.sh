#!/usr/bin/env bash
# Run every test of the workspace: unit tests, the in-memory Raft harness and the
# end-to-end tests that start real `skiff server` processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
