#!/usr/bin/env python3
"""Prints the benchmark table from .bench/results.json (one JSON object per line): chatd's rows, and where a peer ran
the same scenario in the same run, the peer's figure and our ratio to it (ours / theirs; above 1 is faster)."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ours = [r for r in rows if "peer" not in r]
peers = [r for r in rows if "peer" in r]

# Figures recorded for grpc-swift-2 in ../shared/peers/grpc-swift-bench/RESULTS.md (not this run): the floor
# is 3x these.
GRPC_SWIFT_RECORDED = {(1, 1): 1100, (16, 1): 3600, (64, 1): 4400}


def peer(name, scenario, concurrency, connections=None):
    for r in peers:
        if r["peer"] == name and r["scenario"] == scenario and r["concurrency"] == concurrency:
            if connections is None or r.get("connections", connections) == connections:
                return r
    return None


def fmt(value, unit=""):
    return "-" if value is None else f"{value:,.0f}{unit}"


print(f"{'scenario':<34} {'chatd':>12} {'p50 ms':>8} {'p99 ms':>8}   {'peer':<10} {'peer/s':>10} {'ratio':>6}")
for r in ours:
    scenario, c, conns = r["scenario"], r["concurrency"], r.get("connections", 1)
    if scenario == "idle":
        cpp = next((p for p in peers if p["peer"] == "grpc-cpp" and p["scenario"] == "idle"), None)
        line = (f"{'idle streams: ' + format(r['streams'], ',') + ' open':<34} {r['bytes_per_stream']:>10,.0f} B/stream"
                f" ({r['failed']} failed; target < 8,192 B: {'met' if r['bytes_per_stream'] < 8192 else 'NOT met'})")
        if cpp:
            line += f"   grpc-cpp {cpp['bytes_per_stream']:,.0f} B/stream ({cpp['streams']:,} streams)"
        print(line)
        continue
    if scenario == "stream":
        cpp = peer("grpc-cpp", "stream", c)
        line = (f"{'server stream, ' + str(c) + ' stream(s), 100 B':<34} {fmt(r['calls_per_second']):>12} msgs/s"
                f" (RSS {fmt(r.get('rss_before_kb'))} -> {fmt(r.get('rss_after_kb'))} kB)")
        if cpp:
            line += f"   grpc-cpp {fmt(cpp['calls_per_second'])} msgs/s, ratio {r['calls_per_second'] / cpp['calls_per_second']:.2f}"
        print(line)
        continue
    if scenario == "live":
        label = f"live, 1000 watchers, {'2 instances' if r.get('cross_instance') else '1 instance'}"
        target = 50 if r.get("cross_instance") else 10
        verdict = "met" if r["p99_ms"] < target else "NOT met"
        print(f"{label:<34} {fmt(r['calls_per_second']):>12} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}   "
              f"target p99 < {target} ms: {verdict}")
        continue
    label = {"unary-health": "unary Health.Check", "send": "durable send", "list": "list latest 50 (1M msgs)"}.get(
        scenario, scenario) + f", {c} in flight" + (f" x{conns} conn" if conns > 1 else "")
    line = f"{label:<34} {fmt(r['calls_per_second']):>12} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}"
    compared = []
    if scenario == "unary-health":
        compared.append(("grpc-cpp", peer("grpc-cpp", scenario, c, conns)))
    if scenario in ("send", "list"):
        compared.append(("pgbench", peer("pgbench", scenario, c)))
    for name, match in compared:
        if match:
            ratio = r["calls_per_second"] / match["calls_per_second"]
            line += f"   {name:<10} {fmt(match['calls_per_second']):>10} {ratio:>6.2f}"
    if scenario == "unary-health" and (c, conns) in GRPC_SWIFT_RECORDED:
        recorded = GRPC_SWIFT_RECORDED[(c, conns)]
        line += f"   (grpc-swift-2 recorded {recorded:,}: {r['calls_per_second'] / recorded:.1f}x)"
    print(line)
