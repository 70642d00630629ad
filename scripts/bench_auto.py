"""`--split auto` against every fixed plan on this machine, in the same run.

    TVM_NUM_THREADS=1 python scripts/bench_auto.py [--models NAME ...] [--full] [--gpu emulated]
        [--predictor FILE] [--rounds 5] [--repeat 30]

Per zoo model (small variants unless --full), compiles `auto` (the shipped predictor for
these processors, or --predictor), CPU-only, GPU-only and global ratios 0.25/0.5/0.75 at
native precision, all with the int8 calibration of the first compile (so only the plan
differs), then times them in alternating rounds (each round runs every plan; the fastest
round's median counts, since other load on a shared machine only adds time). Prints the
table with auto / best fixed plan: the issue's "within 10% of the best" is that ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

FIXED = ("cpu", "gpu", 0.25, 0.5, 0.75)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vgg16", "alexnet", "googlenet", "squeezenet1_1",
                                                        "mobilenet_v1"])
    parser.add_argument("--full", action="store_true", help="full-size models (default: the small variants)")
    parser.add_argument("--cpu", default="host")
    parser.add_argument("--gpu", default="emulated")
    parser.add_argument("--predictor", help="predictor JSON (default: the one shipped for these processors)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)

    import tvm_mulayer
    from tvm_mulayer.base import zoo

    print("| model | auto (ms) | " + " | ".join(f"{s} (ms)" for s in FIXED) + " | auto / best fixed | auto's plan |")
    print("|---|" + "---:|" * (len(FIXED) + 2) + "---|")
    for name in args.models:
        model = zoo.build(name, **({} if args.full else zoo.small(name)))
        with tempfile.TemporaryDirectory() as tmp:
            calib = Path(tmp) / "calibration.json"
            plans = {}
            for split in ("auto", *FIXED):
                with contextlib.redirect_stdout(io.StringIO()):  # each compile prints its plan table
                    plans[split] = tvm_mulayer.compile(
                        model, cpu=args.cpu, gpu=args.gpu, split=split, precision="native",
                        predictor=args.predictor if split == "auto" else None,
                        calib=str(calib) if calib.exists() else None)
                if not calib.exists():
                    plans[split].calibration.save(calib)
        best = dict.fromkeys(plans, float("inf"))
        for _ in range(args.rounds):
            for split, executable in plans.items():
                best[split] = min(best[split], executable.benchmark(repeat=args.repeat)["median"])
        fixed = min(best[s] for s in FIXED)
        print(f"| {name} | {best['auto'] * 1e3:.3f} | " + " | ".join(f"{best[s] * 1e3:.3f}" for s in FIXED)
              + f" | **{best['auto'] / fixed:.2f}** | {plans['auto'].plan.description} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
