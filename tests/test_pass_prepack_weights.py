"""PrepackWeights (passes/prepack_weights.py), Before/Expected as in TVM's relax/transform
tests: a two-layer module whose kernels read their weights repacked by a
`<kernel>_weight_prepack` PrimFunc (what `relax.transform.SplitLayoutRewritePreproc` leaves)
gets the repacks run once, at compile time: each weight parameter (its value in "params", as
LiftWeights leaves it) is replaced by a packed parameter on the same vdevice, and the repack
kernel goes. Here the repack is a transpose and the layers are dense layers on a CPU and an
emulated-GPU vdevice.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_mulayer.passes import PrepackWeights

# The vdevices SplitChannels declares for a CPU and an emulated GPU, and names TVMScript reads
# in annotations (pyflakes would take string literals there for forward references)
CPU, GPU = "llvm:0", "llvm:1"
VDEVICES = {"vdevice": [I.vdevice({"kind": "llvm"}, 0, "global"), I.vdevice({"kind": "llvm"}, 1, "global")]}
F32 = "float32"
W0, W1 = np.random.default_rng(0).standard_normal((2, 8, 8)).astype(F32)


def with_params(mod: tvm.IRModule, values: list) -> tvm.IRModule:
    """`mod` whose `main` holds `values` in its "params" attribute (the weight parameters'
    values, in order)."""
    out = mod.clone()
    out.update_func(out.get_global_var("main"),
                    mod["main"].with_attr("params", [tvm.runtime.tensor(v) for v in values]))
    return out


def test_repacks_of_weights_run_at_compile_time():
    """Layer 0 on the GPU reads weight w0, layer 1 on the CPU weight w1, both through the
    repack: the packed weights are new parameters, after the inputs, in the order read."""

    @I.ir_module
    class Before:
        I.module_global_infos(VDEVICES)

        @T.prim_func(private=True, s_tir=True)
        def dense_weight_prepack(w: T.Buffer((T.int64(8), T.int64(8)), F32),
                                 packed: T.Buffer((T.int64(8), T.int64(8)), F32)):
            for i, j in T.grid(T.int64(8), T.int64(8)):
                with T.sblock("pack"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    packed[vi, vj] = w[vj, vi]

        @R.function
        def main(x: R.Tensor((1, 8), F32, CPU), w0: R.Tensor((8, 8), F32, GPU),
                 w1: R.Tensor((8, 8), F32, CPU)) -> R.Tensor((1, 8), F32, CPU):
            R.func_attr({"num_input": 1})
            cls = Before
            with R.dataflow():
                x_gpu = R.to_vdevice(x, GPU)
                w0_packed = R.call_tir(cls.dense_weight_prepack, (w0,), out_ty=R.Tensor((8, 8), F32, GPU))
                y0 = R.matmul(x_gpu, w0_packed)
                y0_cpu = R.to_vdevice(y0, CPU)
                w1_packed = R.call_tir(cls.dense_weight_prepack, (w1,), out_ty=R.Tensor((8, 8), F32, CPU))
                y1 = R.matmul(y0_cpu, w1_packed)
                R.output(y1)
            return y1

    @I.ir_module
    class Expected:
        I.module_global_infos(VDEVICES)

        @R.function
        def main(x: R.Tensor((1, 8), F32, CPU), w0_packed: R.Tensor((8, 8), F32, GPU),
                 w1_packed: R.Tensor((8, 8), F32, CPU)) -> R.Tensor((1, 8), F32, CPU):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                x_gpu = R.to_vdevice(x, GPU)
                w0_read = w0_packed
                y0 = R.matmul(x_gpu, w0_read)
                y0_cpu = R.to_vdevice(y0, CPU)
                w1_read = w1_packed
                y1 = R.matmul(y0_cpu, w1_read)
                R.output(y1)
            return y1

    tvm.ir.assert_structural_equal(PrepackWeights()(with_params(Before, [W0, W1])),
                                   with_params(Expected, [W0.T, W1.T]))
