#!/usr/bin/env python3
"""The table of `scripts/bench --scale`: per bus and stream count, the medians over rounds of the worst instance's
p50 and p99 commit-to-delivery latency, the deliveries per second, the database commits per second and the memory
per instance, with the spread (min-max over rounds)."""
import json
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = defaultdict(lambda: defaultdict(list))
    summaries = defaultdict(lambda: defaultdict(list))
    per_round = defaultdict(lambda: defaultdict(list))
    for line in open(path):
        row = json.loads(line)
        if row.get("scale_summary"):
            key = (row["bus"], row["streams"])
            summaries[key]["commits"].append(row["commits_per_second"])
            summaries[key]["rss"].append(row["rss_kb_per_instance"])
            summaries[key]["wal"].append(row["wal_bytes_per_second"])
            continue
        _, bus, streams, round_, _ = row["label"].split()
        per_round[(bus, int(streams))][int(round_)].append(row)
    for key, rounds in per_round.items():
        for rows in rounds.values():
            runs[key]["p50"].append(max(r["p50_ms"] for r in rows))
            runs[key]["p99"].append(max(r["p99_ms"] for r in rows))
            runs[key]["deliveries"].append(sum(r["calls_per_second"] for r in rows))

    def cell(values, fmt):
        if not values:
            return "-"
        median = statistics.median(values)
        return f"{fmt.format(median)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"

    print("| bus | streams | deliveries/s | p50 ms (worst instance) | p99 ms (worst instance) | "
          "DB commits/s | WAL KB/s | RSS per instance MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in sorted(runs, key=lambda k: (k[0], k[1])):
        bus, streams = key
        r, s = runs[key], summaries[key]
        print(f"| {bus} | {streams} | {cell(r['deliveries'], '{:.0f}')} | {cell(r['p50'], '{:.1f}')} | "
              f"{cell(r['p99'], '{:.1f}')} | {cell(s['commits'], '{:.0f}')} | "
              f"{cell([v / 1024 for v in s['wal']], '{:.0f}')} | "
              f"{cell([v / 1024 for v in s['rss']], '{:.0f}')} |")
    print(f"\n{len(next(iter(runs.values()))['p99']) if runs else 0} rounds; medians, [min-max] over rounds")


if __name__ == "__main__":
    main(sys.argv[1])
