"""What SplitChannels emits: tensors stay split through per-channel ops, LRN and concats,
and data crosses devices only where a consumer needs the other side's channels."""

from __future__ import annotations

import pytest
import tvm
from tvm import relax

from tvm_mulayer.compiler.frontend import import_onnx
from tvm_mulayer.base.layers import find_layers
from tvm_mulayer.passes import SplitChannels
from tvm_mulayer.base.plan import make_plan

LLVM = tvm.target.Target({"kind": "llvm"})


def _split(model, ratio, multiple=8):
    mod, info = import_onnx(model)
    plan = make_plan(find_layers(mod["main"]), ratio, multiple, info.sources)
    return SplitChannels(plan, LLVM, LLVM)(mod), plan


def _calls(mod, op_name):
    return [b for block in mod["main"].body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op) and b.value.op.name == op_name]


def test_lrn_runs_split_with_a_channel_halo(small_zoo):
    split, _ = _split(small_zoo["alexnet"], 0.5)
    pools = _calls(split, "relax.nn.avg_pool3d")
    assert len(pools) == 4  # AlexNet's two LRNs, each on both devices
    depth_pads = sorted((int(p.value.attrs.padding[0]), int(p.value.attrs.padding[3])) for p in pools)
    # the GPU part pads at the front only, the CPU part at the back only: the rest is halo
    assert depth_pads == [(0, 2), (0, 2), (2, 0), (2, 0)]


@pytest.mark.slow  # MobileNet through the split pass; the fast tier has the pass's Before/Expected tests
def test_depthwise_conv_on_the_same_boundary_moves_no_data(small_zoo):
    split, plan = _split(small_zoo["mobilenet_v1"], 0.5, multiple=1)
    layers = {lp.name: lp for lp in plan.layers}
    # every pointwise conv feeds a depthwise conv split at the same channel: only the
    # pointwise convs (which read all channels) need the other side's part
    moves = len(_calls(split, "relax.to_vdevice"))
    pointwise = sum(1 for lp in layers.values() if lp.op == "conv2d" and lp.placement == "split") // 2
    assert moves <= 2 * pointwise + 4


def test_channel_concat_relabels_parts_instead_of_copying():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype("float32"), n) for n in ("a", "b")]
    nodes = [helper.make_node("Conv", ["x", "a"], ["ya"]), helper.make_node("Conv", ["x", "b"], ["yb"]),
             helper.make_node("Concat", ["ya", "yb"], ["c"], axis=1), helper.make_node("Relu", ["c"], ["r"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 16, 4, 4])], inits)
    split, _ = _split(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), 0.5)
    assert len(_calls(split, "relax.nn.relu")) == 4  # one per part: the concat moved nothing
    assert len(_calls(split, "relax.concat")) == 1  # only the final gather of the output on the CPU
    assert len(_calls(split, "relax.to_vdevice")) == 3  # input to the GPU, two GPU parts back


def test_whole_placements_copy_only_at_device_changes(small_zoo):
    split, _ = _split(small_zoo["vgg16"], 1.0)
    moves = _calls(split, "relax.to_vdevice")
    assert len(moves) == 2  # input to the GPU, logits back
