#!/usr/bin/env bash
# Runs pjdfstest against a fresh circlefs mount and compares the failures
# with the committed expected list (tests/conformance/pjdfstest-expected-failures.txt).
# Usage: scripts/pjdfstest.sh [--update]   (exit 1 on a regression)
source "$(dirname "$0")/lib.sh"
need_pkg fusermount3 fuse3
enable_fuse_uring
need_cargo_tool pjdfstest pjdfstest
id tests >/dev/null 2>&1 || printf 'tests:x:::Dummy User for pjdfstest:/:/usr/sbin/nologin\n' | newusers
[ -x "$BIN" ] || build_release
W=$(mktemp -d /tmp/circlefs-pjd.XXXXXX)
chmod 755 "$W"
cleanup() { unmount_quiet "$W/mnt"; umount "$W/other" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/mnt" "$W/other"
mount -t tmpfs -o size=64m tmpfs "$W/other"
printf 'pjd-pass\n' > "$W/pw"
"$BIN" init "$W/store" --kdf fast --new-passphrase-file "$W/pw" >/dev/null
"$BIN" admin "$W/store" --user admin --passphrase-file "$W/pw" circle create t >/dev/null
"$BIN" mount "$W/store" "$W/mnt" --user admin --passphrase-file "$W/pw" -o allow_other >/dev/null
wait_mounted "$W/mnt"
chmod 777 "$W/mnt/t"
OUT="${PJD_OUT:-$W/pjdfstest.out}"
(cd "$W/mnt/t" && timeout 1200 pjdfstest -c "$ROOT/tests/conformance/pjdfstest.toml" -p "$W/mnt/t" -s "$W/other" >"$OUT" 2>&1) || true
EXPECTED="$ROOT/tests/conformance/pjdfstest-expected-failures.txt"
grep -q '^Summary:' "$OUT" || { echo "pjdfstest did not finish:"; tail -20 "$OUT"; exit 1; }
awk 'NF == 2 && $1 ~ /::/ && $2 != "ok" && $2 != "skipped" {print $1}' "$OUT" | sort -u > "$W/failed.txt"
grep '^Summary:' "$OUT"
pass=$(grep -cE ' ok$' "$OUT" || true)
fail=$(wc -l < "$W/failed.txt")
echo "pjdfstest: $pass passed, $fail failed"
if [ "${1:-}" = "--update" ]; then cp "$W/failed.txt" "$EXPECTED"; echo "updated $EXPECTED"; exit 0; fi
new=$(comm -23 "$W/failed.txt" <(grep -v '^#' "$EXPECTED" | awk '{print $1}' | sort -u) || true)
if [ -n "$new" ]; then
  echo "pjdfstest regressions (not in the expected list):"; echo "$new"
  grep -A6 -F "$(echo "$new" | head -5)" "$OUT" | head -60
  exit 1
fi
echo "pjdfstest: no regression against the expected list"
