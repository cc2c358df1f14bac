#!/usr/bin/env bash
# Build Skiff (release) and run `skiff server` on the embedded default:
# data in ./skiff-data, API on 127.0.0.1:6443, peers on 127.0.0.1:6444.
# Extra arguments go to `skiff server` (see `skiff server --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --bin skiff
exec target/release/skiff server "$@"
