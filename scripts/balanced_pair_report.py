#!/usr/bin/env python3
"""Tables of balanced-pair results (`gpu_host_run.py run` files, one per call and GPU share):
per GPU share, each model's median latency per plan, the ideal co-execution bound
Tc*Tg/(Tc+Tg) of our CPU-only and GPU-only, each plan's ratio to the best single
processor, and the bytes crossing per inference. Ratios compare runs of one file only (one
call: the host drifts between calls).

    python scripts/balanced_pair_report.py benchmarks/balanced-pair-2026-12-03-*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _label(row: dict) -> str:
    split = str(row["split"])
    return Path(split).stem if split.endswith(".json") else split


def _crossing(row: dict) -> str:
    crossing = row.get("crossing_bytes") or {}
    total = sum(sum(by_dtype.values()) for by_dtype in crossing.values())
    return f"{total / 1024:.0f} KiB" if crossing else "-"


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    share = data.get("gpu_share")
    where = f"GPU share {share}% ({data.get('sm_count')} SMs)" if share else "whole GPU"
    by_model: dict = {}
    for row in data["runs"]:
        by_model.setdefault(row["model"], {})[_label(row)] = row
    lines = [f"{path.name}: {where}", "",
             "| model | plan | median ms | / best single | ideal ms | bytes crossing |", "|---|---|---|---|---|---|"]
    for model, rows in by_model.items():
        cpu, gpu = rows.get("cpu", {}).get("median_ms"), rows.get("gpu", {}).get("median_ms")
        best = min(t for t in (cpu, gpu) if t is not None) if (cpu or gpu) else None
        ideal = f"{cpu * gpu / (cpu + gpu):.2f}" if cpu and gpu else "-"
        for label, row in rows.items():
            ratio = f"{row['median_ms'] / best:.2f}" if best else "-"
            lines.append(f"| {model} | {label} | {row['median_ms']:.2f} | {ratio} | {ideal} | {_crossing(row)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    print("\n\n".join(table(path) for path in args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
