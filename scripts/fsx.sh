#!/usr/bin/env bash
# Runs fsx (random reads, writes, truncates, mmap, fallocate, copy_file_range...)
# against a fresh circlefs mount. Usage: scripts/fsx.sh [OPS] [MIX]
# (FSX_MOUNT_OPTS: mount options, e.g. uring)
# OPS defaults to 100000; MIX is a file in tests/conformance (default fsx-allnp.toml).
source "$(dirname "$0")/lib.sh"
need_pkg fusermount3 fuse3
enable_fuse_uring
need_cargo_tool fsx fsx
[ -x "$BIN" ] || build_release
OPS=${1:-100000}
MIX=${2:-fsx-allnp.toml}
W=$(mktemp -d /tmp/circlefs-fsx.XXXXXX)
cleanup() { unmount_quiet "$W/mnt"; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/mnt" "$W/art"
printf 'fsx-pass\n' > "$W/pw"
"$BIN" init "$W/store" --kdf fast --new-passphrase-file "$W/pw" >/dev/null
"$BIN" admin "$W/store" --user admin --passphrase-file "$W/pw" circle create t >/dev/null
"$BIN" mount "$W/store" "$W/mnt" --user admin --passphrase-file "$W/pw" ${FSX_MOUNT_OPTS:+-o "$FSX_MOUNT_OPTS"} >/dev/null
wait_mounted "$W/mnt"
start=$(date +%s)
if fsx -N "$OPS" -S 1 -f "$ROOT/tests/conformance/$MIX" -P "$W/art" "$W/mnt/t/fsx.file" > "$W/fsx.log" 2>&1; then
  echo "fsx: $OPS operations ($MIX) with no mismatch in $(( $(date +%s) - start )) s"
else
  echo "fsx FAILED after $(( $(date +%s) - start )) s:"; tail -40 "$W/fsx.log"; exit 1
fi
