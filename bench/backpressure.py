#!/usr/bin/env python3
"""Helpers of bench/backpressure.sh (issue 8's conditions).

  backpressure.py check STATS_JSON IDENTITIES_JSON ROWS_FILE...
      Checks that every row of the ROWS_FILEs ("user_id dfend_id" lines)
      carries the emulator's id for its user id, that no two rows share an
      id, and that the emulator created exactly one identity per row. Prints
      the round's counters as key=value pairs; prints a WARNING line to
      stderr for each check that fails.
  backpressure.py accepted IDENTITIES_JSON INDEX
      Prints the times (epoch seconds) at which the emulator created the
      identities of user ids INDEX * 1000000 + 1 ... (INDEX + 1) * 1000000:
      when the account accepted the requests of the INDEX-th database.
  backpressure.py windows START WINDOW STEP SKIP [--prefix=P] NAME=FILE...
      Each FILE holds the epoch seconds at which one database stored its
      ids. Prints each database's lowest and highest share of the ids stored
      over every WINDOW-second window (stepping STEP seconds) that starts
      SKIP seconds or more after START and ends by the first database's
      last id (while every database still has work pending: a window in
      which one of them has nothing left to send says nothing about
      fairness), how long that span is (both_s), and when each database
      stored its first id (seconds after START). Keys start with P if
      given. With DFEND_WINDOWS_LOG set, appends every window's shares to
      that file.
  backpressure.py summary RESULTS_FILE CONCURRENCY LATENCY_MS RATE
      Prints the table of medians.
"""
import json
import os
import statistics
import sys
from bisect import bisect_left, bisect_right


def check(stats_path, identities_path, row_paths):
    stats = json.load(open(stats_path))
    emulator = {i["userId"]: i["id"] for i in json.load(open(identities_path))}
    rows = stored = mismatched = 0
    ids = set()
    for path in row_paths:
        for line in open(path):
            f = line.split()
            if not f:
                continue
            rows += 1
            if len(f) < 2:
                continue
            stored += 1
            ids.add(f[1])
            if emulator.get(f[0]) != f[1]:
                mismatched += 1
    duplicates = stored - len(ids)
    by_status = stats.get("by_status", {})
    out = dict(rows=rows, stored=stored, mismatched=mismatched, duplicates=duplicates,
               identities=stats["identities"], created=stats["created"],
               requests=stats["requests"], posts=stats["posts"],
               s200=by_status.get("200", 0), s429=by_status.get("429", 0),
               s503=by_status.get("503", 0), dropped=stats["dropped"],
               limited=stats.get("account_limited", 0))
    warnings = []
    if stored != rows:
        warnings.append(f"{rows - stored} of {rows} rows have no id")
    if mismatched:
        warnings.append(f"{mismatched} rows carry an id that is not the emulator's for their user id")
    if duplicates:
        warnings.append(f"{duplicates} rows share an id with another row")
    if stats["identities"] != rows or stats["created"] != rows:
        warnings.append(f"the emulator holds {stats['identities']} identities and created "
                        f"{stats['created']}, for {rows} rows")
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    out["warnings"] = len(warnings)
    print(" ".join(f"{k}={v}" for k, v in out.items()))


def accepted(identities_path, index):
    for i in json.load(open(identities_path)):
        try:
            user = int(i["userId"])
        except ValueError:
            continue
        if index * 1000000 < user <= (index + 1) * 1000000:
            print(f"{i['time'] / 1000:.3f}")


def windows(start, window, step, skip, named_files, prefix=""):
    times = {}
    for spec in named_files:
        name, path = spec.split("=", 1)
        times[name] = sorted(float(x) for x in open(path).read().split())
    names = list(times)
    # The first database to finish ends the span: after its last id it
    # has nothing pending, and the other rightly gets the whole account.
    end = min((t[-1] if t else start for t in times.values()), default=start)
    first = {n: (t[0] - start if t else None) for n, t in times.items()}
    lows = {n: 1.0 for n in names}
    highs = {n: 0.0 for n in names}
    spans = []
    s = start + skip
    while s + window <= end + 1e-9:
        spans.append((s, s + window))
        s += step
    if not spans and end > start + skip:
        spans.append((start + skip, end))   # a drain too short for one window
    count = 0
    log = open(os.environ["DFEND_WINDOWS_LOG"], "a") if os.environ.get("DFEND_WINDOWS_LOG") else None
    for lo, hi in spans:
        n = {k: bisect_right(t, hi) - bisect_left(t, lo) for k, t in times.items()}
        total = sum(n.values())
        if total == 0:
            continue
        count += 1
        if log:
            print(f"{prefix or 'accepted_'}{lo - start:5.1f}-{hi - start:5.1f} s: " +
                  " ".join(f"{k} {n[k] / total:.3f}" for k in names) + f" ({total / (hi - lo):.0f}/s)",
                  file=log)
        for k in names:
            lows[k] = min(lows[k], n[k] / total)
            highs[k] = max(highs[k], n[k] / total)
    out = [f"windows={count}", f"window_s={spans[0][1] - spans[0][0]:.1f}" if spans else "window_s=0",
           f"both_s={max(0.0, end - start):.1f}"]
    for k in names:
        out.append(f"share_low_{k}={lows[k] if count else -1:.3f}")
        out.append(f"share_high_{k}={highs[k] if count else -1:.3f}")
        out.append(f"first_{k}={first[k] if first[k] is not None else -1:.2f}")
    print(" ".join(prefix + o for o in out))


# --- summary -----------------------------------------------------------------

def parse(path):
    runs = []
    for line in open(path):
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "cond" not in f:
            continue
        for k, v in list(f.items()):
            try:
                f[k] = float(v)
            except ValueError:
                pass
        runs.append(f)
    return runs


def med(values):
    values = list(values)
    return statistics.median(values) if values else float("nan")


def pct(x):
    return f"{100 * x:.0f}%"


def share_429(r):
    return r["s429"] / r["requests"] if r["requests"] else 0.0


def retries_per_row(r):
    return (r["posts"] - r["rows"]) / r["rows"] if r["rows"] else 0.0


def summary(path, concurrency, latency_ms, rate):
    runs = parse(path)
    by = {}
    for r in runs:
        by.setdefault(r["cond"], []).append(r)
    ideal = concurrency * 1000 / latency_ms
    table = []   # (condition, figure, target, ideal, 429 share, retries per row)
    per_round = []
    warnings = sum(int(r.get("warnings", 0)) for r in runs)
    errors = sum(int(r.get("error", 0)) for r in runs)

    def rate_of(r):
        return r["rows"] / r["seconds"] if r["seconds"] > 0 else 0.0

    def note(rs):
        return f" (median of {len(rs)})" if len(rs) > 1 else " (1 round)"

    def common(rs):
        return (f"{pct(med(share_429(r) for r in rs))}",
                f"{med(retries_per_row(r) for r in rs):.2f}")

    def rounds_line(name, rs, fmt):
        if len(rs) > 1:
            per_round.append(f"{name}, each round: " + ", ".join(fmt(r) for r in rs))

    clean = by.get("clean", [])
    clean_rate = med(rate_of(r) for r in clean) if clean else None
    if clean:
        table.append((f"1. no faults: backfill, {int(clean[0]['rows']):,} rows{note(clean)}",
                      f"**{clean_rate:,.0f} rows/s**, {pct(clean_rate / ideal)} of ideal",
                      "keep it (issue 8: 1,222 rows/s)", f"{ideal:,.0f}/s (32 / {latency_ms:g} ms)",
                      *common(clean)))
        rounds_line("clean backfill", clean, lambda r: f"{rate_of(r):,.0f} rows/s")
    for cond, label, target in (("faults", "2. 5% 5xx + 2% dropped connections", "≥ 85% of clean"),
                                ("faults429", "3. the same + 1% random 429 (Retry-After: 1)", "≥ 70% of clean")):
        rs = by.get(cond, [])
        if not rs:
            continue
        r_ = med(rate_of(r) for r in rs)
        of_clean = f", **{pct(r_ / clean_rate)} of clean**" if clean_rate else ""
        table.append((f"{label}: backfill, {int(rs[0]['rows']):,} rows{note(rs)}",
                      f"{r_:,.0f} rows/s{of_clean}", target,
                      f"clean rate ({clean_rate:,.0f}/s)" if clean_rate else "clean rate",
                      *common(rs)))
        rounds_line(f"{cond} backfill", rs, lambda r: f"{rate_of(r):,.0f} rows/s")
    for cond, what, unit in (("limit_backfill", "backfill", "rows/s"),
                             ("limit_worker", "outbox worker", "ids/s")):
        rs = by.get(cond, [])
        if not rs:
            continue
        r_ = med(rate_of(r) for r in rs)
        lim = med(r["limited"] / r["requests"] if r["requests"] else 0 for r in rs)
        table.append((f"4. account limit {rate:g}/s, burst {int(rs[0].get('burst', 0))}: {what}, "
                      f"{int(rs[0]['rows']):,} rows{note(rs)}",
                      f"{r_:,.0f} {unit}, **{pct(r_ / rate)} of the limit**; "
                      f"**{pct(med(share_429(r) for r in rs))} answered 429** ({pct(lim)} by the limit)",
                      "≥ 90% of the limit, ≤ 5% answered 429", f"{rate:g}/s, 0% 429",
                      *common(rs)))
        rounds_line(f"limit {what}", rs, lambda r: f"{rate_of(r):,.0f} {unit} ({pct(share_429(r))} 429)")
    rs = by.get("shared", [])
    if rs:
        r_ = med(rate_of(r) for r in rs)
        names = sorted({k[len("share_low_"):] for r in rs for k in r if k.startswith("share_low_")})

        def spread(prefix):
            parts = []
            for n in names:
                low = min(r[f"{prefix}share_low_{n}"] for r in rs)
                high = max(r[f"{prefix}share_high_{n}"] for r in rs)
                parts.append(f"{n} {pct(low)}–{pct(high)}")
            return ", ".join(parts)

        firsts = " and ".join(f"{med(r[f'stored_first_{n}'] for r in rs):.1f}" for n in names)
        window = med(r["window_s"] for r in rs)
        table.append((f"5. two databases' workers sharing {rate:g}/s, "
                      f"{int(rs[0]['rows']):,} rows{note(rs)}",
                      f"{r_:,.0f} ids/s together, **{pct(r_ / rate)} of the limit**; first ids stored "
                      f"after {firsts} s; each database's share of the requests the account accepted "
                      f"per {window:g} s window from 2 s until the first is done (at "
                      f"{med(r['both_s'] for r in rs):.1f} s), lowest–highest over all rounds: "
                      f"**{spread('')}**; of the ids stored (in whole batches) {spread('stored_')}",
                      "≥ 90% of the limit; each 40–60% in every window", f"{rate:g}/s, 50% each",
                      *common(rs)))
        rounds_line("shared workers", rs, lambda r: f"{rate_of(r):,.0f} ids/s")
    rs = by.get("outage", [])
    if rs:
        table.append((f"6. API down {rs[0]['down']:g} s, then back: worker, "
                      f"{int(rs[0]['rows']):,} queued rows{note(rs)}",
                      f"**{med(r['dead'] for r in rs):.0f} dead** ({med(r['dead_before'] for r in rs):.0f} "
                      f"before recovery); first id **{med(r['first_s'] for r in rs):.1f} s** after "
                      f"recovery, drained after {med(r['drain_s'] for r in rs):.1f} s",
                      "0 dead; first id ≤ 5 s", f"0 dead; first id after ~{latency_ms:g} ms",
                      *common(rs)))
        rounds_line("outage", rs, lambda r: f"{r['dead']:.0f} dead, first id {r['first_s']:.1f} s")

    print()
    print("| condition | measured | target | ideal | 429 share | retries per row |")
    print("|---|---|---|---|---:|---:|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    print()
    for line in per_round:
        print(line)
    print(f"20 ms API latency, {concurrency} requests in flight (dfend_backfill concurrency, "
          "dfend.worker_concurrency). 429 share: requests the emulator answered 429 / all its "
          "requests; retries per row: POSTs beyond one per row.")
    if by.get("shared"):
        print("Shares: each database's part of the requests the account accepted (the emulator's creation "
              "time of each identity) in 5 s windows (every 0.5 s) from 2 s after the inserts until the "
              "first database is done (while both have work pending); and of the ids stored (the time "
              "a trigger saw the worker store each id: whole batches of dfend.worker_batch_size rows at once).")
    if by.get("outage"):
        print("The outage runs OUTAGE_ROUNDS rounds (default 1), since each lasts DOWN_SECONDS.")
    if errors:
        print(f"WARNING: {errors} round(s) ended with an error (see the log above)")
    if warnings:
        print(f"WARNING: {warnings} correctness check(s) failed (see the WARNING lines above)")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif cmd == "accepted":
        accepted(sys.argv[2], int(sys.argv[3]))
    elif cmd == "windows":
        rest = sys.argv[6:]
        prefix = rest.pop(0)[len("--prefix="):] if rest and rest[0].startswith("--prefix=") else ""
        windows(float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), rest, prefix)
    elif cmd == "summary":
        summary(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(__doc__)
