"""Cross-validate the predictor's booster settings on a profile.

    python scripts/tune_predictor.py PROFILE.csv [...] --cpu x86-avx512 --gpu cuda:sm_90 \
        [--folds 5] [--depth 4 6] [--eta 0.05 0.02] [--rounds 800 2000] [--min-child-weight 1 3] \
        [--sample 0.9 0.8] [--by-rule] [--seeds 3] [--train-share 0.6 0.8 1] [--whole-layers]

Every combination of the settings given is scored the way `mulayer train` scores its
predictor — share of held-out kernels predicted within +-10%, per processor, precision and
kind — but over k folds of layer shapes, so every configuration is held out once and the
score does not hang on one random 20%. The first row is the shipped setting
(predictor.BOOSTER_PARAMS, BOOSTER_ROUNDS). `--by-rule` adds, under each setting, the score
of every schedule form within each kind (which rule the kernels got: where the model misses).
`--seeds N` repeats each setting over N draws of the folds (and booster seeds) and reports the
mean: one draw of 5 folds moves a kind's score by 1-2 points, about what a feature gains.
`--train-share` fits each fold's boosters on only that share of the other folds' layer shapes
(drawn anew per draw): how accuracy grows with the data says whether profiling more shapes
would pay. `--whole-layers` draws the folds by layer instead of by shape: a shape is one split
part of a layer (its output channels), and the other parts of a held-out one are otherwise
trained on; whole layers held out score what a network never profiled gets.
"""

from __future__ import annotations

import argparse
import itertools
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--cpu", required=True)
    parser.add_argument("--gpu", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--depth", nargs="+", type=int, default=[4, 6])
    parser.add_argument("--eta", nargs="+", type=float, default=[0.05, 0.02])
    parser.add_argument("--rounds", nargs="+", type=int, default=[800, 2000])
    parser.add_argument("--min-child-weight", nargs="+", type=float, default=[1, 3])
    parser.add_argument("--sample", nargs="+", type=float, default=[0.9, 0.8],
                        help="row and column subsampling (both the same)")
    parser.add_argument("--by-rule", action="store_true", help="also score each schedule form within each kind")
    parser.add_argument("--seeds", type=int, default=1, help="draws of the folds to average over")
    parser.add_argument("--train-share", nargs="+", type=float, default=[1.0],
                        help="shares of the training layer shapes to fit on (a learning curve)")
    parser.add_argument("--whole-layers", action="store_true",
                        help="hold out whole layers (every split part of one), not single shapes")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.folds < 2:
        parser.error("--seeds must be at least 1 and --folds at least 2")
    if any(not 0 < share <= 1 for share in args.train_share):
        parser.error("--train-share takes shares in (0, 1]")

    from tvm_mulayer.base.processors import resolve_processors
    from tvm_mulayer.planning.predictor import BOOSTER_PARAMS, BOOSTER_ROUNDS, training_samples
    from tvm_mulayer.base.records import read_profiles

    cpu, gpu = resolve_processors(args.cpu, args.gpu)
    _, _, by_role = training_samples(read_profiles(args.profiles), cpu, gpu)
    samples = list(by_role.values())
    folds = {seed: [s.folds(args.folds, seed, args.whole_layers) for s in samples] for seed in range(args.seeds)}
    shipped = (BOOSTER_PARAMS, BOOSTER_ROUNDS)
    grid = [({**BOOSTER_PARAMS, "max_depth": d, "eta": e, "min_child_weight": m, "subsample": f,
              "colsample_bytree": f}, r)
            for d, e, r, m, f in itertools.product(args.depth, args.eta, args.rounds, args.min_child_weight,
                                                   args.sample)]
    for (params, rounds), share in itertools.product([shipped] + [g for g in grid if g != shipped], args.train_share):
        draws = {}
        for seed, seed_folds in folds.items():
            for s, fold in zip(samples, seed_folds):
                trainable = s.drawn(share, 1000 + seed) if share < 1 else None
                for label, score in s.accuracy(fold, dict(params, seed=seed), rounds, by_rule=args.by_rule,
                                               trainable=trainable).items():
                    draws.setdefault(label, []).append(score)
        scores = {label: {key: sum(d[key] for d in drawn) / len(drawn) for key in ("within_10pct", "median_error")}
                  | {"samples": drawn[0]["samples"]} for label, drawn in draws.items()}
        setting = (f"depth {params['max_depth']} eta {params['eta']} rounds {rounds} "
                   f"min_child_weight {params['min_child_weight']} sample {params['subsample']}"
                   + (f" trained on {share:g} of the shapes" if share < 1 else ""))
        print(f"{setting}{' (shipped)' if (params, rounds) == shipped else ''}: " + ", ".join(
            f"{label} {score['within_10pct'] * 100:.1f}%" for label, score in scores.items() if ":" not in label))
        for label, score in scores.items():
            if ":" in label:  # a schedule form within a kind
                print(f"    {label}: {score['within_10pct'] * 100:.1f}% of {score['samples']} "
                      f"(median error {score['median_error'] * 100:.1f}%)")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    from tvm_mulayer.base.errors import reported

    raise SystemExit(reported("tune_predictor.py", main))
