#!/usr/bin/env bash
# Build the busybox test image: Debian's busybox-static (one static binary)
# as a one-layer container image in an OCI layout tarball. No registry needed.
#   examples/busybox/build.sh OUT.tar [NAME [PACK-ARGS...]]
# NAME defaults to acc/busybox:v1; PACK-ARGS go to `skiff image pack-rootfs`
# and replace the default Cmd (/bin/sh), e.g. --cmd httpd --cmd -f ...
# Uses $SKIFF (default: skiff on the PATH) for `skiff image pack-rootfs`.
# $EXTRA_BIN: more static binaries (space-separated paths) copied into /bin.
set -euo pipefail
out="$1"
name="${2:-acc/busybox:v1}"
shift $(( $# >= 2 ? 2 : 1 ))
if [ "$#" -eq 0 ]; then set -- --cmd /bin/sh; fi
skiff="${SKIFF:-skiff}"
busybox="$(command -v busybox || true)"
# Debian's dynamically linked busybox would not run in an empty root.
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "build.sh: needs Debian's busybox-static (apt-get install busybox-static)" >&2
    exit 1
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev,var/www}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
for extra in ${EXTRA_BIN:-}; do
    cp "$extra" "$root/bin/"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
echo "hello from busybox" > "$root/var/www/index.html"
"$skiff" image pack-rootfs "$root" --name "$name" "$@" \
    --env PATH=/bin --workdir / -o "$out" >/dev/null
echo "$out"
