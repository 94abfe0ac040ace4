#!/usr/bin/env python3
"""Renders crash_tests --results JSON lines as the Markdown tables of docs/reliability.md:
one row per workload (states, corrupt, lost in total) and one per workload and kind of fault."""
import json
import sys

KINDS = ["process kill", "power cut, reordered", "power cut, torn sectors", "write EIO", "short write + EIO",
         "ENOSPC growing the file", "flush EIO", "fallocate EIO"]


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| workload | what | ops | states | corrupt | lost |")
    print("|---|---|---:|---:|---:|---:|")
    total = [0, 0, 0]
    for r in rows:
        corrupt = sum(k["corrupt"] for k in r["kinds"].values())
        lost = sum(k["lost"] for k in r["kinds"].values())
        total = [total[0] + r["states"], total[1] + corrupt, total[2] + lost]
        print(f"| {r['workload']} | {r['what']} | {r['ops']} | {r['states']} | {corrupt} | {lost} |")
    print(f"| **all** | | | **{total[0]}** | **{total[1]}** | **{total[2]}** |")
    print()
    print("States per kind of fault (states / corrupt / lost; fault kinds: runs with one injected failure):")
    print()
    print("| workload | " + " | ".join(KINDS) + " |")
    print("|---|" + "---:|" * len(KINDS))
    for r in rows:
        cells = []
        for k in KINDS:
            s = r["kinds"].get(k)
            cells.append("-" if not s else f"{s['states']} / {s['corrupt']} / {s['lost']}")
        print(f"| {r['workload']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
