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
    # The test executables of the workspace-wide build above: `-p PKG` alone
    # would unify features differently and rebuild half the dependencies.
    built=$(cargo test --workspace --no-run --message-format=json 2>/dev/null)
    for pkg in skiff_node skiff_runtimes; do
        bin=$(printf '%s\n' "$built" |
            PKG="$pkg" python3 -c 'import json,os,sys
for l in sys.stdin:
    m = json.loads(l)
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["target"]["kind"] == ["lib"] and m["target"]["name"] == os.environ["PKG"]):
        print(m["executable"])')
        if [ -z "$bin" ]; then
            echo "no unit-test executable of $pkg found" >&2
            status=1
            continue
        fi
        cp "$bin" "$home/tests"
        chown 65534:65534 "$home/tests"
        echo "unit tests of $pkg as nobody:"
        (cd "$home" && setpriv --reuid=65534 --regid=65534 --clear-groups \
            env HOME="$home" TMPDIR="$home" ./tests -q) || status=$?
    done
fi
exit "$status"
