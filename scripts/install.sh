#!/usr/bin/env bash
# Install Skiff on this host, k3s-style: the binary, a systemd unit, a config
# file and an uninstall script; then enable and start the unit.
#
#   scripts/install.sh                  # a server (API + store + embedded agent)
#   scripts/install.sh agent            # a node agent; needs SKIFF_SERVER and
#                                       # SKIFF_TOKEN (or SKIFF_TOKEN_FILE)
#
# Environment: SKIFF_BIN (a built binary; default: build target/release/skiff),
# INSTALL_BIN_DIR (/usr/local/bin), SKIFF_CONFIG_DIR (/etc/skiff),
# SKIFF_UNIT_DIR (/etc/systemd/system), SKIFF_DOC_DIR, SKIFF_NO_START=1
# (install only).
set -euo pipefail
cd "$(dirname "$0")/.."

role="${1:-server}"
case "$role" in
    server|agent) ;;
    *) echo "usage: $0 [server|agent]" >&2; exit 2 ;;
esac
bin_dir="${INSTALL_BIN_DIR:-/usr/local/bin}"
config_dir="${SKIFF_CONFIG_DIR:-/etc/skiff}"
unit_dir="${SKIFF_UNIT_DIR:-/etc/systemd/system}"
doc_dir="${SKIFF_DOC_DIR:-/usr/local/share/doc/skiff}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if [ -z "${SKIFF_BIN:-}" ]; then
    source scripts/setup.sh
    cargo build --release --bin skiff
    SKIFF_BIN=target/release/skiff
fi
$SUDO install -D -m 0755 "$SKIFF_BIN" "$bin_dir/skiff"
$SUDO install -D -m 0644 README.md "$doc_dir/README.md"

$SUDO install -d -m 0700 "$config_dir"
config="$config_dir/config.yaml"
if [ ! -e "$config" ]; then
    if [ "$role" = agent ]; then
        : "${SKIFF_SERVER:?set SKIFF_SERVER=https://HOST:6443 for an agent}"
        token_file="$config_dir/token"
        if [ -n "${SKIFF_TOKEN_FILE:-}" ]; then
            $SUDO install -m 0600 "$SKIFF_TOKEN_FILE" "$token_file"
        else
            : "${SKIFF_TOKEN:?set SKIFF_TOKEN (or SKIFF_TOKEN_FILE) for an agent}"
            printf '%s\n' "$SKIFF_TOKEN" | $SUDO install -m 0600 /dev/stdin "$token_file"
        fi
        printf 'server: %s\ntoken-file: %s\n' "$SKIFF_SERVER" "$token_file" |
            $SUDO install -m 0600 /dev/stdin "$config"
    else
        cat <<'YAML' | $SUDO install -m 0600 /dev/stdin "$config"
# Any flag of `skiff server` by its long name; flags and SKIFF_* variables
# override what is here. For example:
# api-addr: 0.0.0.0:6443
# tls-san: [skiff.example.org]
# node-name: edge-1
# snapshot-schedule: 6h
YAML
    fi
    echo "wrote $config"
fi

unit="skiff-$role.service"
sed "s#/usr/local/bin/skiff#$bin_dir/skiff#g" "packaging/systemd/$unit" |
    $SUDO install -D -m 0644 /dev/stdin "$unit_dir/$unit"
data="/var/lib/skiff/$role"
cat <<SH | $SUDO install -m 0755 /dev/stdin "$bin_dir/skiff-uninstall.sh"
#!/bin/sh
# Remove Skiff from this host (written by scripts/install.sh).
set -x
systemctl disable --now $unit 2>/dev/null
"$bin_dir/skiff" uninstall --data-dir "$data"
rm -f "$unit_dir/$unit" "$config_dir/config.yaml" "$config_dir/token"
rmdir "$config_dir" 2>/dev/null
systemctl daemon-reload 2>/dev/null
rm -f "$bin_dir/skiff" "$bin_dir/skiff-uninstall.sh"
rm -rf "$doc_dir"
SH
echo "installed $bin_dir/skiff, $unit_dir/$unit, $bin_dir/skiff-uninstall.sh"

if [ "${SKIFF_NO_START:-}" != 1 ] && [ -d /run/systemd/system ]; then
    $SUDO systemctl daemon-reload
    $SUDO systemctl enable --now "$unit"
    echo "started $unit (journalctl -u $unit -f); kubeconfig: $bin_dir/skiff kubeconfig --data-dir $data"
else
    echo "not started (no systemd running, or SKIFF_NO_START=1): systemctl enable --now $unit"
fi
