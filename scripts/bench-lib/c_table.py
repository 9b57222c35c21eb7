#!/usr/bin/env python3
"""The table of scripts/bench --c: per row the median [min-max] over the rounds of libchat (the C client) and of the
Swift client, both against chatd on one connection, and the ratio C / Swift of each round (they ran back to back, so
the machine's drift falls on both) as its median [min-max]."""

import json
import statistics
import sys
from collections import defaultdict


def main() -> None:
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    by = defaultdict(dict)  # (mode, concurrency) -> round -> client -> row
    for row in rows:
        by[(row["mode"], row["concurrency"])].setdefault(row["round"], {})[row["client"]] = row
    unit = {"unary": "calls/s", "stream": "msgs/s"}
    print("| row | libchat (C) | ChatClient (Swift) | C / Swift |")
    print("| --- | --- | --- | --- |")
    for (mode, concurrency), rounds in sorted(by.items(), key=lambda kv: (kv[0][0] != "unary", kv[0][1])):

        def rates(client: str) -> list[float]:
            return [r[client]["per_second"] for r in rounds.values() if client in r]

        def cell(values: list[float]) -> str:
            if not values:
                return "-"
            return f"{statistics.median(values):,.0f} {unit[mode]} [{min(values):,.0f}-{max(values):,.0f}]"

        ratios = [r["c"]["per_second"] / r["swift"]["per_second"] for r in rounds.values()
                  if "c" in r and "swift" in r and r["swift"]["per_second"] > 0]
        ratio = (f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}], {len(ratios)} rounds"
                 if ratios else "-")
        what = f"unary Health.Check, {concurrency} in flight" if mode == "unary" else "one stream (WatchThread replay)"
        print(f"| {what} | {cell(rates('c'))} | {cell(rates('swift'))} | {ratio} |")


if __name__ == "__main__":
    main()
