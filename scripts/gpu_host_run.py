#!/usr/bin/env python3
"""Run tvm-mulayer on a GPU host that has only the TVM *runtime* (one `device` call).

Two halves, one file:

  pack  (here, with the compiler) compile zoo models for a CPU+GPU pair at several splits,
        and optionally the profiler's kernels; add the TVM runtime package (without
        libtvm_compiler.so) and the tvm-ffi wheel for the host's Python, all in one
        directory small enough to carry (the `device` tool carries 64 MiB).
          --check      carry weights and onnxruntime references: outputs are compared
          (default)    latency only: weights are not carried (VGG-16 alone is 553 MB) but
                       drawn at random on the host with the artifact's shapes — the
                       latency of a dense network does not depend on the values
          --peers      on the host, rebuild the zoo models (numpy + onnx) and time
                       onnxruntime CPU and PyTorch fp16 (eager and CUDA graph) on them
          --profile    also export the profiler's kernels for both processors
          --trace N    also time every kernel of each run (median of N traced inferences)
          --gpu-shares P ...  run everything once per share of the GPU: the run starts the
                       CUDA MPS control daemon (pipe and log directories under /tmp, quit on
                       exit) and runs each share in its own process with
                       CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=P (5 -> 8 of the H200's 132 SMs,
                       12 -> 14, 25 -> 32, 100 -> all); each share's results-share<P>.json
                       records the share and the SM count that process saw
        CUDA kernels are compiled here with nvcc (fatbin/, found by the loader there through
        TVM_MULAYER_FATBIN_DIR), and artifacts, kernels and fatbins travel as one
        compressed payload.tar.gz (CUDA source compresses ~8x).
  run   (there) load each artifact with `tvm_mulayer.load` (CUDA kernels compiled by nvcc on
        load), time it, compare where references exist, run peers and the profiler; write
        results.json (and profile.csv), or one results-share<P>.json per GPU share.

    python scripts/gpu_host_run.py pack -o .carry/host --models squeezenet1_1 --splits cpu gpu 0.5
    sh .carry/host/run.sh $OUT      # on the host, from the repository root
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

RUNTIME_EXCLUDE = ("lib/libtvm_compiler.so", "3rdparty", "src", "web", "include")


def _runtime_tarball(out: Path) -> None:
    import tvm

    root = Path(tvm.__file__).parent

    def keep(info: tarfile.TarInfo):
        rel = info.name.split("/", 1)[1] if "/" in info.name else ""
        if "__pycache__" in info.name or any(rel == e or rel.startswith(e + "/") for e in RUNTIME_EXCLUDE):
            return None
        return info

    with tarfile.open(out, "w:gz") as tar:
        tar.add(root, arcname="tvm", filter=keep)


def _ffi_wheels(out_dir: Path, pythons: list[str]) -> str:
    """Download the tvm-ffi wheel (it has a compiled extension) for each Python the host may
    have; return the requirement run.sh installs, letting pip pick the host's wheel."""
    import tvm_ffi

    requirement = f"apache-tvm-ffi=={tvm_ffi.__version__}"
    for python in pythons:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", python, "--implementation", "cp",
                        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_24_x86_64",
                        "-d", str(out_dir), requirement], check=True)
    return requirement


def runtime_setup(out: Path, here: str, pythons: list[str]) -> str:
    """Put the TVM runtime and the tvm-ffi wheels (for `pythons`) into `out`, which run.sh
    sees as `here`; return run.sh's lines that install them into /tmp/site and point Python
    at them (the runtime only: TVM_USE_RUNTIME_LIB)."""
    _runtime_tarball(out / "tvm_runtime.tar.gz")
    requirement = _ffi_wheels(out, pythons)
    return (f"python3 -m pip install -q --upgrade --no-index --no-deps --target /tmp/site --find-links {here} "
            f"{requirement}\n"
            f"tar xzf {here}/tvm_runtime.tar.gz -C /tmp/site\n"
            "export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1\n")


def _cuda_sources(module) -> list[str]:
    """The CUDA source of every CUDA module imported by `module` (a compiled executable)."""
    found = [m.inspect_source() for m in module.imports if m.kind == "cuda"]
    return found + [src for m in module.imports for src in _cuda_sources(m)]


def _compile_fatbins(sources: list[str], out_dir: Path, arch: str) -> None:
    """nvcc each source for `arch` into out_dir, named as the loader looks them up."""
    from concurrent.futures import ThreadPoolExecutor

    from tvm_mulayer.runtime.devices import fatbin_name, nvcc_fatbin

    out_dir.mkdir(parents=True, exist_ok=True)

    def build(code):
        (out_dir / fatbin_name(code, arch)).write_bytes(nvcc_fatbin(code, arch))

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(build, dict.fromkeys(sources)))


def _gpu_share(text: str) -> int:
    share = int(text)
    if not 1 <= share <= 100:
        raise argparse.ArgumentTypeError(f"a GPU share is an MPS active-thread percentage in 1..100, not {text}")
    return share


def _split_arg(text: str):
    return text if text in ("cpu", "gpu", "auto") or text.endswith(".json") else float(text)


def cmd_pack(args) -> int:
    import numpy as np

    import tvm_mulayer
    from tvm_mulayer.base import zoo

    out = Path(args.output)
    if out.exists():
        shutil.rmtree(out)
    (out / "artifacts").mkdir(parents=True)
    runs, cuda_sources = [], []
    for name in args.models:
        kwargs = zoo.small(name) if args.small else {}
        model = zoo.build(name, **kwargs)
        tag = f"{name}{'-small' if args.small else ''}"
        if args.check:
            import onnxruntime as ort

            size = kwargs.get("image_size", 224)
            x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype("float32")
            np.savez(out / f"{tag}.npz", input=x, reference=ort.InferenceSession(model.SerializeToString()).run(
                None, {"input": x})[0])
        for precision in args.precision:
            # `auto` once per --auto-dims entry (labelled auto-channel, auto-channel+height, ...)
            splits = [(split, dims) for split in args.splits
                      for dims in (args.auto_dims if split == "auto" else [None])]
            for split, dims in splits:
                executable = tvm_mulayer.compile(model, cpu=args.cpu, gpu=args.gpu, split=split,
                                                 predictor=args.predictor, precision=precision,
                                                 **({"dims": dims} if dims else {}))
                label = Path(split).stem if str(split).endswith(".json") else split
                if dims:
                    label, split = f"auto-{'+'.join(dims)}", f"auto-{'+'.join(dims)}"
                directory = out / "artifacts" / f"{tag}-{label}-{precision.replace(',', '+')}"
                executable.export(directory)
                cuda_sources += _cuda_sources(executable.module.mod)
                if not args.check:
                    (directory / "weights.npz").unlink()
                runs.append({"model": tag, "zoo": [name, kwargs], "split": split, "precision": precision,
                             "artifact": str(directory.relative_to(out)),
                             "reference": f"{tag}.npz" if args.check else None})
                print(f"packed {directory}: {executable.plan.description}", flush=True)
    if args.profile:
        from tvm_mulayer.base.processors import resolve_processors
        from tvm_mulayer.planning.profiler import export_kernels, profile_precisions, sampled_configs, zoo_configs
        from tvm_mulayer.base.records import configs_from_file

        cpu, gpu = resolve_processors(args.cpu, args.gpu)
        if args.profile_configs:
            configs = configs_from_file(args.profile_configs)
        else:
            configs = zoo_configs(args.profile_models, fractions=tuple(args.profile_fractions),
                                  channel_multiple=max(cpu.channel_multiple, gpu.channel_multiple),
                                  rows=args.profile_rows)
            configs += sampled_configs(configs, args.profile_sampled)
        modules = export_kernels(out / "kernels", cpu, gpu, configs, profile_precisions(args.profile_precision))
        cuda_sources += [src for module in modules.values() for src in _cuda_sources(module.mod)]
        print(f"exported kernels of {len(configs)} layer configurations", flush=True)
    if cuda_sources:
        _compile_fatbins(cuda_sources, out / "fatbin", args.gpu.partition(":")[2] or "sm_90")
    with tarfile.open(out / "payload.tar.gz", "w:gz") as tar:
        for part in [out / "artifacts", out / "kernels", out / "fatbin", *out.glob("*.npz")]:
            if part.exists():
                tar.add(part, arcname=part.name)
                shutil.rmtree(part) if part.is_dir() else part.unlink()
    (out / "runs.json").write_text(json.dumps({"repeat": args.repeat, "rounds": args.rounds, "peers": args.peers,
                                               "runs": runs, "profile": bool(args.profile),
                                               "profile_passes": args.profile_passes, "trace": args.trace,
                                               "gpu_shares": args.gpu_shares}, indent=1))
    here = out.as_posix()
    (out / "run.sh").write_text(
        "set -e\n"
        "(lscpu | grep -E 'Model name|^CPU\\(s\\)'; nvidia-smi -L; python3 --version) || true\n"
        + runtime_setup(out, here, args.python) +
        f"mkdir -p /tmp/payload && tar xzf {here}/payload.tar.gz -C /tmp/payload && cp {here}/runs.json /tmp/payload\n"
        "export TVM_MULAYER_FATBIN_DIR=/tmp/payload/fatbin\n"
        "python3 scripts/gpu_host_run.py run /tmp/payload --results \"$1\"\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total / 2**20:.1f} MiB")
    return 0


def _random_weights(artifact: Path) -> list:
    import numpy as np

    rng = np.random.default_rng(0)
    manifest = json.loads((artifact / "manifest.json").read_text())
    return [rng.integers(-127, 128, shape).astype(dtype) if np.dtype(dtype).kind == "i"
            else (rng.standard_normal(shape) * 0.05).astype(dtype) for shape, dtype in manifest["weight_shapes"]]


def _peers(name: str, kwargs: dict, repeat: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    from tvm_mulayer.base import zoo

    model = zoo.build(name, **kwargs)
    size = kwargs.get("image_size", 224)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype("float32")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 16
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input": x})[0]
    import time

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - start)
    row = {"onnxruntime_cpu_ms": float(np.median(times) * 1e3)}
    try:
        from torch_peer import time_torch

        torch_result = time_torch(model, x, repeat)
        out = torch_result.pop("output")
        row.update({f"torch_fp16_{k}": v for k, v in torch_result.items()})
        row["torch_fp16_rel_error"] = float(np.max(np.abs(out - reference)) / np.max(np.abs(reference)))
    except Exception as err:  # report, keep the other numbers
        row["torch_error"] = f"{type(err).__name__}: {err}"
    return row


@contextlib.contextmanager
def mps_daemon():
    """The CUDA MPS control daemon, its pipe and log directories under /tmp, for the block;
    quit on the way out, however the block ends (an MPS daemon left running keeps every
    later CUDA process of the machine on MPS)."""
    env = {"CUDA_MPS_PIPE_DIRECTORY": "/tmp/mps-pipe", "CUDA_MPS_LOG_DIRECTORY": "/tmp/mps-log"}
    for path in env.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    subprocess.run(["nvidia-cuda-mps-control", "-d"], check=True)
    try:
        yield
    finally:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, check=False)


def cmd_run(args) -> int:
    spec = json.loads((Path(args.directory) / "runs.json").read_text())
    shares = spec.get("gpu_shares") or []
    if args.share is not None or not shares:
        return run_share(args, spec)
    with mps_daemon():
        for share in shares:  # each in its own process: the share applies from CUDA's start
            command = [sys.executable, __file__, "run", args.directory, "--share", str(share)]
            if args.results:
                command += ["--results", args.results]
            env = {**os.environ, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(share)}
            subprocess.run(command, env=env, check=True)
    return 0


def run_share(args, spec) -> int:
    import numpy as np

    import tvm
    import tvm_mulayer
    from tvm_mulayer.runtime.devices import enable_cuda_runtime

    root = Path(args.directory)
    results = {"runs": [], "peers": {}, "gpu_share": args.share}
    out_dir = Path(args.results or root)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "results.json" if args.share is None else f"results-share{args.share}.json"

    def save():  # after each timing: a run cut off at its time limit keeps what it measured
        (out_dir / name).write_text(json.dumps(results, indent=1))
    if spec.get("peers"):
        # Each peer in a fresh process: TVM's and onnxruntime's spinning thread pools in one
        # process slowed onnxruntime 2-6x and PyTorch's launches 2x on the host.
        models = {r["zoo"][0]: r["zoo"][1] for r in spec["runs"]}
        models.update({name: {} for name in spec.get("peer_models", [])})
        for name, kwargs in models.items():
            done = subprocess.run([sys.executable, __file__, "peer", name, json.dumps(kwargs), str(spec["repeat"])],
                                  capture_output=True, text=True, check=True)
            results["peers"][name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(name, json.dumps(results["peers"][name]), flush=True)
    loaded = []
    enable_cuda_runtime()
    results["sm_count"] = int(tvm.cuda(0).multi_processor_count) if tvm.cuda(0).exist else None
    print(f"GPU share {args.share}: {results['sm_count']} SMs", flush=True)
    for run in spec["runs"]:
        artifact = root / run["artifact"]
        if run["reference"]:
            data = np.load(root / run["reference"])
            executable, x = tvm_mulayer.load(artifact), data["input"]
        else:
            executable, data = tvm_mulayer.load(artifact, weights=_random_weights(artifact)), None
            x = None
        row = {k: run.get(k) for k in ("model", "split", "precision")}
        if data is not None:
            output = next(iter(executable.run(x).values()))
            ref = data["reference"].astype(np.float64)
            row["rel_error"] = float(np.max(np.abs(output - ref)) / np.max(np.abs(ref)))
        row.update({"plan": executable.plan.description,
                    "gpu_channels": {lp.name: lp.gpu_channels for lp in executable.plan.layers},
                    "dims": {lp.name: lp.dim for lp in executable.plan.layers if lp.dim != "channel"},
                    "crossing_bytes": executable.crossing,
                    "round_medians_ms": []})
        loaded.append((row, executable, x))
    # every run timed once per round, rounds alternating over all runs: two runs compare in
    # their fastest rounds, not in whichever host moment each happened to be timed in
    for _ in range(spec.get("rounds", 1)):
        for row, executable, x in loaded:
            timing = executable.benchmark(x, repeat=spec["repeat"])
            if not row["round_medians_ms"]:
                results["runs"].append(row)  # once timed: results.json holds only timed runs
            row["round_medians_ms"].append(timing["median"] * 1e3)
            row.update({"median_ms": min(row["round_medians_ms"]),
                        "min_ms": min(row.get("min_ms", float("inf")), timing["min"] * 1e3)})
            print(json.dumps({k: row[k] for k in ("model", "split", "precision", "median_ms")}), flush=True)
            save()
    if spec.get("trace"):
        for row, executable, x in loaded:
            row["trace"] = _kernel_times(executable, x, spec["trace"])
        save()
    if spec.get("profile"):  # last: the profiler's second thread must not share the runs' process state
        from tvm_mulayer.planning.profiler import measure_exported

        profile = "profile.csv" if args.share is None else f"profile-share{args.share}.csv"
        measure_exported(root / "kernels", out_dir / profile, quiet=True,
                         passes=spec.get("profile_passes", 1))
        print("profile measured", flush=True)
    return 0


def _kernel_times(executable, x, runs: int) -> list:
    """Per VM call symbol, in order of first call: lane, calls per inference and the median
    over `runs` traced inferences of its total milliseconds (`Executable.trace`: each GPU
    kernel synchronised, so this is where the time goes, not the overlapped latency)."""
    import statistics

    lanes, calls, ms = {}, {}, {}  # dicts keep the order of first call
    for run in range(runs):
        for call in executable.trace(x):
            symbol = call["symbol"]
            lanes[symbol] = call["lane"]
            calls[symbol] = calls.get(symbol, 0) + (run == 0)
            per_run = ms.setdefault(symbol, [0.0] * runs)
            per_run[run] += (call["end"] - call["start"]) * 1e3
    return [{"symbol": symbol, "lane": lanes[symbol], "calls": calls[symbol], "ms": statistics.median(ms[symbol])}
            for symbol in ms]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("-o", "--output", default=".carry/host")
    p.add_argument("--models", nargs="*", default=["squeezenet1_1"])
    p.add_argument("--splits", nargs="+", default=["cpu", "gpu", "0.5"], type=_split_arg)
    p.add_argument("--small", action="store_true", help="the small zoo variants")
    p.add_argument("--check", action="store_true", help="carry weights and references; compare outputs")
    p.add_argument("--peers", action="store_true", help="time onnxruntime CPU and PyTorch fp16 on the host")
    p.add_argument("--profile", action="store_true", help="also export and measure the profiler's kernels")
    p.add_argument("--profile-models", nargs="+", help="zoo models whose layers to profile (default all)")
    p.add_argument("--profile-fractions", nargs="+", type=float, default=[i / 8 for i in range(1, 9)],
                   help="split fractions whose parts to profile")
    p.add_argument("--profile-sampled", type=int, default=250, help="layer shapes sampled around the zoo's")
    p.add_argument("--profile-rows", action="store_true", help="also each conv's parts split by output rows")
    p.add_argument("--profile-configs", metavar="JSON",
                   help="profile the layers of these configuration keys (a JSON list, as a profile's config "
                        "column holds them; `mulayer profile --configs`) instead of the zoo's and sampled ones")
    p.add_argument("--profile-precision", nargs="+", default=["native", "fp32"], metavar="SPEC",
                   help="slice precisions to profile, as `mulayer profile --precision` takes them")
    p.add_argument("--profile-passes", type=int, default=1, metavar="N",
                   help="time every profiled kernel in N sweeps (as `mulayer profile --passes`)")
    p.add_argument("--predictor", help="predictor JSON for 'auto' splits")
    p.add_argument("--auto-dims", nargs="+", default=[("channel", "height")], metavar="DIMS",
                   type=lambda text: tuple(text.split(",")),
                   help="pack 'auto' once per entry, each with these split dims (e.g. channel channel,height)")
    p.add_argument("--precision", nargs="+", default=["native"],
                   help="slice precisions, each packed at every split (see `mulayer compile --precision`)")
    p.add_argument("--cpu", default="x86-avx512")
    p.add_argument("--gpu", default="cuda:sm_90")
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--rounds", type=int, default=1,
                   help="time every run once per round, rounds alternating over the runs; median_ms is the "
                        "fastest round's median")
    p.add_argument("--trace", type=int, default=0, metavar="N",
                   help="also time every kernel of each run (median of N traced inferences)")
    p.add_argument("--gpu-shares", nargs="+", type=_gpu_share, default=[], metavar="PERCENT",
                   help="run everything once per GPU share, each through CUDA MPS with "
                        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=PERCENT (1..100)")
    p.add_argument("--python", nargs="+", default=["3.10", "3.11", "3.12", "3.13"],
                   help="Python versions the host may have (a tvm-ffi wheel is carried for each)")
    p.set_defaults(func=cmd_pack)
    p = sub.add_parser("peer", help="(internal) time onnxruntime and PyTorch on one zoo model, print JSON")
    p.add_argument("name")
    p.add_argument("kwargs")
    p.add_argument("repeat", type=int)
    p.set_defaults(func=lambda a: print(json.dumps(_peers(a.name, json.loads(a.kwargs), a.repeat))) or 0)
    p = sub.add_parser("run")
    p.add_argument("directory")
    p.add_argument("--results", help="directory for results.json (and profile.csv); default: the run directory")
    p.add_argument("--share", type=int, help="(internal) the GPU share this process runs under MPS")
    p.set_defaults(func=cmd_run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
