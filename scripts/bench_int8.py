#!/usr/bin/env python3
"""CPU int8 slice vs CPU float32 slice of the same layers, per zoo layer and per model.

For every conv/dense layer of the chosen zoo models (found as tvm_mulayer.planning.profiler.zoo_configs
finds them, but every layer, repeated shapes included, so that the model sums are whole; cut
to the CPU part of a split giving the GPU ``--gpu-share``; 0 = the whole layer) two single-layer Relax
functions are built, lowered as the build lowers them (LegalizeOps, FuseOps/FuseTIR, our
schedules with the weight repacks prepacked at compile time) and timed on the VM:

  int8:    acc = conv2d/matmul(x uint8, w int8 constant, out_dtype=int32)
           y = relu(float32(acc + bias_i32) * scale)      (the quantized slice's epilogue)
  float32: y = relu(conv2d/matmul(x, w) + bias)

The uint8 input stands for the previous layer's output: in a network the quantize is fused
into the producing kernel. Timing: TVM's time_evaluator, the minimum over ``--repeat`` runs of
at least ``--min-ms`` each (this machine is shared, the minimum is the least disturbed), the
same thread count for both (``--threads``, TVM_NUM_THREADS and the target's num-cores).
Prints a markdown table: per layer int8 and fp32 times and the ratio int8/fp32, per model the
sums and their ratio, with the command, machine and date.

    python scripts/bench_int8.py --models squeezenet1_1,mobilenet_v1 --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("vgg16", "alexnet", "googlenet", "squeezenet1_1", "mobilenet_v1")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mcpu", default=None, help="LLVM mcpu (default: this host's)")
    parser.add_argument("--gpu-share", type=float, default=0.0,
                        help="the GPU's share of each layer's channels; the CPU slice is the rest")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--min-ms", type=float, default=20.0, help="minimum time of one repeat")
    parser.add_argument("--layers", type=int, default=0, help="only the first N layers per model (0: all)")
    return parser.parse_args(argv)


def layer_functions(layer, rng):
    """(int8 Relax module, fp32 Relax module, int8 input, fp32 input) for one layer."""
    from tvm import relax

    out_c = layer.channels
    dense = layer.op == "dense"
    bshape = (1, out_c) if dense else (1, out_c, 1, 1)
    w_f = (rng.standard_normal(layer.weight_shape) * 0.05).astype("float32")
    w_q = rng.integers(-128, 128, layer.weight_shape).astype("int8")
    bias_f = rng.standard_normal(bshape).astype("float32")
    bias_q = rng.integers(-3000, 3000, bshape).astype("int32")
    scale = (rng.random(bshape) * 1e-3).astype("float32")

    def op(x, w, out_dtype):
        if dense:
            return relax.op.matmul(x, w, out_dtype=out_dtype)
        return relax.op.nn.conv2d(x, w, strides=layer.strides, padding=layer.padding, dilation=layer.dilation,
                                  groups=layer.groups, out_dtype=out_dtype)

    def int8_body(x):
        acc = op(x, relax.const(w_q), "int32")
        return relax.op.nn.relu(relax.op.multiply(relax.op.astype(relax.op.add(acc, relax.const(bias_q)), "float32"),
                                                  relax.const(scale)))

    def fp32_body(x):
        return relax.op.nn.relu(relax.op.add(op(x, relax.const(w_f), "float32"), relax.const(bias_f)))

    x_q = rng.integers(0, 256, layer.input_shape).astype("uint8")
    x_f = rng.standard_normal(layer.input_shape).astype("float32")
    return single_op_module(int8_body, x_q), single_op_module(fp32_body, x_f), x_q, x_f


def single_op_module(body, example):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(example.shape, str(example.dtype)))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(body(x)))
        bb.emit_func_output(out)
    return bb.get()


def compile_layer(mod, target):
    """The build's lowering of one layer: fused kernels, our schedules, repacks prepacked."""
    import tvm
    from tvm import relax, tirx

    from tvm_mulayer import schedules
    from tvm_mulayer.passes import PrepackWeights

    mod = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                                    relax.transform.FuseOps(), relax.transform.FuseTIR()])(mod)
    for g_var, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc):
            mod[g_var] = func.with_attr("target", target)
    mod = tvm.transform.Sequential([schedules.ScheduleForTargets(prepacked_weights=True),
                                    relax.transform.SplitLayoutRewritePreproc(), PrepackWeights()])(mod)
    return relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())


def time_layer(vm, x, repeat, min_ms):
    import tvm

    arg = tvm.runtime.tensor(x)
    vm["main"](arg)
    timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat, min_repeat_ms=int(min_ms))
    return min(timer(arg).results)


def cpu_slices(model: str, gpu_share: float, image_size: int) -> list:
    """The CPU part of every splittable layer of `model`, split as the plan rounds it."""
    from tvm_mulayer.base import zoo
    from tvm_mulayer.compiler.frontend import import_onnx
    from tvm_mulayer.base.layers import find_layers
    from tvm_mulayer.base.plan import round_split

    mod, _ = import_onnx(zoo.build(model, image_size=image_size))
    slices = []
    for layer in find_layers(mod["main"]):
        if not layer.splittable:
            continue
        gpu_channels = round_split(layer, gpu_share, 1) if gpu_share > 0 else 0
        if layer.channels - gpu_channels > 0:
            slices.append(layer.part(layer.channels - gpu_channels))
    return slices


def describe(layer) -> str:
    if layer.op == "dense":
        return f"dense {layer.weight_shape[0]}->{layer.channels}"
    _, c, h, _ = layer.input_shape
    kh, kw = layer.weight_shape[2:]
    kind = "dw " if layer.groups > 1 and layer.groups == c else (f"g{layer.groups} " if layer.groups > 1 else "")
    return f"{kind}{kh}x{kw}/{layer.strides[0]} {c}->{layer.channels} @{h}"


def main(argv=None):
    args = parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, ROOT)
    import numpy as np
    import tvm
    from tvm.target import Target


    mcpu = args.mcpu or tvm.target.codegen.llvm_get_system_cpu()
    target = Target({"kind": "llvm", "mcpu": mcpu, "num-cores": args.threads})
    from tvm_mulayer.schedules.cpu.dot_intrin import dot_product_for

    dot = dot_product_for(target)
    print(f"# CPU int8 vs float32 slices: `python scripts/bench_int8.py {' '.join(sys.argv[1:] if argv is None else argv)}`")
    print(f"# {datetime.date.today()}, {platform.node()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs, mcpu {mcpu}, {args.threads} thread(s), TVM {tvm.__version__}, "
          f"int8 dot product: {dot.name if dot else 'none'}; min of {args.repeat} repeats x >= {args.min_ms:g} ms")
    print()
    print("| model | layer | int8 ms | fp32 ms | int8/fp32 |")
    print("|---|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    totals = []
    for model in args.models.split(","):
        configs = cpu_slices(model, args.gpu_share, args.image_size)
        if args.layers:
            configs = configs[:args.layers]
        sum_q = sum_f = 0.0
        for layer in configs:
            mod_q, mod_f, x_q, x_f = layer_functions(layer, rng)
            t_q = time_layer(compile_layer(mod_q, target), x_q, args.repeat, args.min_ms)
            t_f = time_layer(compile_layer(mod_f, target), x_f, args.repeat, args.min_ms)
            sum_q, sum_f = sum_q + t_q, sum_f + t_f
            print(f"| {model} | {describe(layer)} | {t_q * 1e3:.3f} | {t_f * 1e3:.3f} | {t_q / t_f:.2f} |", flush=True)
        totals.append((model, len(configs), sum_q, sum_f))
    print()
    print("| model | layers | int8 sum ms | fp32 sum ms | int8/fp32 |")
    print("|---|---:|---:|---:|---:|")
    for model, count, sum_q, sum_f in totals:
        print(f"| {model} | {count} | {sum_q * 1e3:.2f} | {sum_f * 1e3:.2f} | {sum_q / sum_f:.2f} |")


if __name__ == "__main__":
    main()
