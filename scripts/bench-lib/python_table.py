#!/usr/bin/env python3
"""The table of scripts/bench --python: per row the median [min-max] of the rounds for chatd's Python client, and
for grpcio's asyncio and synchronous APIs against the gRPC C++ peer, and the ratio of chatd's client to the faster
grpcio of the same round (they ran back to back, so the machine's drift falls on all three), as its median
[min-max]."""

import json
import statistics
import sys
from collections import defaultdict


def main() -> None:
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    by = defaultdict(dict)  # (mode, concurrency) -> round -> client -> rate
    for row in rows:
        by[(row["mode"], row["concurrency"])].setdefault(row["round"], {})[row["client"]] = row["calls_per_second"]
    unit = {"unary": "calls/s", "stream": "msgs/s"}
    print(
        "| row | chatd client -> chatd | grpcio asyncio -> gRPC C++ | grpcio sync -> gRPC C++"
        " | ratio to the faster grpcio |"
    )
    print("| --- | --- | --- | --- | --- |")
    for (mode, concurrency), rounds in sorted(by.items()):

        def rates(client: str) -> list[float]:
            return [r[client] for r in rounds.values() if client in r]

        ratios = [
            r["chatd"] / max(r.get("grpcio", 0), r.get("grpcio-sync", 0))
            for r in rounds.values()
            if "chatd" in r and max(r.get("grpcio", 0), r.get("grpcio-sync", 0)) > 0
        ]
        what = f"unary, {concurrency} in flight" if mode == "unary" else "one stream, 100-byte messages"

        def cell(values: list[float]) -> str:
            if not values:
                return "-"
            return f"{statistics.median(values):,.0f} {unit[mode]} [{min(values):,.0f}-{max(values):,.0f}]"

        ratio = (
            f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}], {len(ratios)} rounds"
            if ratios else "-"
        )
        print(f"| {what} | {cell(rates('chatd'))} | {cell(rates('grpcio'))} | {cell(rates('grpcio-sync'))} | {ratio} |")


if __name__ == "__main__":
    main()
