#!/usr/bin/env python3
"""Prints the medians of bench/per_call.sh rounds.

Each input line: run, then calls/s p50_us p99_us for the raw keep-alive
client, the raw new-connection client and dfend_register_identity."""
import statistics
import sys

rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
calls = sys.argv[2]


def median(column):
    return statistics.median(row[column] for row in rows)


# Per-call time is 1 / (calls/s); compare dfend with the raw keep-alive client
# round by round, then take the median of those ratios.
ratio = statistics.median(row[1] / row[7] for row in rows)
print(f"calls per run: {calls}, runs: {len(rows)} (medians)")
print(f"{'client':44} {'calls/s':>9} {'p50 us':>8} {'p99 us':>8}")
for name, column in (("raw libcurl, keep-alive (emulator ceiling)", 1),
                     ("raw libcurl, new connection per call", 4),
                     ("dfend_register_identity, PL/pgSQL loop", 7)):
    print(f"{name:44} {median(column):9.0f} {median(column + 1):8.0f} {median(column + 2):8.0f}")
print(f"dfend per-call time / raw keep-alive per-call time: {ratio:.2f} (target <= 1.50)")
