"""The `mulayer` command: compile, run, plan, profile, train, deploy, zoo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .base.errors import MulayerError, reported
from .base.processors import CPU_PRESETS
from .runtime.deploy import DEFAULT_TIMEOUT as DEFAULT_RPC_TIMEOUT
from .runtime.devices import device_label
from .runtime.inputs import read_inputs


def _parse_shapes(items) -> dict | None:
    if not items:
        return None
    shapes = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            if not sep:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise MulayerError(f"--shape {item!r}: write NAME=D0,D1,... such as input=1,3,224,224") from None
    return shapes


def _parse_split(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _parse_dims(text: str) -> tuple:
    return tuple(dim.strip() for dim in text.split(",") if dim.strip())


def _add_processor_args(parser):
    parser.add_argument("--cpu", default="host", help=f"CPU preset ({', '.join(CPU_PRESETS)}) or TVM target JSON")
    parser.add_argument("--gpu", default=None,
                        help="GPU preset (emulated, cuda[:sm_XX], opencl, adreno, mali) or TVM target JSON; "
                             "default: cuda if present, else emulated")
    parser.add_argument("--split", default="0.5", type=_parse_split,
                        help="GPU share of each layer's output channels in [0,1], 'cpu', 'gpu', 'auto' "
                             "(the latency predictor chooses), or a plan JSON file")
    parser.add_argument("--predictor", help="predictor file (`mulayer train`'s .zip or .json) for --split auto "
                                            "(default: the shipped one for these processors, else one measured "
                                            "on first use and cached in $XDG_CACHE_HOME/tvm-mulayer)")
    parser.add_argument("--verify", action="store_true",
                        help="with --split auto: measure the plan against both single-processor plans, keep the fastest")
    parser.add_argument("--dims", default="channel,height", type=_parse_dims,
                        help="with --split auto: what layers may split along: 'channel,height' (the default: "
                             "output channels, or a conv's output rows in operator chains, as CoDL) or 'channel'")
    parser.add_argument("--shape", action="append", metavar="NAME=D0,D1,..",
                        help="static shape for a dynamic model input (repeatable)")


def _add_precision_args(parser):
    parser.add_argument("--precision", default="native",
                        help="'native' (int8 CPU slices + fp16 GPU slices), 'fp32', or per-processor overrides "
                             "such as 'native,gpu=fp32' or 'cpu=int8,gpu=fp32' (default: native)")
    parser.add_argument("--calib", metavar="SAMPLES",
                        help="calibration inputs for the int8 slices: an .npz (one array per input, samples "
                             "stacked on the batch axis), a directory of .npy, or a saved calibration.json / "
                             "artifact to reuse; default: seeded random inputs, with a warning")
    parser.add_argument("--calib-method", default="percentile", choices=("percentile", "minmax"),
                        help="how an input range is read from the samples (default: percentile)")
    parser.add_argument("--calib-percentile", type=float, default=99.99,
                        help="with --calib-method percentile: the share of values inside the range (default 99.99)")


def _compile_args(args) -> dict:
    return dict(cpu=args.cpu, gpu=args.gpu, split=args.split, shapes=_parse_shapes(args.shape),
                predictor=args.predictor, verify=args.verify, precision=args.precision, calib=args.calib, dims=args.dims,
                calib_method=args.calib_method, calib_percentile=args.calib_percentile)


def cmd_compile(args) -> int:
    from . import compile as compile_model

    executable = compile_model(args.model, **_compile_args(args))
    _print_plan(executable)
    path = executable.export(args.output)
    print(f"artifact written to {path}")
    return 0


def _print_plan(executable) -> None:
    from .planning.report import plan_table

    print(plan_table(executable.plan, executable.cpu, executable.gpu, executable.crossing))


def cmd_run(args) -> int:
    from . import compile as compile_model
    from . import load

    source = Path(args.target)
    if source.is_dir():
        executable = load(source)
    else:
        executable = compile_model(source, **_compile_args(args))
    _print_plan(executable)
    inputs = read_inputs(args.input, executable.inputs)
    if inputs is None:
        print("no --input given: running on seeded random data")
    outputs = executable.run(inputs)
    print(f"ran on CPU {device_label(executable.cpu, 0)} and GPU {device_label(executable.gpu, 1)}")
    for name, value in outputs.items():
        print(f"output {name}: shape {list(value.shape)} {value.dtype}, "
              f"mean {float(np.mean(value)):.6g}, max {float(np.max(value)):.6g}")
    if args.output:
        np.savez(args.output, **outputs)
        print(f"outputs written to {args.output}")
    if args.repeat:
        timing = executable.benchmark(inputs, repeat=args.repeat)
        where = f"{executable.cpu.label()} + {executable.gpu.label()}"
        print(f"median latency over {args.repeat} runs: {timing['median'] * 1e3:.3f} ms ({where})")
    return 0


def cmd_plan(args) -> int:
    from .base.processors import resolve_processors
    from .compiler.frontend import import_onnx
    from .planning.partitioner import auto_plan, simulate
    from .planning.report import predicted_table
    from .planning.timeline import write_timeline

    cpu, gpu = resolve_processors(args.cpu, args.gpu)
    mod, info = import_onnx(args.model, _parse_shapes(args.shape))
    multiple = max(cpu.channel_multiple, gpu.channel_multiple)
    plan, choice, graph, predictor = auto_plan(mod["main"], cpu, gpu, args.predictor, info.sources, multiple,
                                               precision=args.precision, log=print, dims=args.dims)
    _, events = simulate(graph, choice.gpu_channels, choice.times, predictor, timeline=True, rows=choice.rows)
    print(predicted_table(plan, choice.times, events, cpu, gpu))
    if args.output:
        plan.save(args.output)
        print(f"plan written to {args.output}")
    lanes = {"predicted": events}
    if args.measure:
        from . import compile as compile_model
        from .planning.timeline import measured_events

        executable = compile_model(args.model, cpu=cpu, gpu=gpu, split=plan, shapes=_parse_shapes(args.shape),
                                   precision=args.precision)
        lanes["measured"] = measured_events(executable)
    write_timeline(args.timeline, lanes)
    print(f"timeline written to {args.timeline}")
    return 0


def cmd_profile(args) -> int:
    from .base.processors import resolve_processors
    from .planning.profiler import FRACTIONS, profile, profile_precisions, sampled_configs, zoo_configs
    from .base.records import configs_from_file

    cpu, gpu = resolve_processors(args.cpu, args.gpu)
    precisions = profile_precisions(args.precision)
    if args.configs:
        if args.models or args.fractions or args.sampled or args.small:
            raise MulayerError("--configs profiles exactly the layers it lists; drop --models, --fractions, "
                               "--sampled and --small, or drop --configs")
        configs = configs_from_file(args.configs)
    else:
        configs = zoo_configs(args.models, fractions=tuple(args.fractions or FRACTIONS), image_size=args.image_size,
                              width=args.width, channel_multiple=max(cpu.channel_multiple, gpu.channel_multiple),
                              small=args.small)
        configs += sampled_configs(configs, args.sampled)
    forms = f"CPU {'/'.join(precisions['cpu'])}, GPU {'/'.join(precisions['gpu'])}"
    if args.rpc or args.tracker:
        from .runtime.deploy import connect
        from .planning.profiler import profile_remote

        session = connect(rpc=args.rpc, tracker=args.tracker, key=args.key)
        print(f"profiling {len(configs)} layer configurations ({forms}) on the remote {cpu.label()} and {gpu.label()}")
        path = profile_remote(session, args.output, cpu, gpu, configs, precisions=precisions, passes=args.passes)
    else:
        print(f"profiling {len(configs)} layer configurations ({forms}) on {cpu.label()} and {gpu.label()}")
        path = profile(args.output, cpu, gpu, configs, precisions=precisions, passes=args.passes)
    print(f"measurements in {path}")
    return 0


def cmd_train(args) -> int:
    from .base.processors import resolve_processors
    from .planning.predictor import train
    from .base.records import read_profiles

    rows = read_profiles(args.profiles)
    cpu, gpu = resolve_processors(args.cpu, args.gpu)
    predictor = train(rows, cpu, gpu, holdout=args.holdout)
    for role, acc in predictor.meta["accuracy"].items():
        whole = predictor.meta["accuracy_whole_layers"].get(role)
        print(f"{role}: held-out {acc['samples']} configs, {acc['within_10pct'] * 100:.1f}% within +-10%, "
              f"median error {acc['median_error'] * 100:.1f}%" + (
                  f"; whole layers held out (every split part, as a network never profiled): {whole['samples']} "
                  f"configs, {whole['within_10pct'] * 100:.1f}%, median error {whole['median_error'] * 100:.1f}%"
                  if whole else ""))
    for role, rep in predictor.meta["repeatability"].items():
        print(f"{role}: {rep['samples']} kernels timed in two passes agree within +-10% for "
              f"{rep['within_10pct'] * 100:.1f}% (median difference {rep['median_difference'] * 100:.1f}%): "
              "the measurement's own limit")
        if "halves" in rep:
            halves = rep["halves"]
            print(f"{role}: the fastest of each half of the passes agree within +-10% for "
                  f"{halves['within_10pct'] * 100:.1f}% (median difference {halves['median_difference'] * 100:.1f}%)")
    if args.runs:
        from .planning.partitioner import calibrate, whole_model_runs

        multiple = max(cpu.channel_multiple, gpu.channel_multiple)
        print("whole model (ms): measured, layer kernels only, calibrated, calibrated without this model")
        for run in calibrate(predictor, whole_model_runs(args.runs, multiple), multiple):
            print(f"  {run['model']} {run['split']}: {run['measured_ms']:.3f} {run['kernels_only_ms']:.3f} "
                  f"{run['calibrated_ms']:.3f} {run['model_held_out_ms']:.3f}")
    predictor.save(args.output)
    print(f"predictor written to {args.output}")
    return 0


def cmd_zoo(args) -> int:
    from .base import zoo

    if args.zoo_command == "list":
        for name in zoo.ALL_NAMES:
            print(f"{name:19s} {zoo.describe(name)}")
        return 0
    kwargs = zoo.small(args.name) if args.small else {}
    if args.width is not None:
        kwargs["width"] = args.width
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    try:
        model = zoo.build(args.name, **kwargs)
    except ValueError as err:
        raise MulayerError(str(err)) from None
    import onnx

    onnx.save(model, args.output)
    print(f"{args.name} written to {args.output}")
    return 0


def _add_deploy_parser(subparsers) -> None:
    p = subparsers.add_parser("deploy", help="run an artifact on a remote device over TVM RPC")
    p.add_argument("artifact", metavar="ARTIFACT_DIR")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--rpc", metavar="HOST:PORT", help="a TVM RPC server (python -m tvm.exec.rpc_server, "
                                                          "the TVM RPC app)")
    where.add_argument("--tracker", metavar="HOST:PORT", help="a TVM RPC tracker; needs --key")
    p.add_argument("--key", help="device key registered with the tracker (with --rpc: the server's key, if any)")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="input data (repeatable)")
    p.add_argument("-o", "--output", help="write outputs to this .npz, keyed by ONNX output names")
    p.add_argument("--repeat", type=int, default=10, help="time N remote runs and print the median (0: no timing)")
    p.add_argument("--timeout", type=float, default=DEFAULT_RPC_TIMEOUT,
                   help="seconds to wait for a connection or a free server (default %(default)s)")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args) -> int:
    from .base.processors import Processor
    from .runtime.deploy import connect, deploy
    from .runtime.executable import read_manifest

    if args.repeat < 0:
        raise MulayerError("--repeat must be 0 or more")
    manifest = read_manifest(args.artifact)
    inputs = read_inputs(args.input, manifest["inputs"])
    if inputs is None:
        print("no --input given: running on seeded random data")
    session = connect(rpc=args.rpc, tracker=args.tracker, key=args.key, timeout=args.timeout)
    result = deploy(args.artifact, session, inputs, repeat=args.repeat)
    for name, value in result["outputs"].items():
        print(f"output {name}: shape {list(value.shape)} {value.dtype}, "
              f"mean {float(np.mean(value)):.6g}, max {float(np.max(value)):.6g}")
    if args.output:
        np.savez(args.output, **result["outputs"])
        print(f"outputs written to {args.output}")
    if result["latency"] is not None:
        cpu, gpu = Processor.from_json(manifest["cpu"]), Processor.from_json(manifest["gpu"])
        target = args.rpc or f"{args.key} via {args.tracker}"
        print(f"median latency over {args.repeat} remote runs: {result['latency'] * 1e3:.3f} ms "
              f"({cpu.label()} + {gpu.label()} on {target})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mulayer", description="Run one CNN on a CPU and a GPU at the same time.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile an ONNX model into a two-device artifact")
    _add_precision_args(p)
    p.add_argument("model", help="ONNX model file")
    p.add_argument("-o", "--output", required=True, help="artifact directory to write")
    _add_processor_args(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run an artifact (or compile and run an ONNX model)")
    _add_precision_args(p)
    p.add_argument("target", metavar="ARTIFACT_DIR|MODEL.onnx")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="input data (repeatable)")
    p.add_argument("-o", "--output", help="write outputs to this .npz, keyed by ONNX output names")
    p.add_argument("--repeat", type=int, default=0, help="time N runs and print the median latency")
    _add_processor_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plan", help="choose a plan with the latency predictor; print it and draw its timeline")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("-o", "--output", help="write the plan JSON here (usable as --split FILE)")
    p.add_argument("--timeline", default="timeline.png", help="PNG Gantt chart of both processors")
    p.add_argument("--measure", action="store_true", help="also compile, run and draw the measured timeline")
    p.add_argument("--precision", default="native",
                   help="slice precision to plan for, as compile takes it: 'native' (int8 CPU + fp16 GPU, "
                        "default), 'fp32', or overrides such as 'native,gpu=fp32'")
    _add_processor_args(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("profile", help="measure layer kernels and copies on both processors (CSV)")
    p.add_argument("-o", "--output", default="profile.csv", help="CSV to append to (resumes where it stopped)")
    p.add_argument("--models", nargs="+", help="zoo models whose layers to profile (default: all)")
    p.add_argument("--fractions", nargs="+", type=float, help="split fractions whose parts to measure")
    p.add_argument("--sampled", type=int, default=0, metavar="N",
                   help="also N layer shapes sampled around the zoo's (other channel counts and sizes)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--small", action="store_true",
                   help="the models' small variants (`zoo export --small`) instead of --image-size/--width")
    p.add_argument("--configs", metavar="JSON",
                   help="profile the layers of these configuration keys instead (a JSON list, as a profile's "
                        "config column holds them; e.g. `scripts/reprofile.py changed`'s list after a schedule "
                        "change); --models, --fractions, --sampled, --small do not apply")
    p.add_argument("--precision", nargs="+", default=["native", "fp32"], metavar="SPEC",
                   help="slice precisions to profile, in --precision syntax of compile (native, fp32, "
                        "cpu=int8,gpu=fp32, ...); every precision any SPEC gives a processor is measured "
                        "(default: native fp32 — int8 and fp32 CPU slices, fp16 and fp32 GPU slices)")
    p.add_argument("--passes", type=int, default=1, metavar="N",
                   help="time every kernel in N separate sweeps (the predictor takes the fastest; `train` "
                        "reports how well the sweeps agree: the measurement's own repeatability)")
    p.add_argument("--rpc", metavar="HOST:PORT", help="profile the devices of this TVM RPC server")
    p.add_argument("--tracker", metavar="HOST:PORT", help="profile a device from this RPC tracker (with --key)")
    p.add_argument("--key", help="the device key at the tracker")
    _add_processor_args(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("train", help="train the latency predictor from profile CSVs")
    p.add_argument("profiles", nargs="+")
    p.add_argument("-o", "--output", default="predictor.zip",
                   help="the predictor: a compact zip archive, or one readable JSON file if the name ends in .json")
    p.add_argument("--holdout", type=float, default=0.2, help="share of configurations held out for accuracy")
    p.add_argument("--runs", nargs="+", metavar="RESULTS.json",
                   help="whole-model latencies (scripts/gpu_host_run.py results) to fit the overheads to")
    _add_processor_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("zoo", help="the built-in model zoo")
    zoo_sub = p.add_subparsers(dest="zoo_command", required=True)
    zoo_sub.add_parser("list", help="list the models")
    e = zoo_sub.add_parser("export", help="write a zoo model as ONNX")
    e.add_argument("name")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--small", action="store_true", help="the small test variant")
    e.add_argument("--width", type=float, help="channel width multiplier")
    e.add_argument("--image-size", type=int, help="input height and width")
    p.set_defaults(func=cmd_zoo)
    _add_deploy_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return reported("mulayer", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
