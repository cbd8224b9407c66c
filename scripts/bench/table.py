#!/usr/bin/env python3
"""table.py OUTDIR          -- peer comparison: table.md, raw.tsv, chart.png
   table.py --scale OUTDIR  -- scale run: scale.md (from scale.tsv)

Peer comparison input: OUTDIR/meta.txt ('fslist A B ...'), OUTDIR/<fs>.run<N>.txt
(lines 'name value unit'; '#' lines are comments) and, when present,
OUTDIR/crypto.tsv (criterion block encrypt/decrypt MiB/s). Prints the markdown
table on stdout and writes it to OUTDIR/table.md; OUTDIR/raw.tsv holds every
figure (fs, run, metric, value, unit); OUTDIR/chart.png shows each workload
with each filesystem's speed relative to raw (raw = 1.0, higher = faster).

Cells are 'median (min-max)' over runs. The last column compares circlefs
with the best encrypted peer of that row (gocryptfs, securefs, cryfs, when
run): for MiB/s and IOPS circlefs/best, for seconds and MiB (memory)
best/circlefs, so > 1 always means circlefs is better.
"""
import os
import re
import statistics
import sys
from collections import OrderedDict, defaultdict

ORDER = ["raw", "bindfs", "gocryptfs", "securefs", "cryfs", "circlefs"]
ENCRYPTED_PEERS = ["gocryptfs", "securefs", "cryfs"]
METRIC_ORDER = [
    "seq_write", "seq_read", "rand_read_4k", "rand_read_4k_direct", "rand_write_4k",
    "meta_create", "meta_lsR", "meta_rm",
    "tree_extract", "tree_du", "tree_grep", "git_add", "git_commit", "git_status", "tree_rm",
    "rss_peak", "rss_end",
]
LABELS = {
    "seq_write": "sequential write",
    "seq_read": "sequential read (cold)",
    "rand_read_4k": "random 4 KiB read (cold)",
    "rand_read_4k_direct": "random 4 KiB read O_DIRECT",
    "rand_write_4k": "random 4 KiB write",
    "meta_create": "small files: create",
    "meta_lsR": "small files: ls -lR (cold)",
    "meta_rm": "small files: rm -rf",
    "tree_extract": "tree: tar extract",
    "tree_du": "tree: du -s (cold)",
    "tree_grep": "tree: grep -r (cold)",
    "git_add": "tree: git init + add -A",
    "git_commit": "tree: git commit",
    "git_status": "tree: git status",
    "tree_rm": "tree: rm -rf",
    "rss_peak": "daemon peak RSS (VmHWM, incl. KDF)",
    "rss_end": "daemon RSS at the end (VmRSS)",
}


def higher_better(unit):
    return unit in ("MiB/s", "IOPS")


def fmt(v, unit):
    if unit in ("MiB/s", "IOPS") or v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def cell(vals, unit):
    med = statistics.median(vals)
    s = fmt(med, unit)
    if len(vals) > 1:
        s += f" ({fmt(min(vals), unit)}–{fmt(max(vals), unit)})"
    return s


def speed_vs(v, ref, unit):
    """How much better v is than ref (> 1 = v better)."""
    if v <= 0 or ref <= 0:
        return None
    return v / ref if higher_better(unit) else ref / v


def read_meta(out):
    meta = {}
    p = os.path.join(out, "meta.txt")
    if os.path.exists(p):
        for line in open(p):
            parts = line.rstrip("\n").split(" ", 1)
            if len(parts) == 2 and not line.startswith("#"):
                meta.setdefault(parts[0], []).append(parts[1].strip())
    return meta


def peers(out):
    meta = read_meta(out)
    fslist = meta.get("fslist", [""])[0].split()
    vals = defaultdict(lambda: defaultdict(list))  # fs -> metric -> [values]
    units = {}
    rows = []
    for fn in sorted(os.listdir(out)):
        m = re.match(r"(.+)\.run(\d+)\.txt$", fn)
        if not m:
            continue
        fs, run = m.group(1), int(m.group(2))
        if fs not in fslist:
            fslist.append(fs)
        for line in open(os.path.join(out, fn)):
            if line.startswith("#") or not line.strip():
                continue
            name, value, unit = line.split()[:3]
            units.setdefault(name, unit)
            vals[fs][name].append(float(value))
            rows.append((fs, run, name, value, unit))
    with open(os.path.join(out, "raw.tsv"), "w") as f:
        f.write("fs\trun\tmetric\tvalue\tunit\n")
        for r in sorted(rows, key=lambda r: (r[0], r[1])):
            f.write("\t".join(map(str, r)) + "\n")

    fss = sorted([fs for fs in fslist if fs in vals],
                 key=lambda x: ORDER.index(x) if x in ORDER else len(ORDER))
    metrics = [m for m in METRIC_ORDER if m in units] + sorted(m for m in units if m not in METRIC_ORDER)
    med = {fs: {k: statistics.median(v) for k, v in d.items()} for fs, d in vals.items()}
    enc = [fs for fs in ENCRYPTED_PEERS if fs in fss]
    show_vs = "circlefs" in fss and enc

    nruns = {fs: max((len(v) for v in vals[fs].values()), default=0) for fs in fss}
    lines = []
    lines.append("Median over runs (min–max); runs: "
                 + ", ".join(f"{fs} {nruns[fs]}" for fs in fss) + ".")
    if show_vs:
        lines.append("Last column: circlefs against the best encrypted peer of the row "
                     "(" + ", ".join(enc) + "); > 1 means circlefs is better "
                     "(throughput/IOPS: circlefs/peer; seconds and memory: peer/circlefs).")
    lines.append("")
    head = ["workload", "unit"] + fss + (["circlefs vs best encrypted peer"] if show_vs else [])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---|---|" + "---:|" * (len(head) - 2))
    for name in metrics:
        unit = units[name]
        cells = [cell(vals[fs][name], unit) if vals[fs].get(name) else "n/a" for fs in fss]
        row = [LABELS.get(name, name), unit] + cells
        if show_vs:
            c = med["circlefs"].get(name)
            cand = [(med[p][name], p) for p in enc if name in med[p]]
            if c is None or not cand:
                row.append("n/a")
            else:
                best = (max if higher_better(unit) else min)(cand)
                r = speed_vs(c, best[0], unit)
                row.append(f"{r:.2f}× ({best[1]})" if r is not None else "n/a")
        lines.append("| " + " | ".join(row) + " |")

    # sequential throughput against the single-core crypto ceiling
    ceil = {}
    cp = os.path.join(out, "crypto.tsv")
    if os.path.exists(cp):
        for line in open(cp):
            p = line.rstrip("\n").split("\t")
            if len(p) >= 3:
                ceil[p[0]] = float(p[1])
    if ceil and "circlefs" in med:
        lines.append("")
        lines.append("End-to-end sequential read/write throughput as a fraction of the "
                     "single-core crypto ceiling (criterion `block` benchmark: one "
                     "4096-byte block sealed/opened on one core):")
        lines.append("")
        for metric, key, what in (("seq_write", "block_encrypt", "encrypt"),
                                  ("seq_read", "block_decrypt", "decrypt")):
            v = med["circlefs"].get(metric)
            c = ceil.get(key)
            if v is None or c is None:
                continue
            lines.append(f"- {LABELS[metric]}: circlefs {v:,.0f} MiB/s = "
                         f"{100 * v / c:.0f}% of the block {what} ceiling {c:,.0f} MiB/s")
    finish(out, "table.md", lines, meta)
    chart(out, fss, metrics, units, med)


def finish(out, name, lines, meta):
    """Append the versions line, write OUT/NAME and print it."""
    versions = meta.get("version", [])
    if versions:
        lines.append("")
        lines.append("Versions: " + "; ".join(versions))
    text = "\n".join(lines) + "\n"
    open(os.path.join(out, name), "w").write(text)
    sys.stdout.write(text)


def chart(out, fss, metrics, units, med):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        sys.stderr.write("table.py: matplotlib missing, no chart\n")
        return
    ref = "raw" if "raw" in fss else fss[0]
    shown = [fs for fs in fss if fs != ref]
    ms = [m for m in metrics if m in med.get(ref, {}) and units[m] != "MiB"]
    if not ms or not shown:
        return
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(ms) * max(1, len(shown)) / 3 + 4), 5.5))
    width = 0.8 / len(shown)
    for i, fs in enumerate(shown):
        ys = []
        for m in ms:
            v = med[fs].get(m)
            r = speed_vs(v, med[ref][m], units[m]) if v is not None else None
            ys.append(r if r is not None else 0)
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(ms))]
        ax.bar(xs, ys, width, label=fs)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xticks(range(len(ms)))
    ax.set_xticklabels([LABELS.get(m, m) for m in ms], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(f"speed relative to {ref} (log; {ref} = 1.0, higher = faster)")
    ax.set_title("Workloads, each filesystem normalised to " + ref)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "chart.png"), dpi=120)
    plt.close(fig)


SCALE_LABELS = OrderedDict([
    ("create_per_file", "create (µs/file)"),
    ("stat_per_file", "random stat, cold (µs/file)"),
    ("readdir_per_file", "readdir, cold (µs/file)"),
    ("rm_per_file", "rm -rf (µs/file)"),
    ("mkdir", "mkdir of the directories (s)"),
    ("rss_peak", "daemon peak RSS, VmHWM incl. KDF (MiB)"),
    ("rss_end", "daemon RSS at the end, VmRSS (MiB)"),
    ("mount", "mount until usable (s)"),
    ("unlock", "unlock alone: `admin ... circle list` (s)"),
    ("mount_minus_unlock", "mount minus unlock (s)"),
    ("trustee_remove", "`admin ... trustee remove` of a read trustee (s)"),
    ("trustee_remove_minus_unlock", "trustee remove minus unlock (s)"),
])


def scale(out):
    rows = []
    for line in open(os.path.join(out, "scale.tsv")):
        p = line.rstrip("\n").split("\t")
        if p[0] == "fs" or len(p) < 6:
            continue
        rows.append(p)
    meta = read_meta(out)
    fss = []
    ns = []
    data = {}
    for fs, layout, n, metric, value, unit in rows:
        if fs not in fss:
            fss.append(fs)
        if layout != "big" and int(n) not in ns:
            ns.append(int(n))
        data[(fs, layout, n, metric)] = (float(value), unit)
    ns.sort()
    cols = [(fs, n) for fs in fss for n in ns]
    lines = []
    lines.append("Scale run (one run; files of %s bytes; deep = directories of 100 files "
                 "at depth 10; stat = min(n, 10,000) random files)."
                 % meta.get("filebytes", ["0"])[0])
    lines.append("")
    head = ["layout", "metric"] + [f"{fs} n={n:,}" for fs, n in cols]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---|---|" + "---:|" * len(cols))
    for layout in ("flat", "deep"):
        for metric, label in SCALE_LABELS.items():
            key = layout + "_" + metric if metric.endswith("per_file") or metric == "mkdir" else metric
            cells = []
            for fs, n in cols:
                v = data.get((fs, layout, str(n), key))
                cells.append(fmt(v[0], v[1]) if v else "")
            if any(cells):
                lines.append(f"| {layout} | {label} | " + " | ".join(c or "n/a" for c in cells) + " |")
    big = [(fs, n) for (fs, layout, n, _m) in data if layout == "big"]
    big = list(OrderedDict.fromkeys(big))
    if big:
        lines.append("")
        lines.append("| big file | " + " | ".join(f"{fs} ({n})" for fs, n in big) + " |")
        lines.append("|---|" + "---:|" * len(big))
        for metric, label in (("big_write", "write, fsync at end (MiB/s)"),
                              ("big_read", "read, cold (MiB/s)"),
                              ("rss_peak", "daemon peak RSS, VmHWM (MiB)"),
                              ("rss_end", "daemon RSS at the end, VmRSS (MiB)")):
            cells = []
            for fs, n in big:
                v = data.get((fs, "big", n, metric))
                cells.append(fmt(v[0], v[1]) if v else "n/a")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    finish(out, "scale.md", lines, meta)


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "--scale":
        scale(args[1])
    elif len(args) == 1 and not args[0].startswith("-"):
        peers(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
