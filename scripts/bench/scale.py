#!/usr/bin/env python3
"""scale.py PHASE DIR N LAYOUT -- one phase of the scale workload.

Prints figures as 'name value unit' lines (name = LAYOUT_PHASE_...).

LAYOUT
  flat   N files in one directory DIR/flat (f000000, f000001, ...)
  deep   N files in directories of 100 at depth 10:
         DIR/deep/l1/l2/.../l8/dNNNN/fNNNNNN (ceil(N/100) leaf directories)
PHASE
  create   create the directories (not timed per file) and N files of
           BENCH_SCALE_FILE_BYTES bytes each (default 0: pure metadata)
  stat     os.stat of min(N, 10000) distinct files in random order (fixed seed)
  readdir  flat: `ls -f DIR/flat | wc -l`; deep: `find DIR/deep | wc -l`
  rm       `rm -rf` of the layout's top directory
The caller drops the page cache between phases.
"""
import os
import random
import subprocess
import sys
import time

PER_LEAF = 100
CHAIN = ["l%d" % i for i in range(1, 9)]  # 8 levels, + "deep" + leaf = 10


def paths(d, n, layout):
    """(directories to create in order, file paths)."""
    if layout == "flat":
        top = os.path.join(d, "flat")
        return [top], [os.path.join(top, "f%06d" % i) for i in range(n)]
    if layout == "deep":
        top = os.path.join(d, "deep")
        dirs = [top]
        p = top
        for c in CHAIN:
            p = os.path.join(p, c)
            dirs.append(p)
        files = []
        nleaf = (n + PER_LEAF - 1) // PER_LEAF
        for leaf in range(nleaf):
            lp = os.path.join(p, "d%04d" % leaf)
            dirs.append(lp)
            for i in range(leaf * PER_LEAF, min(n, (leaf + 1) * PER_LEAF)):
                files.append(os.path.join(lp, "f%06d" % i))
        return dirs, files
    sys.exit("unknown layout %s" % layout)


def emit(name, value, unit):
    print("%s %s %s" % (name, value, unit), flush=True)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    phase, d, n, layout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    dirs, files = paths(d, n, layout)
    top = dirs[0]
    pre = layout + "_"
    if phase == "create":
        nbytes = int(os.environ.get("BENCH_SCALE_FILE_BYTES", "0"))
        data = b"x" * nbytes
        t0 = time.perf_counter()
        for p in dirs:
            os.mkdir(p)
        t1 = time.perf_counter()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for p in files:
            fd = os.open(p, flags, 0o644)
            if data:
                os.write(fd, data)
            os.close(fd)
        t2 = time.perf_counter()
        emit(pre + "mkdir", "%.3f" % (t1 - t0), "s")
        emit(pre + "create", "%.3f" % (t2 - t1), "s")
        emit(pre + "create_per_file", "%.1f" % ((t2 - t1) / n * 1e6), "us/file")
    elif phase == "stat":
        k = min(n, 10000)
        sample = random.Random(7).sample(files, k)
        t0 = time.perf_counter()
        for p in sample:
            os.stat(p)
        t1 = time.perf_counter()
        emit(pre + "stat", "%.3f" % (t1 - t0), "s")
        emit(pre + "stat_per_file", "%.1f" % ((t1 - t0) / k * 1e6), "us/file")
    elif phase == "readdir":
        cmd = "ls -f -- \"$1\" | wc -l" if layout == "flat" else "find \"$1\" | wc -l"
        t0 = time.perf_counter()
        out = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd, "-", top],
                             check=True, capture_output=True, text=True).stdout
        t1 = time.perf_counter()
        entries = int(out.strip())
        expect = n + 2 if layout == "flat" else n + len(dirs)
        if entries != expect:
            print("# %sreaddir entries=%d expected=%d" % (pre, entries, expect), flush=True)
        emit(pre + "readdir", "%.3f" % (t1 - t0), "s")
        emit(pre + "readdir_per_file", "%.2f" % ((t1 - t0) / n * 1e6), "us/file")
    elif phase == "rm":
        t0 = time.perf_counter()
        subprocess.run(["rm", "-rf", "--", top], check=True)
        t1 = time.perf_counter()
        emit(pre + "rm", "%.3f" % (t1 - t0), "s")
        emit(pre + "rm_per_file", "%.1f" % ((t1 - t0) / n * 1e6), "us/file")
    else:
        sys.exit("unknown phase %s" % phase)


if __name__ == "__main__":
    main()
