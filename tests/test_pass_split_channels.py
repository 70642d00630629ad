"""SplitChannels (passes/split_channels.py), Before/Expected as in TVM's relax/transform
tests: a two-layer module (3x3 conv with a bias, ReLU, 1x1 conv) split per a plan onto a CPU
vdevice and an emulated GPU (the same LLVM target, device id 1), compared with
`tvm.ir.assert_structural_equal`. Weights are parameters of the TVMScript functions, bound
as constants (`relax.transform.BindParams`), as the ONNX importer leaves them; the Expected
modules bind the slices the plan gives each side.

These pin the channel split's output: the GPU's part of a layer is emitted before the
CPU's, a conv's bias is folded into each slice, a per-channel op runs part by part where
its parts are, a layer that reads all channels gathers the other side's part (copy, then
concat), the result is gathered on the CPU, and a compact slice's input is converted on
the side that sends it.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_mulayer.base.layers import find_layers
from tvm_mulayer.base.plan import make_plan
from tvm_mulayer.base.quantization import input_form, quantize_weights
from tvm_mulayer.passes import SplitChannels

LLVM = tvm.target.Target({"kind": "llvm"})
# The vdevices SplitChannels declares for a CPU and an emulated GPU, and names TVMScript reads
# in annotations (pyflakes would take string literals there for forward references)
CPU, GPU = "llvm:0", "llvm:1"
VDEVICES = {"vdevice": [I.vdevice({"kind": "llvm"}, 0, "global"), I.vdevice({"kind": "llvm"}, 1, "global")]}
F32, F16, I8, I32, U8 = "float32", "float16", "int8", "int32", "uint8"
RNG = np.random.default_rng(0)
W0 = RNG.standard_normal((8, 3, 3, 3)).astype("float32")
B0 = RNG.standard_normal((1, 8, 1, 1)).astype("float32")
W1 = RNG.standard_normal((4, 8, 1, 1)).astype("float32")


@I.ir_module
class TwoLayers:
    @R.function
    def main(x: R.Tensor((1, 3, 6, 6), F32), w0: R.Tensor((8, 3, 3, 3), F32),
             b0: R.Tensor((1, 8, 1, 1), F32), w1: R.Tensor((4, 8, 1, 1), F32)) -> R.Tensor((1, 4, 6, 6), F32):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            c0 = R.nn.conv2d(x, w0, padding=[1, 1, 1, 1])
            a0 = R.add(c0, b0)
            r0 = R.nn.relu(a0)
            c1 = R.nn.conv2d(r0, w1)
            R.output(c1)
        return c1


def bound(mod: tvm.IRModule, **weights) -> tvm.IRModule:
    """`mod` with `main`'s weight parameters bound to these arrays (constants)."""
    return relax.transform.BindParams("main", weights)(mod)


def split(gpu_channels: dict, precisions: dict | None = None) -> tvm.IRModule:
    """TwoLayers split with each layer's GPU part `gpu_channels[name]` channels, and for the
    layers in `precisions`, (cpu precision, gpu precision, input range)."""
    before = bound(TwoLayers, w0=W0, b0=B0, w1=W1)
    layers = find_layers(before["main"])
    plan = make_plan(layers, {"layers": {name: {"gpu_channels": k} for name, k in gpu_channels.items()}}, 1)
    for layer_plan in plan.layers:
        if layer_plan.name in (precisions or {}):
            layer_plan.cpu_precision, layer_plan.gpu_precision, layer_plan.input_range = precisions[layer_plan.name]
    return SplitChannels(plan, LLVM, LLVM)(before)


def test_a_split_layer_runs_each_part_where_the_plan_puts_it():
    """Both layers half on each side: the bias add folds into both slices of conv 0, ReLU
    runs part by part, each side of conv 1 gathers the other side's four channels, and the
    output's parts are gathered on the CPU."""

    @I.ir_module
    class Expected:
        I.module_global_infos(VDEVICES)

        @R.function
        def main(x: R.Tensor((1, 3, 6, 6), F32, CPU),
                 w0_gpu: R.Tensor((4, 3, 3, 3), F32), b0_gpu: R.Tensor((1, 4, 1, 1), F32),
                 w0_cpu: R.Tensor((4, 3, 3, 3), F32), b0_cpu: R.Tensor((1, 4, 1, 1), F32),
                 w1_gpu: R.Tensor((2, 8, 1, 1), F32), w1_cpu: R.Tensor((2, 8, 1, 1), F32),
                 ) -> R.Tensor((1, 4, 6, 6), F32, CPU):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                x_gpu = R.to_vdevice(x, GPU)
                c0_gpu = R.nn.conv2d(x_gpu, w0_gpu, padding=[1, 1, 1, 1])
                a0_gpu = R.add(c0_gpu, b0_gpu)
                c0_cpu = R.nn.conv2d(x, w0_cpu, padding=[1, 1, 1, 1])
                a0_cpu = R.add(c0_cpu, b0_cpu)
                r0_gpu = R.nn.relu(a0_gpu)
                r0_cpu = R.nn.relu(a0_cpu)
                r0_cpu_to_gpu = R.to_vdevice(r0_cpu, GPU)
                r0_on_gpu = R.concat((r0_gpu, r0_cpu_to_gpu), axis=1)
                c1_gpu = R.nn.conv2d(r0_on_gpu, w1_gpu)
                r0_gpu_to_cpu = R.to_vdevice(r0_gpu, CPU)
                r0_on_cpu = R.concat((r0_gpu_to_cpu, r0_cpu), axis=1)
                c1_cpu = R.nn.conv2d(r0_on_cpu, w1_cpu)
                c1_gpu_to_cpu = R.to_vdevice(c1_gpu, CPU)
                c1 = R.concat((c1_gpu_to_cpu, c1_cpu), axis=1)
                result = c1
                R.output(result)
            return result

    expected = bound(Expected, w0_gpu=W0[:4], b0_gpu=B0[:, :4], w0_cpu=W0[4:], b0_cpu=B0[:, 4:],
                     w1_gpu=W1[:2], w1_cpu=W1[2:])
    tvm.ir.assert_structural_equal(split({"conv2d_0": 4, "conv2d_1": 2}), expected)


def test_whole_placements_copy_only_where_the_device_changes():
    """Conv 0 (with its bias and ReLU) wholly on the GPU, conv 1 on the CPU: the input goes
    to the GPU once and conv 0's output comes back once."""

    @I.ir_module
    class Expected:
        I.module_global_infos(VDEVICES)

        @R.function
        def main(x: R.Tensor((1, 3, 6, 6), F32, CPU), w0: R.Tensor((8, 3, 3, 3), F32),
                 b0: R.Tensor((1, 8, 1, 1), F32), w1: R.Tensor((4, 8, 1, 1), F32),
                 ) -> R.Tensor((1, 4, 6, 6), F32, CPU):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                x_gpu = R.to_vdevice(x, GPU)
                c0 = R.nn.conv2d(x_gpu, w0, padding=[1, 1, 1, 1])
                a0 = R.add(c0, b0)
                r0 = R.nn.relu(a0)
                r0_to_cpu = R.to_vdevice(r0, CPU)
                c1 = R.nn.conv2d(r0_to_cpu, w1)
                result = c1
                R.output(result)
            return result

    tvm.ir.assert_structural_equal(split({"conv2d_0": 8, "conv2d_1": 0}), bound(Expected, w0=W0, b0=B0, w1=W1))


def test_compact_slices_read_their_input_converted_by_the_sender():
    """Conv 0 split, its GPU slice in float16 and its CPU slice in int8 (input range
    [-1, 1]: uint8 with zero point 128, so the zero padding becomes an explicit pad with
    128); conv 1 wholly on the GPU in float16. Each side converts what it sends to the form
    the receiving slice reads before the copy: x to float16 on the CPU; conv 0's CPU part
    to float16 on the CPU. The int8 slice's bias and zero point fold into one int32 offset,
    and its output is dequantized with one scale per channel."""
    form = input_form("int8", [-1.0, 1.0])
    qweight, wscale = quantize_weights(W0[4:], 0)
    scale = form.scale * wscale.astype(np.float64)
    offset = -form.zero_point * qweight.astype(np.int64).sum(axis=(1, 2, 3)) + np.round(B0[0, 4:, 0, 0] / scale)
    in_scale = np.float32(form.scale)
    assert form.zero_point == 128

    @I.ir_module
    class Expected:
        I.module_global_infos(VDEVICES)

        @R.function
        def main(x: R.Tensor((1, 3, 6, 6), F32, CPU),
                 w0_gpu: R.Tensor((4, 3, 3, 3), F16), b0_gpu: R.Tensor((1, 4, 1, 1), F32),
                 w0_cpu: R.Tensor((4, 3, 3, 3), I8), offset0_cpu: R.Tensor((1, 4, 1, 1), I32),
                 scale0_cpu: R.Tensor((1, 4, 1, 1), F32), w1: R.Tensor((4, 8, 1, 1), F16),
                 ) -> R.Tensor((1, 4, 6, 6), F32, CPU):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                x_f16 = R.astype(x, F16)
                x_f16_gpu = R.to_vdevice(x_f16, GPU)
                c0_gpu = R.nn.conv2d(x_f16_gpu, w0_gpu, padding=[1, 1, 1, 1], out_dtype=F32)
                a0_gpu = R.add(c0_gpu, b0_gpu)
                x_scaled = R.divide(x, R.const(in_scale, F32))
                x_rounded = R.round(x_scaled)
                x_shifted = R.add(x_rounded, R.const(128.0, F32))
                x_clipped = R.clip(x_shifted, 0, 255)
                x_u8 = R.astype(x_clipped, U8)
                x_padded = R.nn.pad(x_u8, pad_width=[0, 0, 0, 0, 1, 1, 1, 1], pad_value=128.0)
                x_padded_cpu = R.match_cast(x_padded, R.Tensor((1, 3, 8, 8), U8, CPU))
                c0_cpu = R.nn.conv2d(x_padded_cpu, w0_cpu, out_dtype=I32)
                a0_cpu = R.add(c0_cpu, offset0_cpu)
                c0_cpu_f32 = R.astype(a0_cpu, F32)
                d0_cpu = R.multiply(c0_cpu_f32, scale0_cpu)
                r0_gpu = R.nn.relu(a0_gpu)
                r0_cpu = R.nn.relu(d0_cpu)
                r0_gpu_f16 = R.astype(r0_gpu, F16)
                r0_cpu_f16 = R.astype(r0_cpu, F16)
                r0_cpu_to_gpu = R.to_vdevice(r0_cpu_f16, GPU)
                r0_on_gpu = R.concat((r0_gpu_f16, r0_cpu_to_gpu), axis=1)
                c1 = R.nn.conv2d(r0_on_gpu, w1, out_dtype=F32)
                c1_to_cpu = R.to_vdevice(c1, CPU)
                result = c1_to_cpu
                R.output(result)
            return result

    expected = bound(Expected, w0_gpu=W0[:4].astype("float16"), b0_gpu=B0[:, :4], w0_cpu=qweight,
                     offset0_cpu=offset.astype("int32").reshape(1, 4, 1, 1),
                     scale0_cpu=scale.astype("float32").reshape(1, 4, 1, 1), w1=W1.astype("float16"))
    actual = split({"conv2d_0": 4, "conv2d_1": 4}, {"conv2d_0": ("int8", "fp16", [-1.0, 1.0]),
                                                   "conv2d_1": ("int8", "fp16", [0.0, 4.0])})
    tvm.ir.assert_structural_equal(actual, expected)


def test_a_channel_concat_relabels_the_parts_instead_of_moving_them():
    """Two split 1x1 convs of one input concatenated (a Fire or Inception module), then
    ReLU: the concat only lines the four parts up, ReLU runs on each where it is, and data
    moves only for the output. The input goes to the GPU once for both convs."""
    wa, wb = RNG.standard_normal((2, 4, 3, 1, 1)).astype("float32")

    @I.ir_module
    class Branches:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), F32), wa: R.Tensor((4, 3, 1, 1), F32),
                 wb: R.Tensor((4, 3, 1, 1), F32)) -> R.Tensor((1, 8, 4, 4), F32):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                ya = R.nn.conv2d(x, wa)
                yb = R.nn.conv2d(x, wb)
                y = R.concat((ya, yb), axis=1)
                r = R.nn.relu(y)
                R.output(r)
            return r

    @I.ir_module
    class Expected:
        I.module_global_infos(VDEVICES)

        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), F32, CPU),
                 wa_gpu: R.Tensor((2, 3, 1, 1), F32), wa_cpu: R.Tensor((2, 3, 1, 1), F32),
                 wb_gpu: R.Tensor((2, 3, 1, 1), F32), wb_cpu: R.Tensor((2, 3, 1, 1), F32),
                 ) -> R.Tensor((1, 8, 4, 4), F32, CPU):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                x_gpu = R.to_vdevice(x, GPU)
                ya_gpu = R.nn.conv2d(x_gpu, wa_gpu)
                ya_cpu = R.nn.conv2d(x, wa_cpu)
                yb_gpu = R.nn.conv2d(x_gpu, wb_gpu)
                yb_cpu = R.nn.conv2d(x, wb_cpu)
                ra_gpu = R.nn.relu(ya_gpu)
                ra_cpu = R.nn.relu(ya_cpu)
                rb_gpu = R.nn.relu(yb_gpu)
                rb_cpu = R.nn.relu(yb_cpu)
                ra_gpu_to_cpu = R.to_vdevice(ra_gpu, CPU)
                rb_gpu_to_cpu = R.to_vdevice(rb_gpu, CPU)
                r = R.concat((ra_gpu_to_cpu, ra_cpu, rb_gpu_to_cpu, rb_cpu), axis=1)
                result = r
                R.output(result)
            return result

    before = bound(Branches, wa=wa, wb=wb)
    plan = make_plan(find_layers(before["main"]), 0.5, 1)
    expected = bound(Expected, wa_gpu=wa[:2], wa_cpu=wa[2:], wb_gpu=wb[:2], wb_cpu=wb[2:])
    tvm.ir.assert_structural_equal(SplitChannels(plan, LLVM, LLVM)(before), expected)
