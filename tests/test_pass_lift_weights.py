"""LiftWeights (passes/lift_weights.py), Before/Expected as in TVM's relax/transform tests:
a two-layer module as SplitChannels leaves it (weights as constants, each call on a CPU or
an emulated-GPU vdevice) becomes one whose weights are parameters on the device of the call
that reads them, their values in the function's "params" attribute in parameter order.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_mulayer.passes import LiftWeights

# The vdevices SplitChannels declares for a CPU and an emulated GPU, and names TVMScript reads
# in annotations (pyflakes would take string literals there for forward references)
CPU, GPU = "llvm:0", "llvm:1"
VDEVICES = {"vdevice": [I.vdevice({"kind": "llvm"}, 0, "global"), I.vdevice({"kind": "llvm"}, 1, "global")]}
F32 = "float32"
RNG = np.random.default_rng(0)
W0_GPU, W0_CPU = RNG.standard_normal((2, 4, 3, 3, 3)).astype(F32)
BIAS = RNG.standard_normal((1, 4, 1, 1)).astype(F32)
W1 = RNG.standard_normal((4, 8, 1, 1)).astype(F32)


@I.ir_module
class Split:
    """Conv 0 split in half (one bias constant serving both slices), scaled by a scalar on
    the CPU; conv 1 wholly on the CPU, adding the same bias constant again."""

    I.module_global_infos(VDEVICES)

    @R.function
    def main(x: R.Tensor((1, 3, 6, 6), F32, CPU), w0_gpu: R.Tensor((4, 3, 3, 3), F32),
             w0_cpu: R.Tensor((4, 3, 3, 3), F32), bias: R.Tensor((1, 4, 1, 1), F32),
             w1: R.Tensor((4, 8, 1, 1), F32)) -> R.Tensor((1, 4, 6, 6), F32, CPU):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            x_gpu = R.to_vdevice(x, GPU)
            c0_gpu = R.nn.conv2d(x_gpu, w0_gpu, padding=[1, 1, 1, 1])
            a0_gpu = R.add(c0_gpu, bias)
            c0_cpu = R.nn.conv2d(x, w0_cpu, padding=[1, 1, 1, 1])
            a0_cpu = R.add(c0_cpu, bias)
            s0_cpu = R.multiply(a0_cpu, R.const(0.5, F32))
            a0_gpu_to_cpu = R.to_vdevice(a0_gpu, CPU)
            y0 = R.concat((a0_gpu_to_cpu, s0_cpu), axis=1)
            c1 = R.nn.conv2d(y0, w1)
            a1 = R.add(c1, bias)
            R.output(a1)
        return a1


def test_each_weight_becomes_a_parameter_on_the_device_that_reads_it():
    """One parameter per (constant, device): the bias read on the GPU and on the CPU is two
    parameters, read twice on the CPU still one. The 0-d scale stays a constant (legalization
    inlines it), and "num_input" still counts the one real input."""

    @I.ir_module
    class Expected:
        I.module_global_infos(VDEVICES)

        @R.function
        def main(x: R.Tensor((1, 3, 6, 6), F32, CPU), w0_gpu: R.Tensor((4, 3, 3, 3), F32, GPU),
                 bias_gpu: R.Tensor((1, 4, 1, 1), F32, GPU), w0_cpu: R.Tensor((4, 3, 3, 3), F32, CPU),
                 bias_cpu: R.Tensor((1, 4, 1, 1), F32, CPU), w1: R.Tensor((4, 8, 1, 1), F32, CPU),
                 ) -> R.Tensor((1, 4, 6, 6), F32, CPU):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                x_gpu = R.to_vdevice(x, GPU)
                c0_gpu = R.nn.conv2d(x_gpu, w0_gpu, padding=[1, 1, 1, 1])
                a0_gpu = R.add(c0_gpu, bias_gpu)
                c0_cpu = R.nn.conv2d(x, w0_cpu, padding=[1, 1, 1, 1])
                a0_cpu = R.add(c0_cpu, bias_cpu)
                s0_cpu = R.multiply(a0_cpu, R.const(0.5, F32))
                a0_gpu_to_cpu = R.to_vdevice(a0_gpu, CPU)
                y0 = R.concat((a0_gpu_to_cpu, s0_cpu), axis=1)
                c1 = R.nn.conv2d(y0, w1)
                a1 = R.add(c1, bias_cpu)
                R.output(a1)
            return a1

    before = relax.transform.BindParams("main", {"w0_gpu": W0_GPU, "w0_cpu": W0_CPU, "bias": BIAS, "w1": W1})(Split)
    params = [tvm.runtime.tensor(value) for value in (W0_GPU, BIAS, W0_CPU, BIAS, W1)]
    expected = Expected.clone()
    expected.update_func(expected.get_global_var("main"), Expected["main"].with_attr("params", params))
    tvm.ir.assert_structural_equal(LiftWeights()(before), expected)


def test_a_module_without_weights_only_gains_its_input_count():
    @I.ir_module
    class Before:
        I.module_global_infos(VDEVICES)

        @R.function
        def main(x: R.Tensor((1, 4), F32, CPU)) -> R.Tensor((1, 4), F32, CPU):
            with R.dataflow():
                y = R.nn.relu(x)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        I.module_global_infos(VDEVICES)

        @R.function
        def main(x: R.Tensor((1, 4), F32, CPU)) -> R.Tensor((1, 4), F32, CPU):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                y = R.nn.relu(x)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LiftWeights()(Before), Expected)
