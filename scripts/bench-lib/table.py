#!/usr/bin/env python3
"""Prints the benchmark table from .bench/results.json (one JSON object per line): chatd's rows, and where a peer ran
the same scenario in the same run, the peer's figure and our ratio to it (ours / theirs; above 1 is better)."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ours = [r for r in rows if "peer" not in r]
peers = [r for r in rows if "peer" in r]

# Figures recorded for grpc-swift-2 in ../shared/peers/grpc-swift-bench/RESULTS.md, shown when it did not run here.
GRPC_SWIFT_RECORDED = {(1, 1): 1100, (16, 1): 3600, (64, 1): 4400}


def peer(name, scenario, concurrency, connections=None):
    for r in peers:
        if r["peer"] == name and r["scenario"] == scenario and r["concurrency"] == concurrency:
            if connections is None or r.get("connections", connections) == connections:
                return r
    return None


def fmt(value, unit=""):
    return "-" if value is None else f"{value:,.0f}{unit}"


def ratio(name, ours_value, match, key="calls_per_second", lower_is_better=False):
    if not match:
        return ""
    theirs = match[key]
    r = (theirs / ours_value) if lower_is_better else (ours_value / theirs)
    return f"   {name} {fmt(theirs)}: {r:.2f}x"


print("chatd figures, then each peer's figure in the same run and our ratio (above 1x: chatd is better)")
for r in ours:
    scenario, c, conns = r["scenario"], r["concurrency"], r.get("connections", 1)
    if scenario == "idle":
        line = (f"{'idle streams: ' + format(r['streams'], ',') + ' open':<38} {r['bytes_per_stream']:>9,.0f} B/stream"
                f" ({r['failed']} failed; target < 8,192 B: {'met' if r['bytes_per_stream'] < 8192 else 'NOT met'})")
        for name in ("grpc-cpp", "grpc-swift"):
            match = next((p for p in peers if p["peer"] == name and p["scenario"] == "idle"), None)
            line += ratio(name, r["bytes_per_stream"], match, "bytes_per_stream", lower_is_better=True)
        print(line)
        continue
    if scenario == "stream":
        line = (f"{'server stream, ' + str(c) + ' stream(s), 100 B':<38} {fmt(r['calls_per_second']):>9} msgs/s"
                f" (server RSS {fmt(r.get('rss_before_kb'))} -> {fmt(r.get('rss_after_kb'))} kB)")
        for name in ("grpc-cpp", "grpc-swift"):
            match = peer(name, "stream", c)
            line += ratio(name, r["calls_per_second"], match)
            if match and match.get("stalled"):
                line += f" ({match['stalled']} of its streams stalled)"
        print(line)
        continue
    if scenario == "live":
        label = f"live, 1000 watchers, {'2 instances' if r.get('cross_instance') else '1 instance'}"
        target = 50 if r.get("cross_instance") else 10
        verdict = "met" if r["p99_ms"] < target else "NOT met"
        print(f"{label:<38} {fmt(r['calls_per_second']):>9}/s  p50 {r['p50_ms']:.3f}  p99 {r['p99_ms']:.3f} ms"
              f"   target p99 < {target} ms: {verdict}")
        continue
    label = {"unary-health": "unary Health.Check", "send": "durable send", "list": "list latest 50 (1M msgs)"}.get(
        scenario, scenario) + f", {c} in flight" + (f" x{conns} conn" if conns > 1 else "")
    line = f"{label:<38} {fmt(r['calls_per_second']):>9}/s  p50 {r['p50_ms']:.3f}  p99 {r['p99_ms']:.3f} ms"
    if scenario == "unary-health":
        line += ratio("grpc-cpp", r["calls_per_second"], peer("grpc-cpp", scenario, c, conns))
        swift = peer("grpc-swift", scenario, c, conns)
        if swift:
            line += ratio("grpc-swift", r["calls_per_second"], swift)
            line += f" (p99 {swift['p99_ms']:.3f} ms)"
        elif (c, conns) in GRPC_SWIFT_RECORDED:
            recorded = GRPC_SWIFT_RECORDED[(c, conns)]
            line += f"   grpc-swift recorded {recorded:,}: {r['calls_per_second'] / recorded:.2f}x"
    if scenario in ("send", "list"):
        line += ratio("pgbench", r["calls_per_second"], peer("pgbench", scenario, c))
    print(line)
