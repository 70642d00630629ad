"""What the predictor's inaccuracy costs a plan, on networks it has never seen.

    python scripts/blind_plans.py PROFILE.csv [...] --cpu x86-avx512 --gpu cuda:sm_90 \
        [--predictor FILE] [--models googlenet ...] [--precision native fp32]

The shipped predictor answers every layer a profile measured with its measurement, so on the
zoo `--split auto` plans from measured kernel times. A network nobody profiled gets the
boosters' predictions instead, and those are right within +-10% far less often for whole
layers never seen than for held-out split parts of seen ones (`mulayer train`'s two figures).
This script asks what that costs: for each zoo model it fits the boosters on the profile
without any of the model's layers (every split part of each, as `tune_predictor.py
--whole-layers` holds them out), lets the partitioner plan the model with that blind
predictor, and scores the blind plan with the measured kernel times (the full predictor,
overheads and copies as shipped). A ratio of 1.000 means the blind plan is as fast as the
plan made from measurements. `--verify` measures the chosen plan against both
single-processor plans and keeps the fastest: the last column is the blind plan with it.
"""

from __future__ import annotations

import argparse


def blind_predictor(full, samples: dict, families: set, params: dict, rounds: int):
    """`full` with boosters fitted without the layers of `families` and without their measurements."""
    import numpy as np

    from tvm_mulayer.planning.predictor import Predictor, split_family
    from tvm_mulayer.base.records import parse_config

    boosters, bases = {}, {}
    for role, role_samples in samples.items():
        boosters[role], bases[role] = role_samples.fit(~np.isin(role_samples.family, list(families)), params, rounds)
    measured = {role: {kind: {key: seconds for key, seconds in table.items()
                              if split_family(parse_config(key)[0]) not in families}
                       for kind, table in kinds.items()}
                for role, kinds in full.measured.items()}
    return Predictor(boosters, bases, full.copy_model, full.meta, measured, full.convert_model)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="+", help="the profiles the predictor was trained on")
    parser.add_argument("--cpu", required=True)
    parser.add_argument("--gpu", required=True)
    parser.add_argument("--predictor", help="the predictor trained on the profiles (default: the shipped one)")
    parser.add_argument("--models", nargs="+", help="zoo models (default: all)")
    parser.add_argument("--precision", nargs="+", default=["native", "fp32"], help="slice precisions to plan in")
    args = parser.parse_args(argv)

    from tvm_mulayer.base import zoo
    from tvm_mulayer.base.processors import resolve_processors
    from tvm_mulayer.compiler.frontend import import_onnx
    from tvm_mulayer.planning.partitioner import default_predictor, layer_graph, partition, simulate
    from tvm_mulayer.planning.predictor import BOOSTER_PARAMS, BOOSTER_ROUNDS, Predictor, split_family, training_samples
    from tvm_mulayer.base.records import read_profiles
    from tvm_mulayer.base.quantization import parse_precision

    cpu, gpu = resolve_processors(args.cpu, args.gpu)
    full = Predictor.load(args.predictor) if args.predictor else default_predictor(cpu, gpu)
    full.check_processors(cpu, gpu)
    _, _, samples = training_samples(read_profiles(args.profiles), cpu, gpu)
    multiple = max(cpu.channel_multiple, gpu.channel_multiple)
    print(f"CPU {cpu.label()} + GPU {gpu.label()}; times in ms, scored with the measured kernel times")
    print("| model | slices | measured plan | CPU only | GPU only | blind plan, predicted | blind plan, scored "
          "| scored / measured plan | with --verify / measured plan |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models or zoo.NAMES:
        graph = layer_graph(import_onnx(zoo.build(name))[0]["main"])
        blind = blind_predictor(full, samples, {split_family(node.layer) for node in graph.layers},
                                dict(BOOSTER_PARAMS, seed=0), BOOSTER_ROUNDS)
        for mode in args.precision:
            precision = parse_precision(mode)
            measured = partition(graph, full, multiple, precision=precision)
            guess = partition(graph, blind, multiple, precision=precision)
            scored = simulate(graph, guess.gpu_channels, measured.times, full)
            single = min(measured.single.values())
            print(f"| {name} | {mode} ({measured.times.precision['cpu']}/{measured.times.precision['gpu']}) | "
                  f"{measured.latency * 1e3:.3f} | {measured.single['cpu'] * 1e3:.3f} | "
                  f"{measured.single['gpu'] * 1e3:.3f} | {guess.latency * 1e3:.3f} | {scored * 1e3:.3f} | "
                  f"{scored / measured.latency:.3f} | {min(scored, single) / measured.latency:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    from tvm_mulayer.base.errors import reported

    raise SystemExit(reported("blind_plans.py", main))
