#!/usr/bin/env bash
# The whole test suite (README command 2). Installs what it needs, then:
# format and lint checks, the layering rule, unit + integration tests (real
# FUSE mounts), pjdfstest against the mount, fsx (100,000 operations, and
# 10,000 with large files and writes).
# Idempotent; run as root on Debian with /dev/fuse.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

need_pkg fusermount3 fuse3
enable_fuse_uring
need_pkg git git
need_pkg sqlite3 sqlite3
need_pkg rsync rsync
need_pkg tar tar
need_pkg python3 python3
need_pkg strace strace
need_cargo_tool pjdfstest pjdfstest
need_cargo_tool fsx fsx
need_cargo_tool cargo-fuzz cargo-fuzz
git config --global user.email >/dev/null 2>&1 || git config --global user.email "tests@circlefs.invalid"
git config --global user.name >/dev/null 2>&1 || git config --global user.name "circlefs tests"

passed=0; failed=0; failures=()
stage() { # stage NAME COMMAND...
  local name=$1; shift
  echo "=== $name"
  local t0=$(date +%s)
  if "$@"; then
    passed=$((passed + 1)); echo "=== $name: ok ($(( $(date +%s) - t0 )) s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED ($(( $(date +%s) - t0 )) s)"
  fi
}

layering() {
  # fusefs translates only; crypto and format never touch SQL or FUSE; store never touches crypto.
  local bad=0
  if grep -rnE 'crate::(store|crypto)|rusqlite' src/fusefs; then echo "fusefs must not use store or crypto"; bad=1; fi
  if grep -rnE 'rusqlite|fuser|crate::store|crate::vault' src/crypto src/format; then echo "crypto/format must stay pure"; bad=1; fi
  if grep -rnE 'crate::(crypto|vault|fusefs)|fuser' src/store; then echo "store must not use crypto, vault or fuse"; bad=1; fi
  if grep -rnE 'rusqlite' src --include=*.rs | grep -v '^src/store/'; then echo "SQL outside store"; bad=1; fi
  return $bad
}

stage "cargo fmt --check" cargo fmt --check
stage "cargo clippy -D warnings" cargo clippy --all-targets --all-features --quiet -- -D warnings
stage "layering rule" layering
stage "build release" build_release
stage "cargo test (unit, vault, CLI, real mounts)" cargo test --all-features
stage "cargo test -p fuser (vendored fuser: io_uring, idle hand-off)" cargo test -p fuser --lib --quiet
fuzz() {
  # cargo-fuzz without a sanitizer (stable toolchain): libFuzzer with coverage.
  mkdir -p fuzz/corpus/control fuzz/corpus/attrs fuzz/corpus/block
  cargo fuzz run -s none control fuzz/corpus/control fuzz/seeds/control -- -max_total_time="${FUZZ_SECS:-60}" >/tmp/circlefs-fuzz-control.log 2>&1 &&
  cargo fuzz run -s none attrs fuzz/corpus/attrs fuzz/seeds/attrs -- -max_total_time="${FUZZ_SECS_ATTRS:-20}" >/tmp/circlefs-fuzz-attrs.log 2>&1 &&
  cargo fuzz run -s none block fuzz/corpus/block fuzz/seeds/block -- -max_total_time="${FUZZ_SECS_BLOCK:-20}" >/tmp/circlefs-fuzz-block.log 2>&1 &&
  grep -h "^Done" /tmp/circlefs-fuzz-control.log /tmp/circlefs-fuzz-attrs.log /tmp/circlefs-fuzz-block.log || { tail -20 /tmp/circlefs-fuzz-*.log; return 1; }
}

# The release daemons below check every attribute-cache hit against the
# store (a stale entry is an EIO that fails the suite); debug builds, as
# cargo test's mounts use, always do.
export CIRCLEFS_CHECK_ATTR_CACHE=1
stage "pjdfstest" scripts/pjdfstest.sh
stage "fsx 100000 ops" scripts/fsx.sh "${FSX_OPS:-100000}"
stage "fsx 10000 ops, large" scripts/fsx.sh "${FSX_LARGE_OPS:-10000}" fsx-large.toml
stage "fsx 30000 ops, FUSE device (-o nouring)" env FSX_MOUNT_OPTS=nouring scripts/fsx.sh "${FSX_DEVICE_OPS:-30000}"
stage "cargo fuzz (control 60 s, attrs 20 s, block 20 s)" fuzz

echo
if [ "$failed" -gt 0 ]; then echo "failed stages: ${failures[*]}"; fi
echo "test.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
