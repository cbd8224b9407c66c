#!/usr/bin/env python3
"""requests.py OUTDIR -- FUSE request counts per phase: requests.md

Input: OUTDIR/<fs>.run<N>.txt from `bench.sh --requests`, whose workload
printed '# requests <phase> total=N KIND=n ...' after each small-file and
tree phase (kernel tracepoint fuse:fuse_request_send, the requests of the
filesystem's own connection). Prints and writes OUTDIR/requests.md: the
total per phase and filesystem (median over runs), circlefs's count
against the encrypted peer with the fewest, and the largest kinds of each.
"""
import os
import re
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from table import ENCRYPTED_PEERS, LABELS, ORDER  # noqa: E402

PHASES = ["meta_create", "meta_lsR", "meta_rm", "tree_extract", "tree_du", "tree_grep",
          "git_add", "git_commit", "git_status", "tree_rm"]
# Kinds shown per cell: the largest, down to this share of the phase's total.
MIN_SHARE = 0.05


def read(out):
    """{fs: {phase: [{kind: n, ..., 'total': n} per run]}}"""
    runs = defaultdict(lambda: defaultdict(list))
    pat = re.compile(r"^(\w+)\.run(\d+)\.txt$")
    for f in sorted(os.listdir(out)):
        m = pat.match(f)
        if not m:
            continue
        for line in open(os.path.join(out, f)):
            p = line.split()
            if len(p) >= 4 and p[0] == "#" and p[1] == "requests":
                counts = {}
                for kv in p[3:]:
                    k, _, v = kv.partition("=")
                    if v.isdigit():
                        counts[k] = int(v)
                runs[m.group(1)][p[2]].append(counts)
    return runs


def median_counts(samples):
    kinds = set().union(*samples)
    return {k: statistics.median(s.get(k, 0) for s in samples) for k in kinds}


def short(n):
    return f"{n / 1000:.1f}k" if n >= 1000 else f"{n:.0f}"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    runs = read(out)
    fss = [fs for fs in ORDER if fs in runs] + sorted(fs for fs in runs if fs not in ORDER)
    if not fss:
        sys.exit(f"requests.py: no '# requests' lines in {out}/*.run*.txt")
    med = {fs: {ph: median_counts(s) for ph, s in runs[fs].items()} for fs in fss}
    enc = [fs for fs in ENCRYPTED_PEERS if fs in fss]
    lines = ["| phase | " + " | ".join(fss) + " | circlefs vs fewest encrypted peer |",
             "|---|" + "---:|" * len(fss) + "---:|"]
    for ph in PHASES:
        if not any(ph in med[fs] for fs in fss):
            continue
        tot = {fs: med[fs][ph].get("total") for fs in fss if ph in med[fs]}
        cells = [f"{tot[fs]:,.0f}" if tot.get(fs) is not None else "n/a" for fs in fss]
        ratio = ""
        peers = [fs for fs in enc if tot.get(fs)]
        if tot.get("circlefs") and peers:
            best = min(peers, key=lambda fs: tot[fs])
            ratio = f"{tot['circlefs'] / tot[best]:.2f}x ({best})"
        lines.append(f"| {LABELS.get(ph, ph)} | " + " | ".join(cells) + f" | {ratio} |")
    lines += ["", "Largest kinds per phase (at least "
              f"{MIN_SHARE:.0%} of the phase's requests):", "",
              "| phase | " + " | ".join(fss) + " |", "|---|" + "---|" * len(fss)]
    for ph in PHASES:
        if not any(ph in med[fs] for fs in fss):
            continue
        cells = []
        for fs in fss:
            c = med[fs].get(ph)
            if not c:
                cells.append("n/a")
                continue
            total = c.get("total", 0) or 1
            kinds = sorted(((n, k) for k, n in c.items() if k != "total"), reverse=True)
            cells.append(", ".join(f"{k} {short(n)}" for n, k in kinds if n >= MIN_SHARE * total))
        lines.append(f"| {LABELS.get(ph, ph)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "requests.md"), "w") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
