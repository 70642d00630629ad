"""GPU rules for the quantized (float16) slices: tensor-core conv2d, float16 GEMV.

No GPU here, so kernels are compiled for CUDA sm_90 and OpenCL and their generated source is
inspected (tensor-core path chosen where it should be, not elsewhere; vector loads in the
GEMV); what can run on this CPU runs: the implicit-GEMM rewrite with its tile padding (the
part of the tensor-core schedule that decides which inputs meet which weights) is built for
LLVM and compared with a float64 numpy convolution, odd channel counts and strides included.
The GPU numerics are checked on the GPU host by ``scripts/bench_schedules.py --gpu-pack``.
"""

import re

import numpy as np
import pytest

import tvm
from tvm import relax, s_tir, tirx
from tvm.relax import op
from tvm.target import Target

from tvm_mulayer import schedules
from tvm_mulayer.schedules.gpu.tensor_core import TensorCoreGemm, gemm_tiles

CUDA = Target({"kind": "cuda", "arch": "sm_90"}, host="llvm")
CUDA_PASCAL = Target({"kind": "cuda", "arch": "sm_61"}, host="llvm")  # no tensor cores
OPENCL = Target("opencl", host="llvm")
CPU = Target({"kind": "llvm", "mcpu": "znver4", "num-cores": 2})

RNG = np.random.default_rng(0)


def layer_func(op_name, x_shape, w_shape, stride=1, pad=0, groups=1, precision="fp16"):
    """The fused conv/dense PrimFunc of relu(layer(x, w) + b) in the form the quantization
    pass emits: astype(x, float16), float16 weights, out_dtype float32."""
    w_dtype = "float16" if precision == "fp16" else "float32"
    channels = w_shape[0] if op_name == "conv2d" else w_shape[1]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    w = relax.Var("w", relax.TensorType(w_shape, w_dtype))
    b = relax.Var("b", relax.TensorType((1, channels, 1, 1) if op_name == "conv2d" else (1, channels), "float32"))
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            data = bb.emit(op.astype(x, "float16")) if precision == "fp16" else x
            if op_name == "conv2d":
                y = bb.emit(op.nn.conv2d(data, w, strides=stride, padding=pad, groups=groups, out_dtype="float32"))
            else:
                y = bb.emit(op.matmul(data, w, out_dtype="float32"))
            out = bb.emit_output(op.nn.relu(op.add(y, b)))
        bb.emit_func_output(out)
    mod = bb.get()
    for transform in (relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                      relax.transform.FuseOps(), relax.transform.FuseTIR()):
        mod = transform(mod)
    return next(f for gv, f in mod.functions_items()
                if isinstance(f, tirx.PrimFunc) and gv.name_hint.startswith(("fused_conv2d", "fused_matmul")))


def build_source(func, target):
    """(rule, generated device source) of the rules' schedule for ``func``."""
    rule, sch = schedules.apply_rules(func, target)
    assert sch is not None
    lib = tvm.tirx.build(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    return repr(rule), "\n".join(m.inspect_source() for m in lib.imports)


def kernel_count(source) -> int:
    """Distinct CUDA/OpenCL kernels defined in a generated source (one launch each)."""
    return len(set(re.findall(r"(?:__global__|__kernel) void (?:__launch_bounds__\(\d+\) )?(\w+)\(", source)))


# (cin, cout, hw, k, stride, pad): zoo kinds of conv, with split tails (13, 37 channels)
TENSOR_CORE_CONVS = {
    "vgg-3x3": (64, 64, 56, 3, 1, 1),
    "tail-20-3x3": (64, 20, 28, 3, 1, 1),
    "tail-37-3x3": (128, 37, 14, 3, 1, 1),
    "1x1": (256, 64, 28, 1, 1, 0),
    "1x1-7x7-plane": (832, 48, 7, 1, 1, 0),
    "alexnet-11x11-s4": (3, 64, 224, 11, 4, 2),
    "5x5-13x13": (64, 19, 13, 5, 1, 2),
    "first-3-channels": (3, 32, 56, 3, 2, 1),
}


@pytest.mark.parametrize("case", list(TENSOR_CORE_CONVS), ids=list(TENSOR_CORE_CONVS))
def test_fp16_conv_uses_tensor_cores_on_sm90(case):
    cin, cout, hw, k, stride, pad = TENSOR_CORE_CONVS[case]
    rule, source = build_source(layer_func("conv2d", (1, cin, hw, hw), (cout, cin, k, k), stride, pad), CUDA)
    assert rule == "gpu.Conv2d"
    assert "wmma::mma_sync" in source and "wmma::load_matrix_sync" in source
    assert kernel_count(source) == 1  # padding, GEMM and epilogue: one kernel


@pytest.mark.parametrize("target,precision,cout", [(CUDA, "fp32", 64), (CUDA_PASCAL, "fp16", 64), (OPENCL, "fp16", 64),
                                                    (CUDA, "fp16", 13)],
                         ids=["fp32-sm90", "fp16-sm61", "fp16-opencl", "fp16-sm90-13-channel-tail"])
def test_no_tensor_cores_where_they_do_not_apply(target, precision, cout):
    func = layer_func("conv2d", (1, 64, 28, 28), (cout, 64, 3, 3), 1, 1, precision=precision)
    rule, source = build_source(func, target)
    assert rule == "gpu.Conv2d" and "wmma" not in source  # the direct shared-memory rule
    if target is OPENCL:
        assert "__kernel" in source and "half" in source


@pytest.mark.parametrize("target", [CUDA, OPENCL], ids=["cuda", "opencl"])
def test_fp16_depthwise_and_grouped_take_the_direct_rules(target):
    depthwise = layer_func("conv2d", (1, 37, 28, 28), (37, 1, 3, 3), 2, 1, groups=37)
    rule, source = build_source(depthwise, target)
    assert rule == "gpu.DepthwiseConv2d" and "wmma" not in source
    grouped = layer_func("conv2d", (1, 32, 14, 14), (16, 8, 3, 3), 1, 1, groups=4)
    rule, source = build_source(grouped, target)
    assert rule == "gpu.Conv2d" and "wmma" not in source


@pytest.mark.parametrize("m,n,k", [(20, 784, 576), (37, 196, 1152), (64, 50176, 27), (64, 50176, 576),
                                   (128, 12544, 1152), (512, 196, 4608), (1000, 169, 512), (384, 169, 1728),
                                   (48, 196, 400)])
def test_gemm_tiles_fit_and_cover(m, n, k):
    t = gemm_tiles(m, n, k)
    assert t.shared_bytes() <= 48 * 1024  # static + dynamic, padded rows included
    assert t.warps == 4 and t.bm % 16 == 0 and t.bn % 16 == 0
    assert t.bm <= max(32, 2 * m)  # few channels: a 32-row tile, not 64
    assert -(-k // t.bk) * t.bk <= max(k + k // 8, 32)  # K padded by at most an eighth
    blocks = -(-m // t.bm) * -(-n // t.bn)
    assert blocks >= 132 or t.bm * t.bn <= 32 * 32  # the grid fills the GPU, or the tile is minimal


@pytest.mark.parametrize("cin,cout,hw,k,stride,pad", [(13, 37, 9, 3, 1, 1), (3, 19, 23, 11, 4, 2),
                                                      (24, 33, 7, 1, 1, 0), (8, 21, 13, 5, 2, 2)])
def test_implicit_gemm_rewrite_is_exact_on_cpu(cin, cout, hw, k, stride, pad):
    """The im2col view + tile padding the tensor-core schedule starts from, run on LLVM."""
    func = layer_func("conv2d", (1, cin, hw, hw), (cout, cin, k, k), stride, pad)
    sch = s_tir.Schedule(func)
    main = next(b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint == "conv2d_nchw")
    m, n, kk = TensorCoreGemm.gemm_shape(sch.get(main))
    assert (m, n, kk) == (cout, ((hw + 2 * pad - k) // stride + 1) ** 2, cin * k * k)
    TensorCoreGemm.normalize(sch, main, gemm_tiles(m, n, kk))
    lib = tvm.tirx.build(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=CPU)
    x = RNG.standard_normal((1, cin, hw, hw)).astype("float16")
    w = RNG.standard_normal((cout, cin, k, k)).astype("float16")
    b = RNG.standard_normal((1, cout, 1, 1)).astype("float32")
    oh = (hw + 2 * pad - k) // stride + 1
    out = tvm.runtime.tensor(np.zeros((1, cout, oh, oh), "float32"))
    lib["main"](*(tvm.runtime.tensor(a) for a in (x, w, b)), out)
    xp = np.pad(x[0].astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride][:, :oh, :oh]
    ref = np.maximum(np.tensordot(w.astype(np.float64), win, axes=([1, 2, 3], [0, 3, 4]))[None] + b, 0)
    # same float16 operands, float32 accumulation of at most 13*9 terms: 1e-5 is generous
    assert np.max(np.abs(out.numpy() - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_gemm_shape_refuses_what_is_not_fp16_gemm():
    cases = [layer_func("conv2d", (1, 16, 14, 14), (32, 16, 3, 3), precision="fp32"),  # float32
             layer_func("conv2d", (1, 16, 14, 14), (16, 1, 3, 3), groups=16),  # depthwise
             layer_func("conv2d", (1, 64, 14, 14), (16, 64, 3, 3)),  # one fragment row of channels
             layer_func("dense", (1, 4096), (4096, 1000))]  # one row: a GEMV
    for func in cases:
        assert TensorCoreGemm().apply(func, CUDA, False) is None


@pytest.mark.parametrize("n,vector", [(4096, True), (1000, True), (13, False)])
@pytest.mark.parametrize("target", [CUDA, OPENCL], ids=["cuda", "opencl"])
def test_fp16_dense_is_one_kernel_with_wide_loads(n, vector, target):
    rule, source = build_source(layer_func("dense", (1, 1024), (1024, n)), target)
    assert rule == "gpu.Dense"
    assert kernel_count(source) == 1  # epilogue fused
    if target is CUDA:  # 8 float16 columns per 16-byte load where N allows it
        assert ("*(uint4*)(w_ptr" in source) == vector


def test_fp32_dense_loads_four_columns():
    _, source = build_source(layer_func("dense", (1, 4096), (4096, 4096), precision="fp32"), CUDA)
    assert "*(float4*)(w_ptr" in source


def _zoo_layers():
    from tvm_mulayer.profiler import zoo_configs  # pylint: disable=import-outside-toplevel

    return zoo_configs(fractions=(1.0,))


@pytest.mark.parametrize("target", [CUDA, OPENCL], ids=["cuda", "opencl"])
def test_every_zoo_layer_builds_in_fp16(target):
    """Every conv/dense shape of the five zoo models, in the quantized form; on CUDA every
    non-grouped conv with more than 16 channels runs on tensor cores."""
    for layer in _zoo_layers():
        if layer.op == "conv2d":
            func = layer_func("conv2d", layer.input_shape, layer.weight_shape, layer.strides, layer.padding,
                              layer.groups)
        else:
            func = layer_func("dense", layer.input_shape, layer.weight_shape)
        rule, source = build_source(func, target)
        on_tensor_cores = "wmma::mma_sync" in source
        expected = target is CUDA and layer.op == "conv2d" and layer.groups == 1 and layer.channels > 16
        assert on_tensor_cores == expected, (layer, rule)


@pytest.mark.parametrize("k", [90, 97, 160, 4096, 9216, 25088])
@pytest.mark.parametrize("n, bits", [(410, 32), (1000, 16), (5, 16)])
def test_dense_threads_along_k_divide_k(n, k, bits):
    """A K split with a tail lost its predicate under rfactor, and the GEMV read past x and W:
    wrong AlexNet/VGG dense outputs on the H100 (K = 90 with 11 threads along K)."""
    from tvm_mulayer.schedules.gpu.dense import Dense

    tiles = Dense.tiles(n, k, bits, 1024)
    assert k % tiles["TK"] == 0 and tiles["TK"] >= 1
