"""PropagateDevices (passes/propagate_devices.py), Before/Expected as in TVM's relax/transform
tests. Before is a two-layer module as TVM 0.27's LegalizeOps leaves it (see
shared/TVM-NOTES.md): a dense layer on the GPU and one on the CPU calling one shared PrimFunc,
the `call_tir` results without a vdevice and the PrimFunc without a target. Expected puts each
result on its arguments' vdevice and gives each kernel its device's target: one kernel for
a CPU and an emulated GPU (the same LLVM target), a clone per target for a CPU and a CUDA GPU
(only the IR changes: no GPU is needed).
"""

from __future__ import annotations

import pytest
from tvm import s_tir
from tvm.ir import assert_structural_equal
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_mulayer.passes import PropagateDevices

# names TVMScript reads in annotations (pyflakes would take string literals there for forward
# references): the vdevices of the modules below, and the dtype
CPU, EMULATED_GPU, CUDA_GPU = "llvm:0", "llvm:1", "cuda:0"
F32 = "float32"
LLVM, CUDA = {"kind": "llvm"}, {"kind": "cuda", "arch": "sm_90"}


@I.ir_module
class OnEmulatedGpu:
    I.module_global_infos({"vdevice": [I.vdevice(LLVM, 0, "global"), I.vdevice(LLVM, 1, "global")]})

    @T.prim_func(private=True, s_tir=True)
    def dense(x: T.Buffer((T.int64(1), T.int64(4)), F32), w: T.Buffer((T.int64(4), T.int64(4)), F32),
              y: T.Buffer((T.int64(1), T.int64(4)), F32)):
        T.func_attr({"tirx.noalias": True})
        for i, j, k in T.grid(T.int64(1), T.int64(4), T.int64(4)):
            with T.sblock("dense"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                with T.init():
                    y[vi, vj] = T.float32(0.0)
                y[vi, vj] = y[vi, vj] + x[vi, vk] * w[vk, vj]

    @R.function
    def main(x: R.Tensor((1, 4), F32, CPU), w0: R.Tensor((4, 4), F32, EMULATED_GPU),
             w1: R.Tensor((4, 4), F32, CPU)) -> R.Tensor((1, 4), F32, CPU):
        cls = OnEmulatedGpu
        with R.dataflow():
            x_gpu = R.to_vdevice(x, EMULATED_GPU)
            y0 = R.call_tir(cls.dense, (x_gpu, w0), out_ty=R.Tensor((1, 4), F32))
            y0_cpu = R.to_vdevice(y0, CPU)
            y1 = R.call_tir(cls.dense, (y0_cpu, w1), out_ty=R.Tensor((1, 4), F32))
            R.output(y1)
        return y1


def test_results_take_their_arguments_vdevice_and_a_shared_kernel_its_target():
    @I.ir_module
    class Expected:
        I.module_global_infos({"vdevice": [I.vdevice(LLVM, 0, "global"), I.vdevice(LLVM, 1, "global")]})

        @T.prim_func(private=True, s_tir=True)
        def dense(x: T.Buffer((T.int64(1), T.int64(4)), F32), w: T.Buffer((T.int64(4), T.int64(4)), F32),
                  y: T.Buffer((T.int64(1), T.int64(4)), F32)):
            T.func_attr({"target": T.target(LLVM), "tirx.noalias": True})
            for i, j, k in T.grid(T.int64(1), T.int64(4), T.int64(4)):
                with T.sblock("dense"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    with T.init():
                        y[vi, vj] = T.float32(0.0)
                    y[vi, vj] = y[vi, vj] + x[vi, vk] * w[vk, vj]

        @R.function
        def main(x: R.Tensor((1, 4), F32, CPU), w0: R.Tensor((4, 4), F32, EMULATED_GPU),
                 w1: R.Tensor((4, 4), F32, CPU)) -> R.Tensor((1, 4), F32, CPU):
            cls = Expected
            with R.dataflow():
                x_gpu = R.to_vdevice(x, EMULATED_GPU)
                y0 = R.call_tir(cls.dense, (x_gpu, w0), out_ty=R.Tensor((1, 4), F32, EMULATED_GPU))
                y0_cpu = R.to_vdevice(y0, CPU)
                y1 = R.call_tir(cls.dense, (y0_cpu, w1), out_ty=R.Tensor((1, 4), F32, CPU))
                R.output(y1)
            return y1

    assert_structural_equal(PropagateDevices()(OnEmulatedGpu), Expected)


def test_a_kernel_called_on_two_targets_is_cloned_for_the_second():
    """The first call (on the GPU) gives the PrimFunc the CUDA target; the CPU's call gets a
    copy named after its target kind, with variables of its own (TVM's verifier refuses a
    module whose PrimFuncs share one)."""

    @I.ir_module
    class Before:
        I.module_global_infos({"vdevice": [I.vdevice(LLVM, 0, "global"), I.vdevice(CUDA, 0, "global")]})

        @T.prim_func(private=True, s_tir=True)
        def dense(x: T.Buffer((T.int64(1), T.int64(4)), F32), w: T.Buffer((T.int64(4), T.int64(4)), F32),
                  y: T.Buffer((T.int64(1), T.int64(4)), F32)):
            T.func_attr({"tirx.noalias": True})
            for i, j, k in T.grid(T.int64(1), T.int64(4), T.int64(4)):
                with T.sblock("dense"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    with T.init():
                        y[vi, vj] = T.float32(0.0)
                    y[vi, vj] = y[vi, vj] + x[vi, vk] * w[vk, vj]

        @R.function
        def main(x: R.Tensor((1, 4), F32, CPU), w0: R.Tensor((4, 4), F32, CUDA_GPU),
                 w1: R.Tensor((4, 4), F32, CPU)) -> R.Tensor((1, 4), F32, CPU):
            cls = Before
            with R.dataflow():
                x_gpu = R.to_vdevice(x, CUDA_GPU)
                y0 = R.call_tir(cls.dense, (x_gpu, w0), out_ty=R.Tensor((1, 4), F32))
                y0_cpu = R.to_vdevice(y0, CPU)
                y1 = R.call_tir(cls.dense, (y0_cpu, w1), out_ty=R.Tensor((1, 4), F32))
                R.output(y1)
            return y1

    @I.ir_module
    class Expected:
        I.module_global_infos({"vdevice": [I.vdevice(LLVM, 0, "global"), I.vdevice(CUDA, 0, "global")]})

        @T.prim_func(private=True, s_tir=True)
        def dense(x: T.Buffer((T.int64(1), T.int64(4)), F32), w: T.Buffer((T.int64(4), T.int64(4)), F32),
                  y: T.Buffer((T.int64(1), T.int64(4)), F32)):
            T.func_attr({"target": T.target(CUDA), "tirx.noalias": True})
            for i, j, k in T.grid(T.int64(1), T.int64(4), T.int64(4)):
                with T.sblock("dense"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    with T.init():
                        y[vi, vj] = T.float32(0.0)
                    y[vi, vj] = y[vi, vj] + x[vi, vk] * w[vk, vj]

        @T.prim_func(private=True, s_tir=True)
        def dense_llvm(x: T.Buffer((T.int64(1), T.int64(4)), F32), w: T.Buffer((T.int64(4), T.int64(4)), F32),
                       y: T.Buffer((T.int64(1), T.int64(4)), F32)):
            T.func_attr({"target": T.target(LLVM), "tirx.noalias": True})
            for i, j, k in T.grid(T.int64(1), T.int64(4), T.int64(4)):
                with T.sblock("dense"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    with T.init():
                        y[vi, vj] = T.float32(0.0)
                    y[vi, vj] = y[vi, vj] + x[vi, vk] * w[vk, vj]

        @R.function
        def main(x: R.Tensor((1, 4), F32, CPU), w0: R.Tensor((4, 4), F32, CUDA_GPU),
                 w1: R.Tensor((4, 4), F32, CPU)) -> R.Tensor((1, 4), F32, CPU):
            cls = Expected
            with R.dataflow():
                x_gpu = R.to_vdevice(x, CUDA_GPU)
                y0 = R.call_tir(cls.dense, (x_gpu, w0), out_ty=R.Tensor((1, 4), F32, CUDA_GPU))
                y0_cpu = R.to_vdevice(y0, CPU)
                y1 = R.call_tir(cls.dense_llvm, (y0_cpu, w1), out_ty=R.Tensor((1, 4), F32, CPU))
                R.output(y1)
            return y1

    after = PropagateDevices()(Before)
    assert_structural_equal(after, Expected)
    assert s_tir.analysis.verify_well_formed(after)


def test_a_kernel_reading_tensors_on_two_devices_is_refused():
    """Data crosses devices only through to_vdevice: a call that reads both is a bug in an
    earlier pass, named with the kernel and the devices."""

    @I.ir_module
    class Mixed:
        I.module_global_infos({"vdevice": [I.vdevice(LLVM, 0, "global"), I.vdevice(LLVM, 1, "global")]})

        @T.prim_func(private=True, s_tir=True)
        def dense(x: T.Buffer((T.int64(1), T.int64(4)), F32), w: T.Buffer((T.int64(4), T.int64(4)), F32),
                  y: T.Buffer((T.int64(1), T.int64(4)), F32)):
            for i, j, k in T.grid(T.int64(1), T.int64(4), T.int64(4)):
                with T.sblock("dense"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    with T.init():
                        y[vi, vj] = T.float32(0.0)
                    y[vi, vj] = y[vi, vj] + x[vi, vk] * w[vk, vj]

        @R.function
        def main(x: R.Tensor((1, 4), F32, CPU), w: R.Tensor((4, 4), F32, EMULATED_GPU)) -> R.Tensor((1, 4), F32):
            cls = Mixed
            with R.dataflow():
                y = R.call_tir(cls.dense, (x, w), out_ty=R.Tensor((1, 4), F32))
                R.output(y)
            return y

    with pytest.raises(ValueError, match="call_tir dense reads tensors on different devices.*insert to_vdevice"):
        PropagateDevices()(Mixed)
