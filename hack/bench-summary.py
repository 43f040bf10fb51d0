#!/usr/bin/env python3
"""Prints issue 23's table from the rows the benches recorded in this run
(benches/shared/summary.rs writes them to $BENCH_SUMMARY as JSON lines).

Usage: bench-summary.py FILE
"""
import json
import sys
from typing import Any


def fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def row(r: dict[str, Any]) -> str:
    unit = r["unit"]
    base = r.get("baseline")
    base_text = f"{base['name']} {fmt(base['value'])} {unit}" if base else "-"
    floor = r.get("floor")
    if floor:
        # The least this path can cost, measured in the same run.
        base_text += f"; {floor['name']} {fmt(floor['value'])} {unit}"
        if base and base["value"] > 0:
            base_text += f" ({floor['value'] / base['value']:.2f}x)"
    judged = r.get("judged")
    if judged is None:
        figure = "-"
    elif r["relative"]:
        figure = f"{judged:.2f}x"
    else:
        figure = f"{fmt(judged)} {unit}"
    target = f"{r['goal']} {fmt(r['target'])}{'x' if r['relative'] else ' ' + unit}"
    met = {True: "met", False: "NOT met", None: "?"}[r.get("met")]
    return (f"| {r['what']} | {fmt(r['value'])} {unit} | {base_text} "
            f"| {figure} | {target} | {met} |")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        rows = []
    print("\nissue 23's table, from this run (docs/performance.md says why a "
          "target is missed):")
    print("| what | buntime | baseline (same run) | figure | target | |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(row(r))
    if not rows:
        print("| (no rows: a bench was skipped, filtered or failed) | | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
