#!/usr/bin/env python3
"""Reads Google Benchmark JSON from rill_bench and prints rill's ratio
against each peer per scenario (median items/s over median items/s), as a
Markdown table; optionally renders a PNG bar chart with gnuplot.

    report.py RESULTS.json [--chart OUT.png]
"""
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict


def medians(path):
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data["benchmarks"]:
        # "scenario/impl/payload[/min_time:...][/repeats:...][/real_time]"
        name = "/".join(b.get("run_name", b["name"]).split("/")[:3])
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        if "items_per_second" in b:
            out[name] = b["items_per_second"]  # the median when aggregated
    return data.get("context", {}), out


def table(results):
    groups = defaultdict(dict)  # (scenario, payload) -> impl -> items/s
    for name, ips in results.items():
        parts = name.split("/")
        if len(parts) != 3:
            continue
        scenario, impl, payload = parts
        groups[(scenario, payload)][impl] = ips
    lines = ["| scenario | payload | rill events/s | peer | peer events/s | rill / peer |",
             "|---|---:|---:|---|---:|---:|"]
    for (scenario, payload), impls in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
        rill = impls.get("rill")
        peers = [(k, v) for k, v in impls.items() if not k.startswith("rill")]  # rill_* are variants
        if rill is None:
            continue
        if not peers:
            lines.append(f"| {scenario} | {payload} | {rill:,.0f} | — | — | — |")
        for peer, v in sorted(peers):
            lines.append(f"| {scenario} | {payload} | {rill:,.0f} | {peer} | {v:,.0f} | {rill / v:.2f}× |")
    return "\n".join(lines), groups


def chart(groups, out):
    with tempfile.TemporaryDirectory() as tmp:
        dat = os.path.join(tmp, "bars.dat")
        with open(dat, "w") as f:
            for (scenario, payload), impls in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
                for impl, v in sorted(impls.items(), key=lambda kv: (kv[0] != "rill", kv[0])):
                    f.write(f'"{scenario}/{payload} {impl}" {v / 1e6:.3f} {1 if impl.startswith("rill") else 2}\n')
        script = f"""
set terminal pngcairo size 1400,700 noenhanced font ",9"
set output "{out}"
set style fill solid 0.8 border -1
set boxwidth 0.8
set ylabel "million events (round trips) per second, log scale"
set logscale y
set yrange [0.001:*]
set xtics rotate by 60 right
set grid ytics
set key off
set title "rill vs peers (median of 5 runs, higher is better; rill in blue)"
set palette defined (1 "#1f77b4", 2 "#aaaaaa")
unset colorbox
plot "{dat}" using 0:2:3:xtic(1) with boxes lc palette
"""
        subprocess.run(["gnuplot"], input=script.encode(), check=True)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    context, results = medians(sys.argv[1])
    text, groups = table(results)
    cpu = context.get("mhz_per_cpu", "?")
    print(f"host: {context.get('host_name', '?')}, {context.get('num_cpus', '?')} cpus @ {cpu} MHz, "
          f"date {context.get('date', '?')}")
    print(text)
    if "--chart" in sys.argv:
        chart(groups, sys.argv[sys.argv.index("--chart") + 1])


if __name__ == "__main__":
    main()
