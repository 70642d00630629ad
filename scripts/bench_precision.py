"""Whole-model CPU-only latency by precision: our int8 and float32 plans vs onnxruntime's.

    python scripts/bench_precision.py [--models squeezenet1_1,...] [--threads N] [--rounds 3] [--small]
                                      [--mcpu haswell]

For each zoo model (224x224 unless --small): the CPU-only plan compiled with
`--precision fp32` and with `--precision native` (int8 slices; VNNI where the CPU has it),
onnxruntime float32, and onnxruntime int8 (QDQ from `quantize_static`: uint8 activations,
per-channel int8 weights — the same scheme as ours), both calibrated on the same 8 seeded
inputs. `--mcpu` compiles ours for that LLVM CPU instead of this one (haswell: AVX2 + FMA
code, 16 ymm registers, no VNNI — timed on this CPU, so its caches and clocks, not a
Haswell's). All run on this machine with the same thread count; rounds alternate between the
four and the best median of each is kept, so a busy machine hurts all alike. Prints a
Markdown table of latencies and ratios for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from tvm_mulayer.base import zoo


def _median_latency(run, repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ort_session(model_path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def _ort_int8(model_path: Path, samples: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)

    class Samples(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": s[None]} for s in samples])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(model_path), str(out), Samples(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def bench_model(name: str, small: bool, threads: int, rounds: int, repeat: int, cpu="host") -> dict:
    import tvm_mulayer

    model = zoo.build(name, **(zoo.small(name) if small else {}))
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    samples = np.random.default_rng(7).standard_normal((8, *shape[1:])).astype(np.float32)
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        onnx.save(model, str(path))
        np.savez(Path(tmp) / "calib.npz", input=samples)
        ours = {precision: tvm_mulayer.compile(path, cpu=cpu, gpu="emulated", split="cpu", precision=precision,
                                               calib=Path(tmp) / "calib.npz")
                for precision in ("fp32", "native")}
        ort_fp32 = _ort_session(path, threads)
        ort_int8 = _ort_session(_ort_int8(path, samples, Path(tmp) / "int8.onnx"), threads)
        runs = {"ours fp32": lambda: ours["fp32"].run(x), "ours int8": lambda: ours["native"].run(x),
                "ort fp32": lambda: ort_fp32.run(None, {"input": x}),
                "ort int8": lambda: ort_int8.run(None, {"input": x})}
        best = {key: float("inf") for key in runs}
        for _ in range(rounds):
            for key, run in runs.items():
                best[key] = min(best[key], _median_latency(run, repeat))
    return best


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.NAMES))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--small", action="store_true", help="the reduced zoo variants")
    parser.add_argument("--mcpu", help="compile ours for this LLVM CPU (default: this host's)")
    args = parser.parse_args()
    cpu = {"kind": "llvm", "mcpu": args.mcpu, "num-cores": args.threads} if args.mcpu else "host"
    # TVM's pool and onnxruntime get the same number of threads
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    print(f"`python scripts/bench_precision.py --models {args.models} --threads {args.threads} --rounds "
          f"{args.rounds}{' --small' if args.small else ''}{f' --mcpu {args.mcpu}' if args.mcpu else ''}` — "
          f"{_cpu_name()} ({platform.machine()}), {os.cpu_count()} logical CPUs, ours compiled for "
          f"{args.mcpu or 'this CPU'}, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| model | ours fp32 ms | ours int8 ms | ort fp32 ms | ort int8 ms | ours int8 / ours fp32 | "
          "ours int8 / ort fp32 | ours int8 / ort int8 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        t = bench_model(name, args.small, args.threads, args.rounds, args.repeat, cpu)
        ms = {k: v * 1e3 for k, v in t.items()}
        print(f"| {name} | {ms['ours fp32']:.2f} | {ms['ours int8']:.2f} | {ms['ort fp32']:.2f} | {ms['ort int8']:.2f} | "
              f"{t['ours int8'] / t['ours fp32']:.2f} | {t['ours int8'] / t['ort fp32']:.2f} | "
              f"{t['ours int8'] / t['ort int8']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
