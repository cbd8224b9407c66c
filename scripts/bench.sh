#!/usr/bin/env bash
# bench.sh -- compare circlefs with raw disk and other FUSE filesystems.
#
# usage: scripts/bench.sh [options]                 # peer comparison
#        scripts/bench.sh --scale [options]         # scale run (circlefs, gocryptfs)
#        scripts/bench.sh --requests [options]      # FUSE requests per phase
#
# Peer comparison: mounts each filesystem over a FRESH backing directory on
# the same disk (under the bench root) and runs the same workload
# (scripts/bench/workload.sh: sequential 1 GiB write/cold read, random 4 KiB
# read/write, 10,000 small files, a ~5,500-file source tree with git) in each,
# interleaved: run 1 = every filesystem in order, run 2 = the same, ... Prints
# a markdown table (median and min-max per filesystem, and circlefs against
# the best encrypted peer), the sequential throughput of circlefs as a
# fraction of the single-core crypto ceiling (criterion `block` benchmark),
# and writes table.md, raw.tsv, per-run files and chart.png to the results
# directory.
#
# Scale run (--scale): 100,000 files in one directory and in a deep tree
# (create, random stat of 10,000, readdir, rm) at 1k, 10k and 100k files
# (per-file cost), mount time of a store holding that many files (and the
# unlock alone), `trustee remove` on that circle, a 2 GiB file write and cold
# read, the daemon's peak RSS of every run. Writes scale.md and scale.tsv.
#
# Request counts (--requests): the small-file and tree groups of the peer
# comparison, once per FUSE filesystem (default: bindfs gocryptfs securefs
# cryfs circlefs), counting the FUSE requests each phase sends (kernel
# tracepoint fuse:fuse_request_send, recorded with perf, which is installed
# if missing), by kind. Prints and writes requests.md: what each filesystem
# asks of its daemon for the same work. Its times are not benchmark figures
# (the recording slows every phase).
#
# options:
#   -n N              runs per filesystem (default 3; --quick: 1; --scale: 1)
#   -o DIR            results directory (default $BENCH_ROOT/results/bench-<time>
#                     or .../scale-<time>)
#   --fs "A B ..."    filesystems, run in this order (default: raw bindfs
#                     gocryptfs securefs cryfs circlefs; --scale: circlefs
#                     gocryptfs). Known: raw bindfs gocryptfs securefs cryfs circlefs
#   --quick           small sizes for development: 64 MiB sequential, 16 MiB
#                     random file and 2 s runtimes, 1,000 small files, a
#                     ~1,000-file tree, 1 run; with --scale: 256 MiB big file
#   --no-crypto       skip `cargo bench --bench crypto -- block` (no ceiling line)
#   --opstats         mount circlefs with -o opstats: each of its mounts writes
#                     its per-request table (count, handling time, p50/p99)
#                     to circlefs.opstats.K.md in the results directory
#   --scale           the scale run instead of the peer comparison
#   --requests        the request counts instead of the peer comparison
#   --scale-max N     largest file count of the scale run (default 100000);
#                     the sequence is 1000, 10000, 100000 capped at N (N itself
#                     is added when it is not in the sequence)
#   --big-size SIZE   size of the scale run's big file (default 2G; fio syntax)
#   -h, --help        this text
#
# environment:
#   BENCH_ROOT           bench root on the disk under test (default
#                        /var/tmp/circlefs-bench): fs/ (backing dirs and
#                        mount points, fresh per run), cache/ (source tree
#                        tarball, built once), secrets/, results/
#   CIRCLEFS_MOUNT_OPTS  extra circlefs mount options, passed as -o "..."
#                        (e.g. threads=4)
#   CIRCLEFS_BIN         circlefs binary (default target/release/circlefs,
#                        built by this script)
#   BENCH_TREE_TAR       source tree tarball (default $BENCH_ROOT/cache/tree.tar,
#                        built by /work/shared/bench/tree/make-tree.sh or
#                        BENCH_MAKE_TREE; needs cargo and crates.io)
#   BENCH_SCALE_FILE_BYTES  bytes per file of the scale run (default 0)
#   BENCH_ONLY           workload groups of the peer comparison (default
#                        "seq rand meta tree"); other BENCH_* sizes: see
#                        scripts/bench/workload.sh
#
# Needs root (mounts, drops the page cache). Installs fio, fuse3, bindfs,
# gocryptfs, securefs, cryfs, git, python3, python3-matplotlib if missing.
# Everything it mounts is unmounted on exit, error or signal; mounts left
# under BENCH_ROOT/fs by a killed run are unmounted at start.
set -euo pipefail
export LC_ALL=C

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
HERE="$ROOT/scripts/bench"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

RUNS=""
OUTDIR=""
FSLIST=""
QUICK=0
CRYPTO=1
OPSTATS=0
OPSTATS_N=0
SCALE=0
REQUESTS=0
SCALE_MAX=100000
BIG_SIZE=""
while [ $# -gt 0 ]; do
  case $1 in
    -n) RUNS=${2:?-n needs a value}; shift 2 ;;
    -o) OUTDIR=${2:?-o needs a value}; shift 2 ;;
    --fs) FSLIST=${2:?--fs needs a value}; shift 2 ;;
    --fs=*) FSLIST=${1#--fs=}; shift ;;
    --quick) QUICK=1; shift ;;
    --no-crypto) CRYPTO=0; shift ;;
    --opstats) OPSTATS=1; shift ;;
    --scale) SCALE=1; shift ;;
    --requests) REQUESTS=1; shift ;;
    --scale-max) SCALE_MAX=${2:?--scale-max needs a value}; shift 2 ;;
    --scale-max=*) SCALE_MAX=${1#--scale-max=}; shift ;;
    --big-size) BIG_SIZE=${2:?--big-size needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$RUNS" ]; then
  case $RUNS in *[!0-9]* | 0) echo "bench.sh: -n needs a positive integer" >&2; exit 2 ;; esac
fi
case $SCALE_MAX in '' | *[!0-9]* | 0) echo "bench.sh: --scale-max needs a positive integer" >&2; exit 2 ;; esac
[ "$SCALE$REQUESTS" != 11 ] || { echo "bench.sh: --scale and --requests exclude each other" >&2; exit 2; }
if [ -z "$RUNS" ]; then
  if [ "$QUICK" = 1 ] || [ "$SCALE" = 1 ] || [ "$REQUESTS" = 1 ]; then RUNS=1; else RUNS=3; fi
fi
if [ -z "$FSLIST" ]; then
  if [ "$SCALE" = 1 ]; then
    FSLIST="circlefs gocryptfs"
  elif [ "$REQUESTS" = 1 ]; then
    FSLIST="bindfs gocryptfs securefs cryfs circlefs"
  else
    FSLIST="raw bindfs gocryptfs securefs cryfs circlefs"
  fi
fi
if [ "$REQUESTS" = 1 ]; then
  CRYPTO=0
  export BENCH_ONLY=${BENCH_ONLY:-"meta tree"}
fi
if [ -z "$BIG_SIZE" ]; then
  if [ "$QUICK" = 1 ]; then BIG_SIZE=256M; else BIG_SIZE=2G; fi
fi
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (mounts, drop_caches)" >&2; exit 1; }

BENCH_ROOT=${BENCH_ROOT:-/var/tmp/circlefs-bench}
mkdir -p "$BENCH_ROOT"
BENCH_ROOT=$(cd "$BENCH_ROOT" && pwd)
# One bench.sh per bench root at a time (it unmounts what it finds there).
# Long-lived children (workload, FUSE daemons) get fd 9 closed (9>&-) so that
# a killed run does not leave the lock held.
exec 9> "$BENCH_ROOT/.lock"
flock -n 9 || { echo "bench.sh: another bench.sh is running on $BENCH_ROOT" >&2; exit 1; }
FSROOT=$BENCH_ROOT/fs
SECRETS=$BENCH_ROOT/secrets
CACHE=$BENCH_ROOT/cache
PASS=bench-pass
STAMP=$(date +%Y%m%d-%H%M%S)
if [ -z "$OUTDIR" ]; then
  if [ "$SCALE" = 1 ]; then
    OUTDIR=$BENCH_ROOT/results/scale-$STAMP
  elif [ "$REQUESTS" = 1 ]; then
    OUTDIR=$BENCH_ROOT/results/requests-$STAMP
  else
    OUTDIR=$BENCH_ROOT/results/bench-$STAMP
  fi
fi

log() { echo "[bench $(date +%T)] $*" >&2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; sleep 1; }

# ------------------------------------------------------------------ filesystems
# Each filesystem NAME has create_NAME BACKING (a fresh volume in the empty
# directory BACKING), attach_NAME BACKING MNT (mount it on the empty MNT, set
# BENCH_DIR when the workload runs elsewhere than MNT) and version_NAME.
# Passwords come from files under $SECRETS, never from the command line
# where a tool allows it.
CRYFS_ENV=(env CRYFS_FRONTEND=noninteractive CRYFS_NO_UPDATE_CHECK=true)

create_raw() { :; }
attach_raw() { BENCH_DIR=$1; }
version_raw() { echo "$(findmnt -no FSTYPE -T "$FSROOT") on $(findmnt -no SOURCE -T "$FSROOT")"; }

create_bindfs() { :; }
attach_bindfs() { bindfs "$1" "$2"; }
version_bindfs() { bindfs --version 2>&1 | head -1; }

create_gocryptfs() { gocryptfs -init -q -passfile "$SECRETS/pass" "$1" > /dev/null; }
# -nosyslog: the daemon's messages go to daemons.log (there may be no syslog)
attach_gocryptfs() { gocryptfs -q -nosyslog -passfile "$SECRETS/pass" "$1" "$2" > /dev/null 2>> "$OUTDIR/daemons.log"; }
version_gocryptfs() { gocryptfs -version 2>&1 | head -1; }

# securefs and cryfs only take the password on the command line or stdin.
create_securefs() { securefs create --pass "$PASS" "$1" > /dev/null 2>&1; }
attach_securefs() { securefs mount -b --log /dev/null --pass "$PASS" "$1" "$2" > /dev/null 2>&1; }
version_securefs() { echo "securefs $(dpkg-query -W -f='${Version}' securefs 2>/dev/null)"; }

# cryfs creates the volume at its first mount.
create_cryfs() { :; }
attach_cryfs() {
  echo "$PASS" | "${CRYFS_ENV[@]}" cryfs --allow-replaced-filesystem "$1" "$2" > /dev/null 2>&1
}
version_cryfs() { echo "cryfs $(dpkg-query -W -f='${Version}' cryfs 2>/dev/null)"; }

circlefs_admin() { # STORE COMMAND...
  local store=$1
  shift
  "$BIN" admin "$store" --user admin --passphrase-file "$SECRETS/pass" "$@"
}
create_circlefs() {
  "$BIN" init "$1/store" --kdf fast --new-passphrase-file "$SECRETS/pass" > /dev/null
  circlefs_admin "$1/store" circle create bench > /dev/null
}
attach_circlefs() {
  local opts=()
  if [ -n "${CIRCLEFS_MOUNT_OPTS:-}" ]; then opts=(-o "$CIRCLEFS_MOUNT_OPTS"); fi
  if [ "$OPSTATS" = 1 ]; then
    OPSTATS_N=$((OPSTATS_N + 1))
    opts+=(-o "opstats=$OUTDIR/circlefs.opstats.$OPSTATS_N.md")
  fi
  "$BIN" mount "$1/store" "$2" --user admin --passphrase-file "$SECRETS/pass" \
    --log-file "$OUTDIR/circlefs.log" "${opts[@]}" > /dev/null
  BENCH_DIR=$2/bench
}
version_circlefs() {
  echo "$("$BIN" --version 2>&1 | head -1) $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty') opts=${CIRCLEFS_MOUNT_OPTS:-default}"
}

KNOWN_FS="raw bindfs gocryptfs securefs cryfs circlefs"
for fs in $FSLIST; do
  case " $KNOWN_FS " in *" $fs "*) ;; *) echo "bench.sh: unknown filesystem '$fs' (known: $KNOWN_FS)" >&2; exit 2 ;; esac
done
if [ "$SCALE" = 1 ]; then
  for fs in $FSLIST; do
    case $fs in circlefs | gocryptfs) ;; *) echo "bench.sh: --scale supports circlefs and gocryptfs only" >&2; exit 2 ;; esac
  done
fi

# ------------------------------------------------------------------ mounts and cleanup
declare -A MOUNTED=() # mountpoint -> fs
CHILD=""

is_mounted() { findmnt -rn -M "$1" > /dev/null 2>&1; }

# The FUSE daemon serving MNT: a process with MNT as one of its arguments and
# /dev/fuse open (the one with the largest VmHWM if several). Empty if none.
daemon_pid() {
  python3 - "$1" << 'EOF'
import os, sys
m = sys.argv[1].encode()
best = (-1, "")
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        if m not in open("/proc/%s/cmdline" % p, "rb").read().split(b"\0"):
            continue
        fds = os.listdir("/proc/%s/fd" % p)
        if not any(os.readlink("/proc/%s/fd/%s" % (p, f)) == "/dev/fuse" for f in fds):
            continue
        hwm = 0
        for line in open("/proc/%s/status" % p):
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
        best = max(best, (hwm, p))
    except OSError:
        continue
print(best[1])
EOF
}

# "PEAK NOW": VmHWM and VmRSS of PID in MiB, or nothing. The peak includes
# the key derivation at unlock (Argon2id in circlefs' daemon: 19 MiB with
# --kdf fast; scrypt in gocryptfs), VmRSS is the resident size at the end.
rss_mib() {
  [ -n "$1" ] || return 0
  awk '/^VmHWM:/ { h = $2 } /^VmRSS:/ { r = $2 } END { if (h != "") printf "%.1f %.1f", h / 1024, r / 1024 }' \
    "/proc/$1/status" 2> /dev/null || true
}
# record_rss EMITTER...: call EMITTER... NAME VALUE MiB for both figures.
record_rss() {
  local f
  read -r -a f <<< "$(rss_mib "$DPID")"
  [ "${#f[@]}" = 2 ] || return 0
  "$@" rss_peak "${f[0]}" MiB
  "$@" rss_end "${f[1]}" MiB
}
out_line() { echo "$1 $2 $3" >> "$OUT_TMP"; }

# Unmount MNT and wait until its daemon (PID, optional) has exited.
fuse_umount() { # MNT [PID]
  local m=$1 pid=${2:-}
  if is_mounted "$m"; then
    sync
    fusermount3 -u "$m" 2> /dev/null || umount "$m" 2> /dev/null || true
    for _ in $(seq 1 50); do is_mounted "$m" || break; sleep 0.2; done
    if is_mounted "$m"; then
      log "lazy-unmounting $m"
      fusermount3 -u -z "$m" 2> /dev/null || umount -l "$m" 2> /dev/null || true
    fi
  fi
  if [ -n "$pid" ]; then
    for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ ! -d "/proc/$pid" ] || log "daemon $pid of $m still running after unmount"
  fi
}

cleanup() {
  local m
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2> /dev/null; then
    log "cleanup: stopping workload (process group $CHILD)"
    kill -TERM -- "-$CHILD" 2> /dev/null || true
    wait "$CHILD" 2> /dev/null || true
    sleep 1
  fi
  for m in "${!MOUNTED[@]}"; do
    log "cleanup: unmounting ${MOUNTED[$m]} at $m"
    fuse_umount "$m"
    unset "MOUNTED[$m]"
  done
  if [ -d "$FSROOT" ] && ! findmnt -rn -o TARGET | grep -q "^$FSROOT/"; then rm -rf "$FSROOT"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

# The workload runs in its own process group (so that cleanup can stop it
# with its fio/tar/git); its pid is kept in CHILD_FILE so that a run after a
# killed one (SIGKILL: no cleanup) can stop exactly that group.
CHILD_FILE=$BENCH_ROOT/workload.pid
started_child() {
  CHILD=$1
  echo "$CHILD" > "$CHILD_FILE"
}
stop_stale_child() {
  local pid
  [ -f "$CHILD_FILE" ] || return 0
  pid=$(cat "$CHILD_FILE")
  case $pid in '' | *[!0-9]*) rm -f "$CHILD_FILE"; return 0 ;; esac
  # only if it still is our workload (pid not reused) and leads its group
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | grep -q "$HERE/" &&
    [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then
    log "stopping the workload of an earlier, killed run (process group $pid)"
    kill -TERM -- "-$pid" 2> /dev/null || true
    sleep 1
  fi
  rm -f "$CHILD_FILE"
}

# Mounts under $FSROOT left by an earlier, killed run (ours by construction).
unmount_stale() {
  local m
  stop_stale_child
  while read -r m; do
    [ -n "$m" ] || continue
    log "stale mount $m from an earlier run: unmounting"
    fuse_umount "$m"
  done < <(findmnt -rn -o TARGET | awk -v r="$FSROOT/" 'index($0, r) == 1' | sort -r)
  if findmnt -rn -o TARGET | grep -q "^$FSROOT/"; then
    log "still mounted under $FSROOT; not removing it"; return 1
  fi
  rm -rf "$FSROOT"
}

# fresh_dirs FS: empty backing and mount directories for FS; sets B and M.
fresh_dirs() {
  CUR=$FSROOT/$1
  rm -rf "$CUR"
  B=$CUR/backing
  M=$CUR/mnt
  mkdir -p "$B" "$M"
}

# attach FS: mount FS (B on M) and wait until BENCH_DIR inside the mount
# answers; sets BENCH_DIR, DPID (daemon pid) and ATTACH_S (seconds from
# starting the mount command until BENCH_DIR could be stat-ed).
attach() {
  local fs=$1 t0
  BENCH_DIR=$M
  DPID=""
  t0=$EPOCHREALTIME
  "attach_$fs" "$B" "$M" 9>&- || { log "mounting $fs failed"; return 1; }
  if [ "$fs" != raw ]; then
    MOUNTED[$M]=$fs
    for _ in $(seq 1 4000); do
      grep -q " $M fuse" /proc/mounts && break
      sleep 0.005
    done
    grep -q " $M fuse" /proc/mounts || { log "$fs: not mounted at $M"; return 1; }
  fi
  until stat "$BENCH_DIR" > /dev/null 2>&1; do sleep 0.005; done
  ATTACH_S=$(since "$t0")
  if [ "$fs" != raw ]; then
    DPID=$(daemon_pid "$M")
    [ -n "$DPID" ] || log "no daemon process found for $M (no peak RSS)"
  fi
}

detach() { # FS
  [ "$1" != raw ] || return 0
  fuse_umount "$M" "$DPID"
  if is_mounted "$M"; then log "$1 still mounted at $M"; return 1; fi
  unset "MOUNTED[$M]"
}

# ------------------------------------------------------------------ setup
PY=python3
pick_python() {
  local p
  for p in python3 /usr/bin/python3; do
    if "$p" -c 'import matplotlib' > /dev/null 2>&1; then PY=$p; return 0; fi
  done
  return 1
}

setup() {
  log "checking tools"
  need_pkg fio fio
  need_pkg fusermount3 fuse3
  enable_fuse_uring
  need_pkg git git
  need_pkg python3 python3
  [ "$REQUESTS" = 0 ] || need_pkg perf linux-perf
  # table.py needs matplotlib: Debian's python3-matplotlib serves
  # /usr/bin/python3, which may not be the python3 first on PATH (pyenv)
  if ! pick_python; then
    need_pkg __python3_matplotlib__ python3 python3-matplotlib # (a module, no command)
    pick_python || log "matplotlib not importable; no chart"
  fi
  local fs
  for fs in $FSLIST; do
    case $fs in
      bindfs | gocryptfs | securefs | cryfs) need_pkg "$fs" "$fs" ;;
    esac
  done
  log "building circlefs (release)"
  build_release
  [ -x "$BIN" ] || { echo "bench.sh: no circlefs binary at $BIN" >&2; exit 1; }
  unmount_stale
  mkdir -p "$FSROOT" "$CACHE" "$OUTDIR"
  (umask 077 && mkdir -p "$SECRETS" && chmod 700 "$SECRETS" && printf '%s\n' "$PASS" > "$SECRETS/pass" &&
    printf 'bob-pass\n' > "$SECRETS/bob")
  log "results in $OUTDIR"
}

write_meta() {
  local fs
  {
    echo "# host $(hostname) $(uname -r) cpus=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "# disk $(findmnt -no SOURCE,FSTYPE,OPTIONS -T "$BENCH_ROOT")"
    echo "# date $(date -u +%FT%TZ) quick=$QUICK"
    for fs in $FSLIST; do echo "version $fs $("version_$fs" 2>&1 | tr '\n' ' ')"; done
    echo "fslist $FSLIST"
    echo "runs $RUNS"
  } > "$OUTDIR/meta.txt"
}

# Criterion `block` benchmark: single-core block encrypt/decrypt throughput.
crypto_ceiling() {
  [ "$CRYPTO" = 1 ] || return 0
  local extra=() tdir=${CARGO_TARGET_DIR:-$ROOT/target}
  if [ "$QUICK" = 1 ]; then extra=(--warm-up-time 1 --measurement-time 2); fi
  log "crypto ceiling: cargo bench --bench crypto -- block"
  if ! (cd "$ROOT" && cargo bench --quiet --bench crypto -- block "${extra[@]}") > "$OUTDIR/crypto.log" 2>&1; then
    log "cargo bench failed (see $OUTDIR/crypto.log); no ceiling"
    return 0
  fi
  python3 - "$tdir/criterion" > "$OUTDIR/crypto.tsv" << 'EOF'
import json, os, sys
base = sys.argv[1]
for b in ("encrypt", "decrypt"):
    d = os.path.join(base, "block", b, "new")
    est = json.load(open(os.path.join(d, "estimates.json")))
    meta = json.load(open(os.path.join(d, "benchmark.json")))
    nbytes = meta["throughput"]["Bytes"]
    ns = est["mean"]["point_estimate"]
    print("block_%s\t%.1f\tMiB/s\t%d bytes in %.1f ns" % (b, nbytes / (ns * 1e-9) / 2**20, nbytes, ns))
EOF
  log "crypto ceiling: $(cut -f1-3 "$OUTDIR/crypto.tsv" | tr '\t\n' ' ')"
}

# Source tree tarball (built once) and, for --quick, a ~1,000-file subset.
TREE_TAR=""
ensure_tree() {
  local full=${BENCH_TREE_TAR:-$CACHE/tree.tar}
  if [ ! -f "$full" ]; then
    log "building the source tree tarball $full (once; cargo vendor)"
    "${BENCH_MAKE_TREE:-/work/shared/bench/tree/make-tree.sh}" "$full"
  fi
  TREE_TAR=$full
  if [ "$QUICK" = 1 ]; then
    local quick=$CACHE/tree-quick.tar
    if [ ! -f "$quick" ] || [ "$quick" -ot "$full" ]; then
      log "building the quick tree $quick"
      local tmp dirs
      tmp=$(mktemp -d "$CACHE/quick.XXXXXX")
      # whole top-level directories (crates), by name, until about 1,000 files
      mapfile -t dirs < <(tar -tf "$full" |
        awk -F/ '!/\/$/ && NF > 2 { n[$2]++ } END { for (d in n) print d, n[d] }' |
        sort | awk '{ s += $2; print "./" $1; if (s >= 1000) exit }')
      tar -xf "$full" -C "$tmp" -- "${dirs[@]}"
      tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2025-01-01 00:00Z' \
        -cf "$quick.tmp" -C "$tmp" .
      mv "$quick.tmp" "$quick"
      rm -rf "$tmp"
    fi
    TREE_TAR=$quick
  fi
  log "tree: $(tar -tf "$TREE_TAR" | grep -vc '/$') files in $TREE_TAR"
}

# ------------------------------------------------------------------ peer comparison
bench_one() { # FS RUN
  local fs=$1 run=$2 out="$OUTDIR/$1.run$2.txt" rc=0 t0 rss
  fresh_dirs "$fs"
  log "== $fs run $run: mounting"
  if ! "create_$fs" "$B" || ! attach "$fs"; then
    echo "# mount failed" > "$out"
    detach "$fs" || true
    return 1
  fi
  echo "# fs=$fs run=$run load_before=$(cut -d' ' -f1-3 /proc/loadavg)" > "$out.tmp"
  t0=$EPOCHREALTIME
  # own session so that cleanup can stop the workload and its fio/tar/git;
  # background + wait so that a signal is handled at once
  local reqs=""
  if [ "$REQUESTS" = 1 ]; then reqs=$OUTDIR/requests.tmp; mkdir -p "$reqs"; fi
  BENCH_QUICK=$QUICK BENCH_TREE_TAR=$TREE_TAR BENCH_REQUESTS=$reqs \
    setsid bash "$HERE/workload.sh" "$BENCH_DIR" >> "$out.tmp" 9>&- &
  started_child $!
  wait "$CHILD" || rc=$?
  CHILD=""
  rm -f "$CHILD_FILE"
  OUT_TMP=$out.tmp
  record_rss out_line
  rss=$(rss_mib "$DPID")
  echo "# load_after=$(cut -d' ' -f1-3 /proc/loadavg) wall_s=$(since "$t0") rc=$rc" >> "$out.tmp"
  log "== $fs run $run: unmounting (workload rc=$rc, peak/end RSS ${rss:-?} MiB)"
  detach "$fs" || rc=1
  echo "# backing_kib_after=$(du -sk "$B" | cut -f1)" >> "$out.tmp"
  mv "$out.tmp" "$out"
  rm -rf "$CUR"
  return $rc
}

peer_comparison() {
  ensure_tree
  crypto_ceiling
  write_meta
  local run fs failed=0
  for run in $(seq 1 "$RUNS"); do
    for fs in $FSLIST; do
      bench_one "$fs" "$run" || { log "!! $fs run $run failed"; failed=1; }
    done
  done
  if [ "$REQUESTS" = 1 ]; then
    rm -rf "$OUTDIR/requests.tmp"
    "$PY" "$HERE/requests.py" "$OUTDIR"
  else
    "$PY" "$HERE/table.py" "$OUTDIR"
  fi
  echo
  echo "results: $OUTDIR"
  return $failed
}

# ------------------------------------------------------------------ scale run
SCALE_OUT=""
semit() { # FS LAYOUT N NAME VALUE UNIT
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$SCALE_OUT"
}
# scale_phase FS LAYOUT N PHASE: run scale.py, record its figures.
scale_phase() {
  local fs=$1 layout=$2 n=$3 phase=$4 name value unit rc=0 tmp=$OUTDIR/.phase.out
  log "   $fs $layout n=$n $phase"
  # own session and background + wait: a signal stops it at once (cleanup)
  BENCH_SCALE_FILE_BYTES=${BENCH_SCALE_FILE_BYTES:-0} setsid python3 "$HERE/scale.py" "$phase" "$BENCH_DIR" "$n" "$layout" > "$tmp" 9>&- &
  started_child $!
  wait "$CHILD" || rc=$?
  CHILD=""
  rm -f "$CHILD_FILE"
  [ "$rc" = 0 ] || { log "scale.py $phase failed (rc=$rc)"; return 1; }
  while read -r name value unit; do
    case $name in '#'*) echo "$fs $layout $n $name $value $unit" >> "$OUTDIR/scale.log"; continue ;; esac
    semit "$fs" "$layout" "$n" "$name" "$value" "$unit"
  done < "$tmp"
  rm -f "$tmp"
}

median3() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

scale_flat() { # FS N
  local fs=$1 n=$2 t0 u=() mt=() tr_s
  fresh_dirs "$fs"
  log "== scale $fs flat n=$n"
  "create_$fs" "$B"
  if [ "$fs" = circlefs ]; then
    circlefs_admin "$B/store" user create bob --new-passphrase-file "$SECRETS/bob" > /dev/null
    circlefs_admin "$B/store" trustee add bench bob --level read > /dev/null
  fi
  attach "$fs"
  scale_phase "$fs" flat "$n" create
  drop
  scale_phase "$fs" flat "$n" stat
  drop
  scale_phase "$fs" flat "$n" readdir
  record_rss semit "$fs" flat "$n"
  detach "$fs"
  # mount time of a store holding n files, and (circlefs) the unlock alone
  for _ in 1 2 3; do
    drop
    attach "$fs"
    mt+=("$ATTACH_S")
    detach "$fs"
    if [ "$fs" = circlefs ]; then
      t0=$EPOCHREALTIME
      circlefs_admin "$B/store" circle list > /dev/null
      u+=("$(since "$t0")")
    fi
  done
  semit "$fs" flat "$n" mount "$(median3 "${mt[@]}")" s
  if [ "$fs" = circlefs ]; then
    semit "$fs" flat "$n" unlock "$(median3 "${u[@]}")" s
    semit "$fs" flat "$n" mount_minus_unlock "$(awk -v a="$(median3 "${mt[@]}")" -v b="$(median3 "${u[@]}")" 'BEGIN { printf "%.3f", a - b }')" s
    log "   circlefs trustee remove bench bob (n=$n)"
    t0=$EPOCHREALTIME
    circlefs_admin "$B/store" trustee remove bench bob > /dev/null
    tr_s=$(since "$t0")
    semit "$fs" flat "$n" trustee_remove "$tr_s" s
    semit "$fs" flat "$n" trustee_remove_minus_unlock "$(awk -v a="$tr_s" -v b="$(median3 "${u[@]}")" 'BEGIN { printf "%.3f", a - b }')" s
  fi
  attach "$fs"
  drop
  scale_phase "$fs" flat "$n" rm
  detach "$fs"
  rm -rf "$CUR"
}

scale_deep() { # FS N
  local fs=$1 n=$2
  fresh_dirs "$fs"
  log "== scale $fs deep n=$n"
  "create_$fs" "$B"
  attach "$fs"
  scale_phase "$fs" deep "$n" create
  drop
  scale_phase "$fs" deep "$n" stat
  drop
  scale_phase "$fs" deep "$n" readdir
  drop
  scale_phase "$fs" deep "$n" rm
  record_rss semit "$fs" deep "$n"
  detach "$fs"
  rm -rf "$CUR"
}

scale_big() { # FS
  local fs=$1 v f
  fresh_dirs "$fs"
  log "== scale $fs big file $BIG_SIZE"
  "create_$fs" "$B"
  attach "$fs"
  f=$BENCH_DIR/big.dat
  v=$(fio --output-format=json --name=bigw --filename="$f" --rw=write --bs=1M --size="$BIG_SIZE" \
    --numjobs=1 --ioengine=psync --end_fsync=1 | python3 -c "import json,sys; s=sys.stdin.read(); print('%.1f' % (json.loads(s[s.find('{'):])['jobs'][0]['write']['bw_bytes'] / 2**20))")
  semit "$fs" big "$BIG_SIZE" big_write "$v" MiB/s
  drop
  v=$(fio --output-format=json --name=bigr --filename="$f" --rw=read --bs=1M --size="$BIG_SIZE" \
    --numjobs=1 --ioengine=psync | python3 -c "import json,sys; s=sys.stdin.read(); print('%.1f' % (json.loads(s[s.find('{'):])['jobs'][0]['read']['bw_bytes'] / 2**20))")
  semit "$fs" big "$BIG_SIZE" big_read "$v" MiB/s
  rm -f "$f"
  record_rss semit "$fs" big "$BIG_SIZE"
  detach "$fs"
  rm -rf "$CUR"
}

scale_run() {
  local ns=() n fs
  for n in 1000 10000 100000; do [ "$n" -le "$SCALE_MAX" ] && ns+=("$n"); done
  case " ${ns[*]} " in *" $SCALE_MAX "*) ;; *) [ "$SCALE_MAX" -gt 100000 ] || ns+=("$SCALE_MAX") ;; esac
  [ "$SCALE_MAX" -le 100000 ] || ns+=("$SCALE_MAX")
  write_meta
  {
    echo "counts ${ns[*]}"
    echo "big $BIG_SIZE"
    echo "filebytes ${BENCH_SCALE_FILE_BYTES:-0}"
  } >> "$OUTDIR/meta.txt"
  SCALE_OUT=$OUTDIR/scale.tsv
  printf 'fs\tlayout\tn\tmetric\tvalue\tunit\n' > "$SCALE_OUT"
  log "scale: file counts ${ns[*]}; filesystems $FSLIST"
  for n in "${ns[@]}"; do
    for fs in $FSLIST; do
      scale_flat "$fs" "$n"
      scale_deep "$fs" "$n"
    done
  done
  for fs in $FSLIST; do scale_big "$fs"; done
  "$PY" "$HERE/table.py" --scale "$OUTDIR"
  echo
  echo "results: $OUTDIR"
}

setup
if [ "$SCALE" = 1 ]; then scale_run; else peer_comparison; fi
