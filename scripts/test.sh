#!/usr/bin/env bash
# Run every test of the workspace: unit tests, the in-memory Raft harness and the
# end-to-end tests that start real `skiff server` processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
    cargo test --workspace --no-fail-fast "$@" || status=$?
fi
# The agent's and the runtimes' unit tests need no root (host side effects go
# through fakes): when run as root with no filter, run them again as nobody.
if [ "$#" -eq 0 ] && [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1; then
    home=$(mktemp -d)
    trap 'rm -rf "$home"' EXIT
    chown 65534:65534 "$home"
    for pkg in skiff-node skiff-runtimes; do
        bin=$(cargo test -p "$pkg" --lib --no-run --message-format=json 2>/dev/null |
            python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')
        cp "$bin" "$home/tests"
        chown 65534:65534 "$home/tests"
        echo "unit tests of $pkg as nobody:"
        (cd "$home" && setpriv --reuid=65534 --regid=65534 --clear-groups \
            env HOME="$home" TMPDIR="$home" ./tests -q) || status=$?
    done
fi
exit "$status"
