#!/usr/bin/env bash
# workload.sh DIR -- run the benchmark workload inside DIR (the plaintext view
# of a mounted filesystem) and print one figure per line on stdout:
#
#     <name> <value> <unit>
#
# Lines starting with '#' are comments (sanity information); logs go to
# stderr. Everything happens in DIR/bench.work, removed at the end. Needs root
# (drops the page cache), fio, python3, git, tar, GNU coreutils and grep.
# Modelled on /work/shared/bench/fsbench.sh so figures are comparable.
#
#   seq_write       fio, SEQ_SIZE (1 GiB), bs=1M, psync, 1 job, fsync at end  MiB/s
#   seq_read        the same file, page cache dropped first, bs=1M            MiB/s
#   rand_read_4k    RAND_SIZE (256 MiB) file, page cache dropped, buffered psync
#                   iodepth 1, random order touching each 4 KiB block once,
#                   capped at RUNTIME (10 s)                                   IOPS
#   rand_read_4k_direct  same file, O_DIRECT, time_based RUNTIME: every read
#                   reaches the daemon (omitted where O_DIRECT is refused)     IOPS
#   rand_write_4k   same file, buffered psync iodepth 1, time_based RUNTIME, no
#                   fsync (FUSE without writeback cache: every write reaches
#                   the daemon)                                                IOPS
#   meta_create     NDIRS x NFILES (100 x 100) files of 1-4 KiB, one python
#                   process                                                    s
#   meta_lsR        page cache dropped, ls -lR over them                       s
#   meta_rm         rm -rf of them                                             s
#   tree_extract    tar -xf of a real source tree (~5,500 files; the tarball is
#                   warm in the page cache on the raw disk)                     s
#   tree_du         page cache dropped, du -s                                  s
#   tree_grep       page cache dropped, grep -rF PATTERN | wc -l               s
#   git_add         git init + git add -A                                      s
#   git_commit      git commit                                                 s
#   git_status      git status --porcelain (clean tree: stats every file)      s
#   tree_rm         rm -rf of the tree (with .git)                             s
#
# Environment (defaults in parentheses):
#   BENCH_TREE_TAR   tarball of the source tree (required for the tree group)
#   BENCH_QUICK=1    small sizes: 64 MiB seq, 16 MiB random file, 2 s runtimes,
#                    1,000 small files (10 x 100)
#   BENCH_SEQ_SIZE, BENCH_RAND_SIZE, BENCH_RUNTIME, BENCH_NDIRS, BENCH_NFILES
#                    override single sizes (fio size syntax: 1G, 256M)
#   BENCH_ONLY       groups to run: "seq rand meta tree" (all)
#   BENCH_DROP=0     do not drop the page cache (unprivileged; warm figures)
#   BENCH_GREP       fixed string for tree_grep (unsafe)
#   BENCH_REQUESTS   a directory: count the FUSE requests each small-file and
#                    tree phase sends to DIR's filesystem (kernel tracepoint
#                    fuse:fuse_request_send, recorded with perf) and print
#                    "# requests <phase> total=N OP=n ..." after its figure
#                    (the recording slows the phases: their times are not
#                    comparable with a run without it)
set -euo pipefail
export LC_ALL=C

DIR=${1:?usage: workload.sh DIR}
[ -d "$DIR" ] || { echo "workload: $DIR is not a directory" >&2; exit 2; }
DIR=$(cd "$DIR" && pwd)
W="$DIR/bench.work"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  SEQ_SIZE=64M; RAND_SIZE=16M; RUNTIME=2; NDIRS=10; NFILES=100
else
  SEQ_SIZE=1G; RAND_SIZE=256M; RUNTIME=10; NDIRS=100; NFILES=100
fi
SEQ_SIZE=${BENCH_SEQ_SIZE:-$SEQ_SIZE}
RAND_SIZE=${BENCH_RAND_SIZE:-$RAND_SIZE}
RUNTIME=${BENCH_RUNTIME:-$RUNTIME}
NDIRS=${BENCH_NDIRS:-$NDIRS}
NFILES=${BENCH_NFILES:-$NFILES}
ONLY=${BENCH_ONLY:-"seq rand meta tree"}
DROP=${BENCH_DROP:-1}
GREP_PATTERN=${BENCH_GREP:-unsafe}
TREE_TAR=${BENCH_TREE_TAR:-}
REQS=${BENCH_REQUESTS:-}

log()   { echo "[workload $(date +%T)] $*" >&2; }
emit()  { printf '%s %s %s\n' "$1" "$2" "$3"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
drop() {
  sync
  if [ "$DROP" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
  sleep 1 # let daemons with short-lived caches of their own settle
}
want() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# fio_json EXPR FIO-ARGS...: run fio, print EXPR evaluated on the job dict 'job'.
fio_json() {
  local expr=$1 out
  shift
  out=$(fio --output-format=json "$@") || { printf '%s\n' "$out" >&2; return 1; }
  printf '%s' "$out" | python3 -c "
import json, sys
s = sys.stdin.read(); s = s[s.find('{'):]
job = json.loads(s)['jobs'][0]
if job.get('error'): sys.exit('fio error %s' % job['error'])
print('%.1f' % ($expr))"
}

# FUSE requests of one phase (BENCH_REQUESTS): req_begin NAME ... req_end NAME.
# Only the requests of DIR's connection (its device number) are counted.
REQ_PID=""
req_begin() {
  [ -n "$REQS" ] || return 0
  perf record -q -e fuse:fuse_request_send -a -o "$REQS/$1.data" > /dev/null 2>&1 &
  REQ_PID=$!
  sleep 1 # perf attaches to every CPU before the phase starts
}
req_end() {
  [ -n "$REQS" ] || return 0
  kill -INT "$REQ_PID" 2>/dev/null || true
  wait "$REQ_PID" 2>/dev/null || true
  REQ_PID=""
  perf script -i "$REQS/$1.data" 2>/dev/null |
    awk -v dev="$(stat -c %d "$DIR")" -v name="$1" '
      $0 ~ ("connection " dev " ") && match($0, /\(FUSE_[A-Z0-9_]+\)/) {
        op = substr($0, RSTART + 6, RLENGTH - 7); n[op]++; t++
      }
      END {
        printf "# requests %s total=%d", name, t
        for (op in n) printf " %s=%d", op, n[op]
        printf "\n"
      }'
  rm -f "$REQS/$1.data"
}

cleanup_work() {
  [ -z "$REQ_PID" ] || kill -INT "$REQ_PID" 2>/dev/null || true
  rm -rf "$W" 2>/dev/null || true
}
if [ -e "$W" ]; then log "removing stale $W"; rm -rf "$W"; fi
mkdir -p "$W"
trap cleanup_work EXIT

echo "# workload dir=$DIR fstype=$(findmnt -no FSTYPE -T "$DIR" 2>/dev/null || echo '?') seq=$SEQ_SIZE rand=$RAND_SIZE runtime=$RUNTIME files=$((NDIRS * NFILES)) date=$(date -u +%FT%TZ)"

# ------------------------------------------------------------------ sequential
if want seq; then
  log "seq_write $SEQ_SIZE"
  v=$(fio_json "job['write']['bw_bytes'] / 2**20" --name=seqw --filename="$W/seq.dat" \
    --rw=write --bs=1M --size="$SEQ_SIZE" --numjobs=1 --ioengine=psync --end_fsync=1)
  emit seq_write "$v" MiB/s
  drop
  log "seq_read (cold)"
  v=$(fio_json "job['read']['bw_bytes'] / 2**20" --name=seqr --filename="$W/seq.dat" \
    --rw=read --bs=1M --size="$SEQ_SIZE" --numjobs=1 --ioengine=psync)
  emit seq_read "$v" MiB/s
  rm -f "$W/seq.dat"
  sync
fi

# ------------------------------------------------------------------ random 4k
if want rand; then
  log "rand: laying out $RAND_SIZE"
  fio --output-format=terse --name=lay --filename="$W/rand.dat" --rw=write --bs=1M \
    --size="$RAND_SIZE" --ioengine=psync --end_fsync=1 > /dev/null
  drop
  log "rand_read_4k (cold)"
  v=$(fio_json "job['read']['iops']" --name=rr --filename="$W/rand.dat" --rw=randread \
    --bs=4k --size="$RAND_SIZE" --ioengine=psync --iodepth=1 --numjobs=1 \
    --runtime="$RUNTIME" --randrepeat=1 --invalidate=1 --fadvise_hint=0)
  emit rand_read_4k "$v" IOPS
  log "rand_read_4k_direct"
  if v=$(fio_json "job['read']['iops']" --name=rrd --filename="$W/rand.dat" --rw=randread \
    --bs=4k --size="$RAND_SIZE" --ioengine=psync --iodepth=1 --numjobs=1 \
    --runtime="$RUNTIME" --time_based --randrepeat=1 --direct=1 --fadvise_hint=0 2> /dev/null); then
    emit rand_read_4k_direct "$v" IOPS
  else
    echo "# rand_read_4k_direct failed (O_DIRECT refused?)"
  fi
  log "rand_write_4k"
  v=$(fio_json "job['write']['iops']" --name=rw --filename="$W/rand.dat" --rw=randwrite \
    --bs=4k --size="$RAND_SIZE" --ioengine=psync --iodepth=1 --numjobs=1 \
    --runtime="$RUNTIME" --time_based --randrepeat=1 --fadvise_hint=0)
  emit rand_write_4k "$v" IOPS
  rm -f "$W/rand.dat"
  sync
fi

# ------------------------------------------------------------------ small files
if want meta; then
  log "meta_create $((NDIRS * NFILES)) files"
  req_begin meta_create
  t0=$EPOCHREALTIME
  python3 - "$W/meta" "$NDIRS" "$NFILES" << 'EOF'
import os, random, sys
root, nd, nf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(42)
buf = rnd.randbytes(8192)
os.mkdir(root)
for d in range(nd):
    dp = os.path.join(root, "d%03d" % d)
    os.mkdir(dp)
    for f in range(nf):
        n = rnd.randint(1024, 4096)
        off = rnd.randint(0, 4096)
        with open(os.path.join(dp, "f%04d.txt" % f), "wb") as fh:
            fh.write(buf[off:off + n])
EOF
  emit meta_create "$(since "$t0")" s
  req_end meta_create
  drop
  log "meta_lsR (cold)"
  req_begin meta_lsR
  t0=$EPOCHREALTIME
  # shellcheck disable=SC2012 # ls -lR is the workload
  n=$(ls -lR "$W/meta" | wc -l)
  emit meta_lsR "$(since "$t0")" s
  req_end meta_lsR
  echo "# meta_lsR lines=$n"
  log "meta_rm"
  req_begin meta_rm
  t0=$EPOCHREALTIME
  rm -rf "$W/meta"
  emit meta_rm "$(since "$t0")" s
  req_end meta_rm
  sync
fi

# ------------------------------------------------------------------ source tree + git
if want tree; then
  [ -f "$TREE_TAR" ] || { echo "workload: BENCH_TREE_TAR=$TREE_TAR is not a file" >&2; exit 2; }
  cat "$TREE_TAR" > /dev/null # tarball warm, target cold
  T="$W/tree"
  mkdir -p "$T"
  log "tree_extract $(basename "$TREE_TAR")"
  req_begin tree_extract
  t0=$EPOCHREALTIME
  tar -xf "$TREE_TAR" -C "$T"
  emit tree_extract "$(since "$t0")" s
  req_end tree_extract
  drop
  log "tree_du (cold)"
  req_begin tree_du
  t0=$EPOCHREALTIME
  kb=$(du -sk "$T" | cut -f1)
  emit tree_du "$(since "$t0")" s
  req_end tree_du
  echo "# tree_du kib=$kb files=$(find "$T" -type f | wc -l)"
  drop
  log "tree_grep (cold)"
  req_begin tree_grep
  t0=$EPOCHREALTIME
  n=$(grep -rF -- "$GREP_PATTERN" "$T" | wc -l)
  emit tree_grep "$(since "$t0")" s
  req_end tree_grep
  echo "# tree_grep pattern=$GREP_PATTERN matches=$n"

  export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
  G=(git -C "$T" -c user.name=bench -c user.email=bench@localhost -c gc.auto=0
    -c core.fsmonitor=false -c init.defaultBranch=main -c safe.directory='*')
  log "git_add"
  req_begin git_add
  t0=$EPOCHREALTIME
  "${G[@]}" init -q
  "${G[@]}" add -A
  emit git_add "$(since "$t0")" s
  req_end git_add
  log "git_commit"
  req_begin git_commit
  t0=$EPOCHREALTIME
  "${G[@]}" commit -q -m "bench tree"
  emit git_commit "$(since "$t0")" s
  req_end git_commit
  log "git_status"
  req_begin git_status
  t0=$EPOCHREALTIME
  st=$("${G[@]}" status --porcelain | wc -l)
  emit git_status "$(since "$t0")" s
  req_end git_status
  echo "# git_status dirty_entries=$st"
  log "tree_rm"
  req_begin tree_rm
  t0=$EPOCHREALTIME
  rm -rf "$T"
  emit tree_rm "$(since "$t0")" s
  req_end tree_rm
  sync
fi
log "done"
