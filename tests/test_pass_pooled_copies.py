"""PooledCopies: every cross-device copy becomes a destination-passing copy into a pooled
buffer of the destination vdevice (TVMScript Before/Expected), and a split model built with
it computes what it computed with `to_vdevice`."""

import numpy as np
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_mulayer.passes import PooledCopies


def test_copies_become_destination_passing_calls_on_the_destination_vdevice():
    @I.ir_module
    class Before:
        I.module_global_infos({"vdevice": [I.vdevice("llvm", 0), I.vdevice({"kind": "cuda", "arch": "sm_90"}, 0)]})

        @R.function
        def main(x: R.Tensor((4, 8), "float32", "llvm:0")) -> R.Tensor((4, 8), "float32", "llvm:0"):
            with R.dataflow():
                lv: R.Tensor((4, 8), "float16", "llvm:0") = R.astype(x, "float16")
                lv1: R.Tensor((4, 8), "float16", "cuda:0") = R.to_vdevice(lv, "cuda:0")
                lv2: R.Tensor((4, 8), "float16", "cuda:0") = R.nn.relu(lv1)
                lv3: R.Tensor((4, 8), "float16", "llvm:0") = R.to_vdevice(lv2, "llvm:0")
                gv: R.Tensor((4, 8), "float32", "llvm:0") = R.astype(lv3, "float32")
                R.output(gv)
            return gv

    @I.ir_module
    class Expected:
        I.module_global_infos({"vdevice": [I.vdevice("llvm", 0), I.vdevice({"kind": "cuda", "arch": "sm_90"}, 0)]})

        @R.function
        def main(x: R.Tensor((4, 8), "float32", "llvm:0")) -> R.Tensor((4, 8), "float32", "llvm:0"):
            with R.dataflow():
                lv: R.Tensor((4, 8), "float16", "llvm:0") = R.astype(x, "float16")
                lv1 = R.call_dps_packed("runtime.TVMTensorCopyFromTo", (lv,),
                                        out_ty=R.Tensor((4, 8), "float16", "cuda:0"))
                lv2: R.Tensor((4, 8), "float16", "cuda:0") = R.nn.relu(lv1)
                lv3 = R.call_dps_packed("runtime.TVMTensorCopyFromTo", (lv2,),
                                        out_ty=R.Tensor((4, 8), "float16", "llvm:0"))
                gv: R.Tensor((4, 8), "float32", "llvm:0") = R.astype(lv3, "float32")
                R.output(gv)
            return gv

    tvm.ir.assert_structural_equal(PooledCopies()(Before), Expected)


def test_split_model_computes_the_same_with_pooled_copies(small_zoo):
    """The whole build (emulated GPU: the copies are host memcpys) against onnxruntime."""
    import tvm_mulayer

    from conftest import input_shape, ort_run, relative_error

    model = small_zoo["squeezenet1_1"]
    x = np.random.default_rng(3).standard_normal(input_shape(model)).astype("float32")
    executable = tvm_mulayer.compile(model, gpu="emulated", split=0.5, precision="fp32")
    text = executable.module.as_text() if hasattr(executable.module, "as_text") else ""
    assert "vm.builtin.to_device" not in text
    assert relative_error(executable.run(x)["logits"], ort_run(model, {"input": x})[0]) < 1e-5
    lanes = [call["lane"] for call in executable.trace(x)]
    assert lanes.count("copy") == sum(1 for call in executable.trace(x) if call["symbol"] == "runtime.TVMTensorCopyFromTo")
    assert "copy" in lanes
