"""OrderForOverlap (passes/order_for_overlap.py), Before/Expected as in TVM's relax/transform
tests: `main`'s bindings in the order SplitChannels emits them (layer by layer, each
layer's GPU part before its CPU part) are reordered into steps — the CPU's light kernels that
only feed the GPU, copies to the GPU, GPU kernels, CPU kernels, copies back — so that the
GPU's queue is filled before the CPU computes and the exchange waits for both. Two-layer
modules on a CPU and an emulated-GPU vdevice, weights as parameters (as LiftWeights leaves
them).
"""

from __future__ import annotations

from tvm.ir import assert_structural_equal
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_mulayer.passes import OrderForOverlap

# The vdevices SplitChannels declares for a CPU and an emulated GPU, and names TVMScript reads
# in annotations (pyflakes would take string literals there for forward references)
CPU, GPU = "llvm:0", "llvm:1"
VDEVICES = {"vdevice": [I.vdevice({"kind": "llvm"}, 0, "global"), I.vdevice({"kind": "llvm"}, 1, "global")]}
F32, F16 = "float32", "float16"


def test_each_step_queues_the_gpu_first_and_exchanges_last():
    """Two convs split in half. Step 0: the input's copy, the GPU's conv and ReLU, the CPU's,
    then the GPU's part back to the CPU. Step 1 (conv 1, reading all channels): the CPU's
    part to the GPU, the GPU's concat and conv, the CPU's, the GPU's result back. Step 2:
    the output's concat. In Before, the GPU's ReLU is queued only after the CPU's conv 0 ran,
    and the GPU's part of conv 0 is copied to the CPU after the GPU's conv 1 is queued: a copy
    waits for the GPU's queue, so the CPU would wait for conv 1 instead of computing its own."""

    @I.ir_module
    class Before:
        I.module_global_infos(VDEVICES)

        @R.function
        def main(x: R.Tensor((1, 3, 6, 6), F32, CPU), w0_gpu: R.Tensor((4, 3, 3, 3), F32, GPU),
                 w0_cpu: R.Tensor((4, 3, 3, 3), F32, CPU), w1_gpu: R.Tensor((2, 8, 1, 1), F32, GPU),
                 w1_cpu: R.Tensor((2, 8, 1, 1), F32, CPU)) -> R.Tensor((1, 4, 6, 6), F32, CPU):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                x_gpu = R.to_vdevice(x, GPU)
                c0_gpu = R.nn.conv2d(x_gpu, w0_gpu, padding=[1, 1, 1, 1])
                c0_cpu = R.nn.conv2d(x, w0_cpu, padding=[1, 1, 1, 1])
                r0_gpu = R.nn.relu(c0_gpu)
                r0_cpu = R.nn.relu(c0_cpu)
                r0_cpu_to_gpu = R.to_vdevice(r0_cpu, GPU)
                r0_on_gpu = R.concat((r0_gpu, r0_cpu_to_gpu), axis=1)
                c1_gpu = R.nn.conv2d(r0_on_gpu, w1_gpu)
                r0_gpu_to_cpu = R.to_vdevice(r0_gpu, CPU)
                r0_on_cpu = R.concat((r0_gpu_to_cpu, r0_cpu), axis=1)
                c1_cpu = R.nn.conv2d(r0_on_cpu, w1_cpu)
                c1_gpu_to_cpu = R.to_vdevice(c1_gpu, CPU)
                c1 = R.concat((c1_gpu_to_cpu, c1_cpu), axis=1)
                R.output(c1)
            return c1

    @I.ir_module
    class Expected:
        I.module_global_infos(VDEVICES)

        @R.function
        def main(x: R.Tensor((1, 3, 6, 6), F32, CPU), w0_gpu: R.Tensor((4, 3, 3, 3), F32, GPU),
                 w0_cpu: R.Tensor((4, 3, 3, 3), F32, CPU), w1_gpu: R.Tensor((2, 8, 1, 1), F32, GPU),
                 w1_cpu: R.Tensor((2, 8, 1, 1), F32, CPU)) -> R.Tensor((1, 4, 6, 6), F32, CPU):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                x_gpu = R.to_vdevice(x, GPU)
                c0_gpu = R.nn.conv2d(x_gpu, w0_gpu, padding=[1, 1, 1, 1])
                r0_gpu = R.nn.relu(c0_gpu)
                c0_cpu = R.nn.conv2d(x, w0_cpu, padding=[1, 1, 1, 1])
                r0_cpu = R.nn.relu(c0_cpu)
                r0_gpu_to_cpu = R.to_vdevice(r0_gpu, CPU)
                r0_cpu_to_gpu = R.to_vdevice(r0_cpu, GPU)
                r0_on_gpu = R.concat((r0_gpu, r0_cpu_to_gpu), axis=1)
                c1_gpu = R.nn.conv2d(r0_on_gpu, w1_gpu)
                r0_on_cpu = R.concat((r0_gpu_to_cpu, r0_cpu), axis=1)
                c1_cpu = R.nn.conv2d(r0_on_cpu, w1_cpu)
                c1_gpu_to_cpu = R.to_vdevice(c1_gpu, CPU)
                c1 = R.concat((c1_gpu_to_cpu, c1_cpu), axis=1)
                R.output(c1)
            return c1

    assert_structural_equal(OrderForOverlap()(Before), Expected)


def test_a_light_cpu_kernel_feeding_the_gpu_runs_before_the_gpu_work():
    """A float16 GPU slice's input is cast on the CPU (a kernel without reduction whose only
    user is the copy): the cast and the copy open step 0, so the GPU's dense layer is queued
    before the CPU computes its own. The CPU's dense layer came first in Before."""

    @I.ir_module
    class Before:
        I.module_global_infos(VDEVICES)

        @T.prim_func(private=True, s_tir=True)
        def cast(x: T.Buffer((T.int64(1), T.int64(8)), F32), y: T.Buffer((T.int64(1), T.int64(8)), F16)):
            for i, j in T.grid(T.int64(1), T.int64(8)):
                with T.sblock("cast"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    y[vi, vj] = T.Cast(F16, x[vi, vj])

        @R.function
        def main(x: R.Tensor((1, 8), F32, CPU), w_gpu: R.Tensor((8, 4), F16, GPU),
                 w_cpu: R.Tensor((8, 4), F32, CPU)) -> R.Tensor((1, 8), F32, CPU):
            cls = Before
            with R.dataflow():
                y_cpu = R.matmul(x, w_cpu)
                x_f16 = R.call_tir(cls.cast, (x,), out_ty=R.Tensor((1, 8), F16, CPU))
                x_f16_gpu = R.to_vdevice(x_f16, GPU)
                y_gpu = R.matmul(x_f16_gpu, w_gpu, out_dtype=F32)
                y_gpu_to_cpu = R.to_vdevice(y_gpu, CPU)
                y = R.concat((y_gpu_to_cpu, y_cpu), axis=1)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        I.module_global_infos(VDEVICES)

        @T.prim_func(private=True, s_tir=True)
        def cast(x: T.Buffer((T.int64(1), T.int64(8)), F32), y: T.Buffer((T.int64(1), T.int64(8)), F16)):
            for i, j in T.grid(T.int64(1), T.int64(8)):
                with T.sblock("cast"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    y[vi, vj] = T.Cast(F16, x[vi, vj])

        @R.function
        def main(x: R.Tensor((1, 8), F32, CPU), w_gpu: R.Tensor((8, 4), F16, GPU),
                 w_cpu: R.Tensor((8, 4), F32, CPU)) -> R.Tensor((1, 8), F32, CPU):
            cls = Expected
            with R.dataflow():
                x_f16 = R.call_tir(cls.cast, (x,), out_ty=R.Tensor((1, 8), F16, CPU))
                x_f16_gpu = R.to_vdevice(x_f16, GPU)
                y_gpu = R.matmul(x_f16_gpu, w_gpu, out_dtype=F32)
                y_cpu = R.matmul(x, w_cpu)
                y_gpu_to_cpu = R.to_vdevice(y_gpu, CPU)
                y = R.concat((y_gpu_to_cpu, y_cpu), axis=1)
                R.output(y)
            return y

    assert_structural_equal(OrderForOverlap()(Before), Expected)
