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
from tvm_mulayer.schedules.gpu import tensor_core
from tvm_mulayer.schedules.gpu.tensor_core import GemmTiles, TensorCoreGemm, gemm_tiles

CUDA = Target({"kind": "cuda", "arch": "sm_90"}, host="llvm")
CUDA_PASCAL = Target({"kind": "cuda", "arch": "sm_61"}, host="llvm")  # no tensor cores
OPENCL = Target("opencl", host="llvm")
from isa import HOST as CPU  # kernels run compiled for this CPU

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


def conv_tiles(cin, cout, hw, k, stride, pad, stages=TensorCoreGemm.stages):
    """The tiles the rule picks for a conv (gemm_tiles of its GEMM shape)."""
    oh = (hw + 2 * pad - k) // stride + 1
    return gemm_tiles(cout, oh * oh, cin * k * k, k * k, stages, cin)


@pytest.mark.parametrize("case", list(TENSOR_CORE_CONVS), ids=list(TENSOR_CORE_CONVS))
def test_fp16_conv_uses_tensor_cores_on_sm90(case):
    cin, cout, hw, k, stride, pad = TENSOR_CORE_CONVS[case]
    rule, source = build_source(layer_func("conv2d", (1, cin, hw, hw), (cout, cin, k, k), stride, pad), CUDA)
    assert rule == "gpu.Conv2d"
    assert "wmma::mma_sync" in source and "wmma::load_matrix_sync" in source
    # padding, GEMM and epilogue: one kernel; split-K adds the kernel that sums the ranges
    assert kernel_count(source) == (2 if conv_tiles(*TENSOR_CORE_CONVS[case]).split_k > 1 else 1)


def kernels_of(source):
    """{kernel name: body} of a generated CUDA source."""
    parts = re.split(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', source)
    return {name: body for name, body in zip(parts[1::2], parts[2::2]) if "{" in body.split(";")[0]}


def test_deep_k_on_a_small_plane_splits_k_and_drops_padded_pixels():
    """VGG's 512->512 3x3 conv on 14x14: 64x64 tiles give 32 blocks for 132 SMs, so K is
    split over blockIdx.z and a second kernel adds the ranges; its write must skip the
    pixels 196..255 of the padded tile (they once overwrote the next channel's first ones)."""
    tiles = conv_tiles(512, 512, 14, 3, 1, 1)
    assert tiles.split_k > 1 and tiles.bm * tiles.bn == 64 * 64
    assert -(-512 // tiles.bm) * -(-196 // tiles.bn) * tiles.split_k >= tensor_core.TARGET_BLOCKS
    _, source = build_source(layer_func("conv2d", (1, 512, 14, 14), (512, 512, 3, 3), 1, 1), CUDA)
    gemm, total = kernels_of(source).values()
    assert "blockIdx.z" in gemm and "wmma::mma_sync" in gemm and "compute_intermediate_ptr" not in gemm
    assert "wmma" not in total and "blockIdx.z" not in total
    guard = total[:total.index("compute_intermediate_ptr[")]  # what precedes the output store
    assert "< 196" in guard or "< 49" in guard  # pixel < 196 (or pixel / 4 < 49)


def test_channels_inner_gather_has_no_window_division():
    """K = (ky, kx, c) for a 3x3 conv with 256 channels: the gather finds c with a mask and
    (ky, kx) per slab, not with divisions by 9 and 3 per element; weights at stride 9."""
    assert conv_tiles(256, 256, 56, 3, 1, 1).channels_inner
    _, source = build_source(layer_func("conv2d", (1, 256, 56, 56), (256, 256, 3, 3), 1, 1), CUDA)
    gemm = next(iter(kernels_of(source).values()))
    assert not re.search(r"[%/] 9\)", gemm) and not re.search(r"% 3\)", gemm)
    assert re.search(r"\(\(int\)threadIdx.x\) \* 9\)", gemm)  # consecutive lanes: consecutive c


def test_k_loop_is_double_buffered():
    """stages 2: both operand slabs go through registers (the next slab's global loads are
    issued before this slab's MMAs) into two shared-memory buffers."""
    assert TensorCoreGemm.stages == 2
    _, source = build_source(layer_func("conv2d", (1, 256, 56, 56), (256, 256, 3, 3), 1, 1), CUDA)
    staged = set(re.findall(r"(pad_temp|w)_reindex\w*_shared_dyn_local_ptr\[", source))
    assert staged == {"pad_temp", "w"}
    # the MMAs of the last slab are peeled after the loop: more than one mma_sync site
    assert source.count("wmma::mma_sync") >= 2


@pytest.mark.parametrize("cin,cout,hw,k,pad,stages,vector", [
    (512, 512, 14, 1, 0, 2, True),  # 1x1, split K: ranges of whole 32-deep slabs
    (512, 512, 14, 1, 0, 1, True),
    (8, 64, 56, 4, 0, 1, True),  # 4x4 on 8 channels: K = (c, ky, kx) = 128, two 64-deep slabs
    (256, 256, 56, 3, 1, 2, False),  # K = (ky, kx, c): weights read at a stride of 9 elements
    (3, 64, 56, 3, 1, 1, False),  # K = 27: rows of W are not whole 16-byte vectors
])
def test_weight_slab_uses_16_byte_loads_where_contiguous(monkeypatch, cin, cout, hw, k, pad, stages, vector):
    """8 float16 weights per load where they are contiguous and every K offset keeps them in
    one 16-byte vector (else TVM scalarizes the vector's index arithmetic lane by lane)."""
    monkeypatch.setattr(TensorCoreGemm, "stages", stages)
    assert (conv_tiles(cin, cout, hw, k, 1, pad, stages).vector_w == 8) == vector
    _, source = build_source(layer_func("conv2d", (1, cin, hw, hw), (cout, cin, k, k), 1, pad), CUDA)
    assert ("*(uint4*)(w_ptr" in source) == vector
    assert "((int2*)" not in source  # no lane-by-lane index arithmetic of a failed vectorization


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


@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("m,n,k,window", [(20, 784, 576, 9), (37, 196, 1152, 9), (64, 50176, 27, 9),
                                          (64, 50176, 576, 9), (128, 12544, 1152, 9), (512, 196, 4608, 9),
                                          (1000, 169, 512, 1), (384, 169, 1728, 9), (48, 196, 400, 25),
                                          (256, 169, 3456, 9), (144, 196, 528, 1), (1024, 49, 1024, 1)])
def test_gemm_tiles_fit_and_cover(m, n, k, window, stages):
    t = gemm_tiles(m, n, k, window, stages)
    assert t.shared_bytes() <= 48 * 1024  # static + dynamic, padded rows and both stages included
    assert t.warps == 4 and t.bm % 16 == 0 and t.bn % 16 == 0
    assert t.bm <= max(32, 2 * m)  # few channels: a 32-row tile, not 64
    padded_k = -(-k // (t.bk * t.split_k)) * t.bk * t.split_k
    assert padded_k <= max(k + k // 8, 32)  # K padded by at most an eighth
    if t.split_k > 1:  # whole slabs per range, each deep enough to pay for the partial sums
        assert padded_k // t.split_k >= tensor_core.MIN_SPLIT_DEPTH
    blocks = -(-m // t.bm) * -(-n // t.bn) * t.split_k
    assert blocks >= 132 or t.bm * t.bn <= 32 * 32  # the grid fills the GPU, or the tile is minimal
    if t.vector_w == 8:  # whole 16-byte vectors in every range and slab
        assert k % t.bk == 0 and (k // t.split_k) % window == 0 and (stages == 1 or t.bk % window == 0)


def test_split_k_prefers_whole_windows():
    # 512->512 3x3 on 14x14: 32 blocks of 64x64; 6 ranges would reach 132 SMs but 768 is not a
    # multiple of 9; 8 ranges of 576 are
    assert tensor_core.split_k_factor(4608, 64, 9, 32) == (8, True)
    assert tensor_core.split_k_factor(4608, 32, 9, 32) == (8, True)
    # 132 blocks out of reach (at most 5 ranges of >= 256): as many as allowed, K padded
    assert tensor_core.split_k_factor(1296, 32, 9, 20) == (5, False)
    assert tensor_core.split_k_factor(200, 32, 1, 10) == (1, True)  # too shallow to split


@pytest.mark.parametrize("channels_inner", [False, True], ids=["k=c,ky,kx", "k=ky,kx,c"])
@pytest.mark.parametrize("split_k", [1, 3])
@pytest.mark.parametrize("cin,cout,hw,k,stride,pad", [(13, 37, 9, 3, 1, 1), (3, 19, 23, 11, 4, 2),
                                                      (24, 33, 7, 1, 1, 0), (8, 21, 13, 5, 2, 2),
                                                      (40, 17, 6, 3, 1, 1)])
def test_implicit_gemm_rewrite_is_exact_on_cpu(cin, cout, hw, k, stride, pad, split_k, channels_inner):
    """The im2col view + tile padding the tensor-core schedule starts from, and its split-K
    form (partial sums over split_k K ranges, K padded to whole ranges, then their sum), run
    on LLVM."""
    func = layer_func("conv2d", (1, cin, hw, hw), (cout, cin, k, k), stride, pad)
    sch = s_tir.Schedule(func)
    main = next(b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint == "conv2d_nchw")
    m, n, kk = TensorCoreGemm.gemm_shape(sch.get(main))
    assert (m, n, kk) == (cout, ((hw + 2 * pad - k) // stride + 1) ** 2, cin * k * k)
    tiles = GemmTiles(wm=2, wn=2, fm=1, fn=1, kf=2, split_k=split_k, channels_inner=channels_inner)
    TensorCoreGemm.normalize(sch, main, tiles)
    if split_k > 1:
        TensorCoreGemm.split_reduction(sch, main, tiles)
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
    from tvm_mulayer.planning.profiler import zoo_configs  # pylint: disable=import-outside-toplevel

    return zoo_configs(fractions=(1.0,))


@pytest.mark.parametrize("target", [CUDA, OPENCL], ids=["cuda", "opencl"])
@pytest.mark.slow
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


def _direct_conv_tiles(cin, cout, hw, k, target):
    from tvm_mulayer.schedules.analysis import ConvInfo, find_conv_block
    from tvm_mulayer.schedules.gpu.conv2d import Conv2d

    func = layer_func("conv2d", (1, cin, hw, hw), (cout, cin, k, k), pad=k // 2, precision="fp32")
    sch = s_tir.Schedule(func)
    info = ConvInfo(sch, find_conv_block(sch))
    tiles = Conv2d.tiles(info, target)
    return func, tiles, Conv2d.blocks(info, tiles)


@pytest.mark.parametrize("cin, cout, hw, k", [(832, 384, 7, 3), (192, 384, 13, 3), (48, 128, 7, 5), (512, 64, 28, 3)])
def test_direct_conv_fills_a_short_grid_of_long_threads_on_cuda(cin, cout, hw, k):
    """A small plane with many channels and a deep reduction made a handful of big blocks of
    long threads (GoogLeNet's 832 -> 384 3x3 on 7x7: 6 blocks on a GPU of 132 SMs): on CUDA
    the float32 direct conv trades each thread's channels, then rows and channel threads
    per block, for blocks — up to one per SM, never under 64 threads a block — and still
    builds; on OpenCL (a phone's few compute units) each thread keeps its 4 channels."""
    func, cuda, blocks = _direct_conv_tiles(cin, cout, hw, k, CUDA)
    _, opencl, opencl_blocks = _direct_conv_tiles(cin, cout, hw, k, OPENCL)
    assert opencl["FI"] == 4 and opencl_blocks < tensor_core.TARGET_BLOCKS
    threads = cuda["TF"] * cuda["TY"] * cuda["TX"]
    assert cuda["FI"] < 4 and threads >= 64
    assert blocks >= tensor_core.TARGET_BLOCKS or threads < 128
    rule, _ = build_source(func, CUDA)
    assert "Conv2d" in rule


def test_direct_conv_keeps_short_threads_whole():
    """A shallow reduction (8 channels x 3x3: 288 multiply-adds a thread with 4 channels each)
    keeps its tiles though its grid is short: split further, such convs ran slower on the H200."""
    _, cuda, blocks = _direct_conv_tiles(8, 64, 28, 3, CUDA)
    assert cuda["FI"] == 4 and blocks < tensor_core.TARGET_BLOCKS
