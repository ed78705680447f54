#!/usr/bin/env python3
"""Prints the table of bench/backfill.sh from its results file."""
import statistics
import sys

CONCURRENCY = 32

backfills, loops = {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "backfill":
        run = dict(name=f[1], rows=int(f[2]), latency=int(f[3]), seconds=float(f[4]),
                   hwm=int(f[5]), peak_anon=int(f[6]), base_anon=int(f[7]), shared=int(f[8]))
        run["rate"] = run["rows"] / run["seconds"]
        backfills.setdefault((run["rows"], run["latency"]), []).append(run)
    elif f[0] == "loop":
        loops.setdefault(int(f[3]), []).append((int(f[2]), int(f[2]) / float(f[4])))


def mb(kb):
    return f"{kb / 1024:.1f} MB"


print()
print("| run | rows | latency | rows/s | vs. concurrency / latency | vs. loop | peak RssAnon | VmHWM (of which shared buffers) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for latency, samples in sorted(loops.items()):
    note = f" (median of {len(samples)})" if len(samples) > 1 else ""
    print(f"| PL/pgSQL loop calling `dfend_register_identity`{note} | {samples[0][0]:,} | {latency} ms | "
          f"{statistics.median(r for _, r in samples):,.1f} | | 1× | | |")
for (rows, latency), runs in sorted(backfills.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
    rate = statistics.median(r["rate"] for r in runs)
    ideal = ratio = ""
    if latency > 0:
        ceiling = CONCURRENCY * 1000 / latency
        ideal = f"{100 * rate / ceiling:.0f}% of {ceiling:,.0f}"
    if latency in loops:
        ratio = f"{rate / statistics.median(r for _, r in loops[latency]):.1f}×"
    peak = max(r["peak_anon"] for r in runs)
    hwm = max(r["hwm"] for r in runs)
    base = max(r["base_anon"] for r in runs)
    shared = max(r["shared"] for r in runs)
    note = f" (median of {len(runs)})" if len(runs) > 1 else ""
    print(f"| `CALL dfend_backfill`, concurrency {CONCURRENCY}{note} | {rows:,} | {latency} ms | "
          f"{rate:,.0f} | {ideal} | {ratio} | {mb(peak)} (idle {mb(base)}) | {mb(hwm)} ({mb(shared)}) |")
print()
for (rows, latency), runs in sorted(backfills.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
    if len(runs) > 1:
        print(f"backfill {rows:,} rows at {latency} ms, each round: " +
              ", ".join(f"{r['rate']:,.0f}" for r in runs) + " rows/s")
for latency, samples in sorted(loops.items()):
    if len(samples) > 1:
        print(f"loop at {latency} ms, each round: " + ", ".join(f"{r:,.1f}" for _, r in samples) + " rows/s")
print("peak RssAnon: the backend's private memory, sampled every 20 ms during the CALL;")
print("VmHWM: its peak resident set, which also counts the shared buffers it touched")
print("(peak RssShmem in brackets; shared_buffers is 128 MB) and mapped libraries.")
