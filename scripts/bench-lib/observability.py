#!/usr/bin/env python3
"""The table of `scripts/bench --observability`: per scenario, each configuration's calls/s and p99 (the median
over the rounds), and its ratio to the bare configuration in each round (a round's configurations ran back to back)
with the median of those ratios. `baseline` is a build from before tracing (CHAT_BENCH_BASELINE_CHATD), bare too."""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = defaultdict(list)  # (scenario, label) -> rows in round order
for row in rows:
    by[(row["scenario"], row["label"])].append(row)
scenarios = []
for row in rows:
    key = (row["scenario"], row["concurrency"], row["connections"])
    if key not in scenarios:
        scenarios.append(key)
for scenario, concurrency, connections in scenarios:
    bare = by[(scenario, "bare")]
    if not bare:
        continue
    print(f"{scenario}, {concurrency} in flight x{connections} conn")
    for label in ("baseline", "bare", "metrics", "traced"):
        runs = by[(scenario, label)]
        if not runs:
            continue
        rate = statistics.median(r["calls_per_second"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        line = f"  {label:8} {rate:9,.0f} calls/s  p99 {p99:7.3f} ms"
        if label != "bare":
            ratios = [r["calls_per_second"] / b["calls_per_second"] for r, b in zip(runs, bare)]
            line += (
                f"   vs bare: {statistics.median(ratios):.3f}x"
                f" (rounds: {', '.join(f'{x:.3f}' for x in ratios)})"
            )
        print(line)
