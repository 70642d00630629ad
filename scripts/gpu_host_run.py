#!/usr/bin/env python3
"""Run tvm-mulayer artifacts on a GPU host that has only the TVM *runtime*.

Two halves, one file:

  pack  (here, with the compiler)  compile zoo models for a CPU+GPU pair at several splits,
        compute onnxruntime references, and put artifacts, references, the TVM runtime
        package (without libtvm_compiler.so) and the tvm-ffi wheel for the host's Python
        into one directory small enough to carry (the `device` tool carries 64 MiB).
  run   (there)  load each artifact with `tvm_mulayer.load` (CUDA kernels JIT-compiled by
        nvcc on load), check it against the reference, time it, write results.json.

    python scripts/gpu_host_run.py pack -o .carry --models squeezenet1_1 --splits 0 0.5 1
    # on the host, from the repository root:
    sh .carry/run.sh $OUT        # installs the runtime into /tmp/site, then `run`
"""

from __future__ import annotations

import argparse
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


def _ffi_wheel(out_dir: Path, python: str) -> None:
    import tvm_ffi

    version = tvm_ffi.__version__
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "--implementation", "cp",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_24_x86_64",
                    "-d", str(out_dir), f"apache-tvm-ffi=={version}"], check=True)


def cmd_pack(args) -> int:
    import numpy as np

    import tvm_mulayer
    from tvm_mulayer import zoo

    out = Path(args.output)
    if out.exists():
        shutil.rmtree(out)
    (out / "artifacts").mkdir(parents=True)
    runs = []
    for name in args.models:
        kwargs = zoo.small(name) if args.small else {}
        model = zoo.build(name, **kwargs)
        size = kwargs.get("image_size", 224)
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype("float32")
        import onnxruntime as ort

        reference = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
        tag = f"{name}{'-small' if args.small else ''}"
        np.savez(out / f"{tag}.npz", input=x, reference=reference)
        for split in args.splits:
            executable = tvm_mulayer.compile(model, cpu=args.cpu, gpu=args.gpu, split=split)
            directory = out / "artifacts" / f"{tag}-{split}"
            executable.export(directory)
            runs.append({"model": tag, "split": split, "artifact": str(directory.relative_to(out)),
                         "reference": f"{tag}.npz"})
            print(f"packed {directory}", flush=True)
    (out / "runs.json").write_text(json.dumps({"repeat": args.repeat, "runs": runs}, indent=1))
    _runtime_tarball(out / "tvm_runtime.tar.gz")
    _ffi_wheel(out, args.python)
    (out / "run.sh").write_text(
        "set -e\n"
        "python3 -m pip install -q --upgrade --no-index --no-deps --target /tmp/site " + out.as_posix() + "/apache_tvm_ffi-*.whl\n"
        "tar xzf " + out.as_posix() + "/tvm_runtime.tar.gz -C /tmp/site\n"
        "export PYTHONPATH=/tmp/site:$PWD TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1\n"
        "python3 scripts/gpu_host_run.py run " + out.as_posix() + " --results \"$1/results.json\"\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total / 2**20:.1f} MiB")
    return 0


def cmd_run(args) -> int:
    import numpy as np

    import tvm_mulayer

    root = Path(args.directory)
    spec = json.loads((root / "runs.json").read_text())
    results = []
    for run in spec["runs"]:
        data = np.load(root / run["reference"])
        executable = tvm_mulayer.load(root / run["artifact"])
        output = next(iter(executable.run(data["input"]).values()))
        ref = data["reference"].astype(np.float64)
        rel = float(np.max(np.abs(output - ref)) / np.max(np.abs(ref)))
        timing = executable.benchmark(data["input"], repeat=spec["repeat"])
        row = {**run, "device": executable.gpu.device_type, "rel_error": rel,
               "median_ms": timing["median"] * 1e3, "min_ms": timing["min"] * 1e3}
        results.append(row)
        print(f"{run['model']:22s} split {run['split']!s:5s} rel.err {rel:.2e}  median {row['median_ms']:.3f} ms", flush=True)
    if args.results:
        Path(args.results).write_text(json.dumps(results, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("-o", "--output", default=".carry")
    p.add_argument("--models", nargs="+", default=["squeezenet1_1"])
    p.add_argument("--splits", nargs="+", default=["0", "0.5", "1"], type=lambda s: float(s) if s[0].isdigit() else s)
    p.add_argument("--small", action="store_true")
    p.add_argument("--cpu", default="x86-avx512")
    p.add_argument("--gpu", default="cuda:sm_90")
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--python", default="3.12", help="the host's Python version (for the tvm-ffi wheel)")
    p.set_defaults(func=cmd_pack)
    p = sub.add_parser("run")
    p.add_argument("directory")
    p.add_argument("--results")
    p.set_defaults(func=cmd_run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
