#!/usr/bin/env python3
"""Prints criterion results as ratios to a baseline measured in the same run.

Usage: python3 benches/ratios.py [--baseline NAME] [GROUP_PREFIX ...]

Reads target/criterion/<group>/<function>/<parameter>/new/estimates.json and,
for every group and parameter, prints each function's mean time and its ratio
to the baseline function (default: "vec").
"""
import json
import pathlib
import sys


def main(argv):
    baseline = "vec"
    if "--baseline" in argv:
        i = argv.index("--baseline")
        baseline = argv[i + 1]
        del argv[i : i + 2]
    prefixes = argv or [""]
    root = pathlib.Path("target/criterion")
    rows = []
    for est in sorted(root.glob("*/*/*/new/estimates.json")):
        group, function, parameter = est.parts[-5], est.parts[-4], est.parts[-3]
        if not any(group.startswith(p) for p in prefixes):
            continue
        mean = json.loads(est.read_text())["mean"]["point_estimate"]
        rows.append((group, parameter, function, mean))
    table = {}
    for group, parameter, function, mean in rows:
        table.setdefault((group, parameter), {})[function] = mean
    print(f"| group | pattern | {baseline} | measured | time / {baseline} | speed-up |")
    print("|---|---|---|---|---|---|")
    for (group, parameter), times in sorted(table.items()):
        base = times.get(baseline)
        for function, mean in sorted(times.items()):
            if function == baseline:
                continue
            ratio = f"{mean / base:.2f}x" if base else "n/a"
            speedup = f"{base / mean:,.0f}x" if base and base / mean >= 10 else (f"{base / mean:.2f}x" if base else "n/a")
            base_s = fmt(base) if base else "n/a"
            print(f"| {group} | {parameter} | {base_s} | {fmt(mean)} ({function}) | {ratio} | {speedup} |")


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


if __name__ == "__main__":
    main(sys.argv[1:])
