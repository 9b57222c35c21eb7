#!/usr/bin/env python3
"""The benchmark table from .bench/results.json (one JSON object per line), over rounds.

Every row ran in rounds, ours and its peers interleaved (scripts/bench); a figure is the median over the rounds with
its [min-max], and a ratio (ours / theirs; above 1 is better, for memory theirs / ours) is taken round by round, each
round's ours against the same round's peer, then the median of those with its [min-max]. A ratio whose spread (max -
min) is wider than its distance from parity (|median - 1|) says so: such a row does not tell which is faster.

    table.py RESULTS [--markdown FILE] [--plot FILE.png]
"""
import json
import statistics
import sys
from collections import defaultdict

PEERS_OF = {
    "unary-health": ["grpc-cpp", "grpc-swift"],
    "stream": ["grpc-cpp", "grpc-swift"],
    "idle": ["grpc-cpp", "grpc-swift"],
    "list": ["pgbench"],
    "send": ["pgbench"],
    "live": [],
}
LIVE_TARGET_MS = {False: 10, True: 50}


def round_of(row):
    if "round" in row:
        return int(row["round"])
    label = row.get("label") or ""
    return int(label.split()[1]) if label.startswith("round ") else 1


def key_of(row):
    scenario = row["scenario"]
    if scenario == "idle":
        return ("idle", 0, 1, False)
    if scenario == "live":
        return ("live", 0, 1, bool(row.get("cross_instance")))
    if scenario in ("list", "send") and "peer" in row:
        # pgbench has no connections: its rows match ours by concurrency.
        return (scenario, row["concurrency"], None, False)
    if scenario == "stream":
        return ("stream", row["concurrency"], 1, False)
    return (scenario, row["concurrency"], row.get("connections", 1), False)


def value_of(row):
    return row["bytes_per_stream"] if row["scenario"] == "idle" else row["calls_per_second"]


def label_of(key):
    scenario, c, conns, cross = key
    if scenario == "idle":
        return "idle streams, 50,000 held (bytes each)"
    if scenario == "live":
        return f"live, 1,000 watchers, {'2 instances' if cross else '1 instance'}"
    if scenario == "stream":
        return f"server stream, {c} stream(s), 100 B"
    name = {"unary-health": "unary Health.Check", "send": "durable send", "list": "list latest 50 (1M)"}[scenario]
    return f"{name}, {c} in flight" + (f" x{conns} conn" if conns and conns > 1 else "")


def spread(values, fmt="{:,.0f}"):
    median = statistics.median(values)
    return median, f"{fmt.format(median)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def load(path):
    ours = defaultdict(dict)
    theirs = defaultdict(lambda: defaultdict(dict))
    for line in open(path):
        if not line.strip():
            continue
        row = json.loads(line)
        key = key_of(row)
        if "peer" in row:
            # Unary rows differ by connections too (64 in flight on one connection and on four).
            connections = row.get("connections", 1) if row["scenario"] == "unary-health" else None
            concurrency = row["concurrency"] if row["scenario"] != "idle" else 0
            theirs[(row["scenario"], concurrency, connections)][row["peer"]][round_of(row)] = row
        else:
            ours[key][round_of(row)] = row
    return ours, theirs


def rows(path):
    """One entry per row of ours: the figures and, per peer, the per-round ratios."""
    ours, theirs = load(path)
    table = []
    for key in ours:
        scenario, c, conns, cross = key
        rounds = ours[key]
        entry = {
            "key": key,
            "label": label_of(key),
            "values": [value_of(r) for r in rounds.values()],
            "p99": [r["p99_ms"] for r in rounds.values() if "p99_ms" in r],
            "rounds": len(rounds),
            "peers": [],
        }
        for name in PEERS_OF[scenario]:
            connections = conns if scenario == "unary-health" else None
            peer_rounds = theirs.get((scenario, c, connections), {}).get(name, {})
            if not peer_rounds:
                continue
            ratios = []
            for number, row in rounds.items():
                peer = peer_rounds.get(number)
                if peer is None:
                    continue
                if scenario == "idle":
                    ratios.append(value_of(peer) / value_of(row))
                else:
                    ratios.append(value_of(row) / value_of(peer))
            entry["peers"].append({
                "name": name,
                "values": [value_of(r) for r in peer_rounds.values()],
                "p99": [r["p99_ms"] for r in peer_rounds.values() if "p99_ms" in r],
                "ratios": ratios,
                "stalled": max((r.get("stalled", 0) for r in peer_rounds.values()), default=0),
            })
        table.append(entry)
    return table


def verdict(ratios):
    median = statistics.median(ratios)
    if len(ratios) > 1 and max(ratios) - min(ratios) > abs(median - 1):
        return "spread wider than the gap"
    return "ahead" if median >= 1 else "behind"


def text(table):
    lines = ["chatd's figures (median [min-max] over rounds), then each peer's and our ratio round by round "
             "(above 1x: chatd is better)"]
    for entry in table:
        scenario = entry["key"][0]
        unit = " B" if scenario == "idle" else "/s"
        _, figure = spread(entry["values"])
        line = f"{entry['label']:<40} {figure}{unit}"
        if entry["p99"]:
            line += f"  p99 {spread(entry['p99'], '{:.3f}')[1]} ms"
        if scenario == "live":
            cross = entry["key"][3]
            target = LIVE_TARGET_MS[cross]
            line += f"  target p99 < {target} ms: {'met' if statistics.median(entry['p99']) < target else 'NOT met'}"
        if scenario == "idle":
            line += f"  target < 8,192 B: {'met' if statistics.median(entry['values']) < 8192 else 'NOT met'}"
        for peer in entry["peers"]:
            if not peer["ratios"]:
                continue
            line += (f"   {peer['name']} {spread(peer['values'])[1]}: {spread(peer['ratios'], '{:.2f}')[1]}x"
                     f" ({verdict(peer['ratios'])})")
            if peer["stalled"]:
                line += f" ({peer['stalled']} of its streams stalled)"
        lines.append(line)
    rounds = sorted({entry["rounds"] for entry in table})
    lines.append(f"rounds per row: {', '.join(map(str, rounds))}")
    return "\n".join(lines)


def markdown(table):
    lines = ["| row | chatd | p99 ms | peer | peer's figure | ours / peer | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for entry in table:
        figure = spread(entry["values"])[1]
        p99 = spread(entry["p99"], "{:.2f}")[1] if entry["p99"] else "-"
        peers = [p for p in entry["peers"] if p["ratios"]]
        if not peers:
            note = ""
            if entry["key"][0] == "live":
                target = LIVE_TARGET_MS[entry["key"][3]]
                note = f"target p99 < {target} ms: {'met' if statistics.median(entry['p99']) < target else 'not met'}"
            lines.append(f"| {entry['label']} | {figure} | {p99} | - | - | - | {note} |")
        for index, peer in enumerate(peers):
            first = index == 0
            lines.append(
                f"| {entry['label'] if first else ''} | {figure if first else ''} | {p99 if first else ''} | "
                f"{peer['name']} | {spread(peer['values'])[1]} | {spread(peer['ratios'], '{:.2f}')[1]}x | "
                f"{verdict(peer['ratios'])} |")
    return "\n".join(lines)


def plot(table, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in table if e["key"][0] not in ("idle",)]
    names = ["chatd", "grpc-cpp", "grpc-swift", "pgbench"]
    colours = {"chatd": "#1f6feb", "grpc-cpp": "#8b949e", "grpc-swift": "#d29922", "pgbench": "#3fb950"}
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(13, 9), sharex=True)
    width = 0.2
    for offset, name in enumerate(names):
        xs, heights, lows, highs, p99s, p99x = [], [], [], [], [], []
        for index, entry in enumerate(entries):
            if name == "chatd":
                values, p99 = entry["values"], entry["p99"]
            else:
                peer = next((p for p in entry["peers"] if p["name"] == name), None)
                if peer is None:
                    continue
                values, p99 = peer["values"], peer["p99"]
            median = statistics.median(values)
            xs.append(index + (offset - 1.5) * width)
            heights.append(median)
            lows.append(median - min(values))
            highs.append(max(values) - median)
            if p99:
                p99x.append(index + (offset - 1.5) * width)
                p99s.append(statistics.median(p99))
        if xs:
            top.bar(xs, heights, width, yerr=[lows, highs], label=name, color=colours[name], capsize=2)
        if p99s:
            bottom.bar(p99x, p99s, width, color=colours[name])
    top.set_yscale("log")
    top.set_ylabel("per second (median, min-max bars)")
    top.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)
    top.set_title("chatd beside its peers, interleaved rounds (scripts/bench --peers)", pad=28)
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 ms (median)")
    bottom.set_xticks(range(len(entries)))
    bottom.set_xticklabels([e["label"] for e in entries], rotation=35, ha="right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv):
    table = rows(argv[1])
    print(text(table))
    if "--markdown" in argv:
        with open(argv[argv.index("--markdown") + 1], "w") as out:
            out.write(markdown(table) + "\n")
    if "--plot" in argv:
        plot(table, argv[argv.index("--plot") + 1])


if __name__ == "__main__":
    main(sys.argv)
