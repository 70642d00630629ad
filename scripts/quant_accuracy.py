"""Accuracy of quantized plans: top-1 on the digits test split, agreement on the zoo.

    python scripts/quant_accuracy.py [--zoo-size small|full] [--inputs 8]

Digits (tests/data/digits, a CNN trained in-project): top-1 accuracy of float32
(onnxruntime and our fp32 plan), CPU-only int8, GPU-only fp16, global splits and a
per-layer plan, calibrated on the 64 committed training images. Zoo models (random
weights, so agreement rather than accuracy): each plan against float32 onnxruntime on
seeded inputs — mean/min cosine similarity, top-1 agreement, top-5 overlap — calibrated
on 16 other seeded inputs. The GPU is the emulated one (a second LLVM device computing
the same float16 arithmetic). Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import tvm_mulayer
from tvm_mulayer.base import zoo

DIGITS = Path(__file__).resolve().parent.parent / "tests" / "data" / "digits"
PLANS = {"fp32 (split 0.5)": (0.5, "fp32"), "CPU-only int8": ("cpu", "native"), "GPU-only fp16": ("gpu", "native"),
         "split 0.25": (0.25, "native"), "split 0.5": (0.5, "native"), "split 0.75": (0.75, "native")}


def onnxruntime_outputs(model, feeds: list) -> list:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, feed)[0] for feed in feeds]


def digits_table() -> list:
    model = onnx.load(str(DIGITS / "digits_cnn.onnx"))
    with np.load(DIGITS / "digits_test.npz") as data:
        x, y = data["x"], data["y"]
    feeds = [{"image": xi[None]} for xi in x]
    rows = [("onnxruntime fp32", 100.0 * np.mean([o.argmax() == t for o, t in zip(onnxruntime_outputs(model, feeds), y)]))]
    plans = dict(PLANS, **{"per layer (conv1 cpu, conv2 0.75, fc1 gpu, fc2 0.5)":
                           ({"layers": {"conv1": 0.0, "conv2": 0.75, "fc1": 1.0, "fc2": 0.5}}, "native")})
    for label, (split, precision) in plans.items():
        exe = tvm_mulayer.compile(model, gpu="emulated", split=split, precision=precision,
                                  calib=DIGITS / "digits_calib.npz")
        rows.append((label, 100.0 * np.mean([exe.run(f)["logits"].argmax() == t for f, t in zip(feeds, y)])))
    lines = [f"Digits test split: {len(y)} images, calibrated on 64 training images.", "",
             "| plan | top-1 % | vs fp32 (points) |", "|---|---|---|"]
    reference = rows[0][1]
    lines += [f"| {label} | {acc:.2f} | {acc - reference:+.2f} |" for label, acc in rows]
    return lines


def zoo_table(size: str, count: int) -> list:
    lines = ["| model | plan | cosine mean | cosine min | top-1 agree | top-5 overlap |", "|---|---|---|---|---|---|"]
    for name in zoo.NAMES:
        model = zoo.build(name, **(zoo.small(name) if size == "small" else {}))
        shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
        feeds = [{"input": np.random.default_rng(1000 + i).standard_normal(shape).astype(np.float32)}
                 for i in range(count)]
        expected = onnxruntime_outputs(model, feeds)
        with tempfile.TemporaryDirectory() as tmp:
            calib = Path(tmp) / "calib.npz"
            np.savez(calib, input=np.random.default_rng(7).standard_normal((16, *shape[1:])).astype(np.float32))
            for label, (split, precision) in PLANS.items():
                if precision == "fp32":
                    continue
                exe = tvm_mulayer.compile(model, gpu="emulated", split=split, precision=precision, calib=calib)
                got = [exe.run(f)["logits"].ravel() for f in feeds]
                cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
                       for a, b in zip((g.astype(np.float64) for g in got), (e.ravel().astype(np.float64) for e in expected))]
                top1 = np.mean([g.argmax() == e.argmax() for g, e in zip(got, expected)])
                top5 = np.mean([len(set(np.argsort(g)[-5:]) & set(np.argsort(e.ravel())[-5:])) for g, e in zip(got, expected)])
                lines.append(f"| {name} | {label} | {np.mean(cos):.5f} | {min(cos):.5f} | {top1:.2f} | {top5:.1f}/5 |")
    return lines


def _cpu_name() -> str:
    """The CPU's marketing name (platform.processor() is empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo-size", choices=("small", "full"), default="small")
    parser.add_argument("--inputs", type=int, default=8, help="zoo inputs compared per plan")
    args = parser.parse_args()
    print(f"`python scripts/quant_accuracy.py --zoo-size {args.zoo_size} --inputs {args.inputs}` — "
          f"{_cpu_name()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n")
    print("\n".join(digits_table()))
    print(f"\nZoo models ({args.zoo_size} variants, random weights) against float32 onnxruntime, "
          f"{args.inputs} seeded inputs, calibrated on 16 others:\n")
    print("\n".join(zoo_table(args.zoo_size, args.inputs)))


if __name__ == "__main__":
    main()
