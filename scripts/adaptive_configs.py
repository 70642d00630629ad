#!/usr/bin/env python3
"""Layer shapes to profile next, where the predictor misses (adaptive sampling, as nn-Meter).

    python scripts/adaptive_configs.py PROFILE.csv.gz [...] --cpu x86-avx512 --gpu cuda:sm_90 \
        --role gpu --count 880 [--spread 0.3] [--seed 0] [--folds 5] -o configs.json

Cross-validates the predictor on the profiles (folds of layer shapes, the shipped booster
settings), takes the layer shapes with a kernel of `--role` predicted more than 10% off, and
draws `--count` new shapes around them (input/output channels and size each within a factor
2**`--spread`; kernel, stride, padding and kind kept), none of them already profiled. The
JSON list is what `mulayer profile --configs` and `gpu_host_run.py pack --profile-configs`
take. Why: held-out accuracy grows with how many profiled shapes share a kernel's schedule
(its tiles); shapes drawn at random over the whole space leave the rare schedules with one
or two samples each, and those are where the misses are (benchmarks/log/2026-11-30.md, "Adaptive sampling").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

WITHIN = 0.10  # the accuracy target's band: a kernel predicted further off is a miss


def missed_shapes(samples, folds: int, seed: int) -> list[str]:
    """Layer shape keys of `samples` (predictor.KernelSamples) with a kernel predicted more
    than WITHIN off by boosters fitted on the other folds, in the samples' order."""
    from tvm_mulayer.planning.predictor import BOOSTER_PARAMS, BOOSTER_ROUNDS

    predicted = samples.cross_predicted(samples.folds(folds, seed), dict(BOOSTER_PARAMS, seed=seed), BOOSTER_ROUNDS)
    missed = np.abs(predicted / samples.seconds - 1) > WITHIN
    return list(dict.fromkeys(samples.shape[missed].tolist()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--cpu", required=True)
    parser.add_argument("--gpu", required=True)
    parser.add_argument("--role", choices=("cpu", "gpu"), required=True, help="whose misses to sample around")
    parser.add_argument("--count", type=int, required=True, help="new layer shapes to write")
    parser.add_argument("--spread", type=float, default=0.3,
                        help="each dimension within a factor 2**SPREAD of the missed shape's (default 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="draw of the folds and of the new shapes")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("-o", "--output", required=True, help="JSON list of configuration keys")
    args = parser.parse_args(argv)
    if args.count < 1 or args.folds < 2 or args.spread <= 0:
        parser.error("--count must be at least 1, --folds at least 2 and --spread positive")

    from tvm_mulayer.base.processors import resolve_processors
    from tvm_mulayer.base.errors import MulayerError
    from tvm_mulayer.planning.predictor import training_samples
    from tvm_mulayer.planning.profiler import sampled_configs
    from tvm_mulayer.base.records import config_key, layer_from_key, read_profiles

    cpu, gpu = resolve_processors(args.cpu, args.gpu)
    _, _, by_role = training_samples(read_profiles(args.profiles), cpu, gpu)
    samples = by_role[args.role]
    missed = missed_shapes(samples, args.folds, args.seed)
    if not missed:
        raise MulayerError(f"cross-validation predicts every {args.role} kernel within {WITHIN:.0%}: "
                           "no shape to sample around; draw new shapes with `mulayer profile --sampled`")
    known = set().union(*(role_samples.shape.tolist() for role_samples in by_role.values()))  # either processor's
    configs = sampled_configs([layer_from_key(key) for key in missed], args.count, args.seed, args.spread, known)
    Path(args.output).write_text(json.dumps([config_key(layer) for layer in configs]))
    print(f"{len(missed)} of {len(set(samples.shape.tolist()))} {args.role} layer shapes have a kernel more than "
          f"{WITHIN:.0%} off in {args.folds}-fold cross-validation; {len(configs)} new shapes around them "
          f"-> {args.output}")
    return 0


if __name__ == "__main__":
    from tvm_mulayer.base.errors import reported

    sys.exit(reported("adaptive_configs.py", main))
