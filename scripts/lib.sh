#!/usr/bin/env bash
# Shared helpers for circlefs scripts: install what is needed, build, mount.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${CIRCLEFS_BIN:-$ROOT/target/release/circlefs}"

# Install Debian packages if a command is missing (idempotent).
need_pkg() { # need_pkg COMMAND PACKAGE...
  local cmd=$1; shift
  if ! command -v "$cmd" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      if [ -z "${_APT_UPDATED:-}" ]; then apt-get update -qq; _APT_UPDATED=1; fi
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
      echo "missing $cmd: install $* (needs root)" >&2; return 1
    fi
  fi
}

# Let FUSE daemons use io_uring (fuse.enable_uring; Linux 6.14+). circlefs
# then serves each CPU's requests on that CPU (docs/performance.md); without
# it circlefs serves them from the FUSE device as before. Needs root; a
# kernel without the parameter is left as it is. Idempotent.
enable_fuse_uring() {
  local p=/sys/module/fuse/parameters/enable_uring
  if [ -w "$p" ] && [ "$(cat "$p")" != Y ]; then echo Y > "$p"; fi
  return 0
}

need_cargo_tool() { # need_cargo_tool COMMAND CRATE
  command -v "$1" >/dev/null 2>&1 || cargo install --locked "$2" >/dev/null 2>&1 || cargo install "$2"
}

build_release() {
  (cd "$ROOT" && cargo build --release --quiet)
}

# Wait until MOUNTPOINT is a mounted circlefs.
wait_mounted() {
  local i
  for i in $(seq 1 100); do
    if grep -q " $(realpath "$1") fuse" /proc/mounts 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "not mounted: $1" >&2; return 1
}

unmount_quiet() {
  fusermount3 -u "$1" 2>/dev/null || umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
}
