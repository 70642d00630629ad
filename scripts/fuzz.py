#!/usr/bin/env python3
"""Long-mode differential fuzzing: random CNNs x random plans vs onnxruntime.

    python scripts/fuzz.py --cases 1000 [--out fuzz-failures] [--seed 1]

Generates cases with the strategies in tests/fuzz_graphs.py, compiles each with
tvm_mulayer (emulated GPU), and compares every output with onnxruntime fp32 (relative
error < 1e-4). Prints the counts (cases, mismatches, errors) and writes each failing
case's model.onnx, plan.json, x.npy and error.txt to OUT/case-NNNN/. Exits 1 when any
case failed. Reproduce one with `python scripts/fuzz.py --replay OUT/case-NNNN`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzz_graphs  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--out", default="fuzz-failures")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--replay", help="re-run one saved case directory")
    parser.add_argument("--include-known", action="store_true",
                        help="also generate graphs that hit the known bugs (fuzz_graphs.KNOWN_BUGS)")
    args = parser.parse_args(argv)

    if args.replay:
        model, plan, x = fuzz_graphs.load_case(Path(args.replay))
        print(json.dumps(fuzz_graphs.run_case(model, plan, x)))
        return 0

    out = Path(args.out)
    counts = {"cases": 0, "ok": 0, "mismatches": 0, "errors": 0}
    error_kinds: dict = {}
    start = time.time()

    def record(case, message: str, kind: str) -> None:
        counts[kind] += 1
        where = fuzz_graphs.save_case(out / f"case-{counts['cases']:04d}", case.model, case.plan, case.input,
                                      f"{case.describe()}\n\n{message}")
        headline = message.strip().splitlines()[-1][:160] if message.strip() else kind
        error_kinds[headline] = error_kinds.get(headline, 0) + 1
        print(f"  case {counts['cases']}: {kind}: {headline}  -> {where}", flush=True)

    @settings(max_examples=args.cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(fuzz_graphs.cases(avoid_known=not args.include_known))
    def one(case):
        counts["cases"] += 1
        try:
            errors = fuzz_graphs.run_case(case.model, case.plan, case.input)
        except Exception:  # noqa: BLE001 - every failure is recorded, none stops the run
            record(case, traceback.format_exc(), "errors")
            return
        bad = {name: err for name, err in errors.items() if not err < fuzz_graphs.TOLERANCE}
        if bad:
            record(case, f"relative errors {bad} (tolerance {fuzz_graphs.TOLERANCE})", "mismatches")
        else:
            counts["ok"] += 1
        if counts["cases"] % 25 == 0:
            print(f"{counts} after {time.time() - start:.0f} s", flush=True)

    if args.seed is not None:
        one = seed(args.seed)(one)
    one()
    print(json.dumps({**counts, "seconds": round(time.time() - start, 1)}))
    for headline, n in sorted(error_kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d} x {headline}")
    return 1 if counts["mismatches"] or counts["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
