"""Tests for tvm_mulayer.schedules: CPU kernels vs a float64 numpy reference, GPU rules compile."""


import numpy as np
import pytest

import tvm
from tvm import relax, tirx
from tvm.target import Target

from tvm_mulayer import schedules
from tvm_mulayer.schedules import analysis

from isa import FIXED_ISAS, GENERIC, HOST, VNNI, require_runs_here, vector_registers

# Kernels run compiled for this CPU (HOST) and for generic x86-64; the fixed ISAs CI may land
# on are compiled everywhere and run only where this CPU has them (tests/isa.py).
CPU = HOST
CPU_GENERIC = GENERIC
CUDA = Target({"kind": "cuda", "arch": "sm_90"}, host="llvm")
OPENCL = Target("opencl", host="llvm")

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- Relax builders
def _legalize(build_body, inputs, fuse=True):
    bb = relax.BlockBuilder()
    params = [relax.Var(name, relax.TensorType(shape, dtype)) for name, shape, dtype in inputs]
    with bb.function("main", params):
        with bb.dataflow():
            out = build_body(bb, *params)
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    mod = relax.transform.LegalizeOps()(bb.get())
    if fuse:
        mod = relax.transform.AnnotateTIROpPattern()(mod)
        mod = relax.transform.FuseOps()(mod)
        mod = relax.transform.FuseTIR()(mod)
    return mod


def prim_funcs(mod):
    return [(gv.name_hint, f) for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]


def conv_relax(cin, cout, hw, k, stride=1, pad=0, groups=1, epilogue="relu"):
    """conv2d (+bias, +relu/clip) with constant weights (the weights become PrimFunc params)."""
    w = RNG.standard_normal((cout, cin // groups, k, k)).astype("float32")
    b = RNG.standard_normal((1, cout, 1, 1)).astype("float32")

    def body(bb, x):
        y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=pad, groups=groups))
        if epilogue in ("bias", "relu", "clip"):
            y = bb.emit(relax.op.add(y, relax.const(b)))
        if epilogue == "relu":
            y = bb.emit(relax.op.nn.relu(y))
        if epilogue == "clip":
            y = bb.emit(relax.op.clip(y, 0.0, 6.0))
        return y

    mod = _legalize(body, [("x", (1, cin, hw, hw), "float32")])
    return mod, w, b


def conv_ref(x, w, b, stride, pad, groups, epilogue):
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    xp = np.pad(x.astype("float64"), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, f, oh, ow))
    fg = f // groups
    for g in range(groups):
        xs = xp[:, g * cg : (g + 1) * cg]
        for ry in range(kh):
            for rx in range(kw):
                patch = xs[:, :, ry : ry + stride * (oh - 1) + 1 : stride, rx : rx + stride * (ow - 1) + 1 : stride]
                out[:, g * fg : (g + 1) * fg] += np.einsum(
                    "ncyx,fc->nfyx", patch, w[g * fg : (g + 1) * fg, :, ry, rx].astype("float64")
                )
    if epilogue in ("bias", "relu", "clip"):
        out = out + b.astype("float64")
    if epilogue == "relu":
        out = np.maximum(out, 0)
    if epilogue == "clip":
        out = np.clip(out, 0, 6)
    return out


# ---------------------------------------------------------------- helpers
def run_prim(func, target, args):
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    lib = tvm.tirx.build(mod, target=target)
    dev = tvm.cpu()
    targs = [tvm.runtime.tensor(a, dev) for a in args]
    lib["main"](*targs)
    return targs[-1].numpy()


def the_func(mod, contains):
    funcs = [(n, f) for n, f in prim_funcs(mod) if contains in n]
    assert len(funcs) == 1, [n for n, _ in prim_funcs(mod)]
    return funcs[0][1]


def rule_name(rule):
    return type(rule).__name__


# ---------------------------------------------------------------- CPU conv2d
CONV_CASES = [
    # cin, cout, hw, k, stride, pad, groups, epilogue
    (16, 13, 14, 3, 1, 1, 1, "relu"),  # odd output channels (split layer tail)
    (8, 37, 11, 1, 1, 0, 1, "bias"),  # 1x1, prime cout, prime width
    (3, 32, 23, 3, 2, 1, 1, "relu"),  # first layer, stride 2, channel-vectorized
    (3, 16, 35, 11, 4, 2, 1, "relu"),  # AlexNet-like 11x11 stride 4
    (6, 16, 13, 5, 1, 2, 1, "clip"),  # 5x5
    (4, 8, 19, 7, 2, 3, 1, "none"),  # 7x7 stride 2, no epilogue
    (16, 16, 15, 3, 1, 1, 16, "relu"),  # depthwise
    (16, 16, 15, 3, 2, 1, 16, "clip"),  # depthwise stride 2
    (8, 8, 30, 3, 2, 1, 8, "relu"),  # depthwise stride 2, long rows: de-interleaved input
    (12, 18, 9, 3, 1, 1, 3, "relu"),  # grouped
    (27, 27, 7, 3, 1, 1, 1, "relu"),  # odd everything
    (32, 64, 58, 3, 1, 1, 1, "relu"),  # big spatial: channel-vectorized path
    (16, 48, 28, 3, 2, 1, 1, "bias"),  # strided, channel-vectorized
    (12, 22, 23, 3, 1, 1, 1, "none"),  # prime width, 22 channels: channel-vectorized, padded to 32
    (10, 21, 19, 3, 2, 1, 1, "relu"),  # the same, strided, with an epilogue
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("target", [CPU, CPU_GENERIC], ids=["host", "llvm"])
def test_cpu_conv2d(case, target):
    cin, cout, hw, k, stride, pad, groups, epi = case
    mod, w, b = conv_relax(cin, cout, hw, k, stride, pad, groups, epi)
    func = the_func(mod, "conv2d")
    rule, sch = schedules.apply_rules(func, target)
    assert rule_name(rule) == "Conv2d"
    x = RNG.standard_normal((1, cin, hw, hw)).astype("float32")
    ref = conv_ref(x, w, b, stride, pad, groups, epi)
    args = [x, w] + ([b] if epi in ("bias", "relu", "clip") else []) + [np.zeros(ref.shape, "float32")]
    out = run_prim(sch.mod["main"], target, args)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4 * max(1.0, np.abs(ref).max()) * 1e-1)


def test_cpu_conv2d_modes_covered():
    """The cases above exercise all three conv schedules (x-vectorized, channel-vectorized,
    depthwise)."""
    from tvm import s_tir

    conv2d = schedules.cpu.conv2d
    modes = set()
    for case in CONV_CASES:
        mod, _, _ = conv_relax(*case)
        sch = s_tir.Schedule(the_func(mod, "conv2d"))
        modes.add(conv2d.Conv2d.tiles(analysis.ConvInfo(sch, analysis.find_conv_block(sch)), VNNI)["mode"])
    assert modes == {"xvec", "fvec", "dw"}


# Pointwise convs the GEMM register tile takes (1x1, stride 1, >= 64 input channels, with the
# build's prepacked weights): output channels that pad to the channel block (40 -> 48,
# 100 -> 128, 37 -> 48), pixel tiles running across rows (20x20 -> 10 pixels, 9x9 -> 9), every
# epilogue, and the K-chunked form (512 and 520 input channels; 520 leaves a chunk tail).
POINTWISE_CASES = [(64, 32, 7, "relu"), (64, 40, 7, "clip"), (96, 100, 9, "bias"), (64, 80, 20, "none"),
                   (512, 37, 5, "relu"), (520, 64, 4, "relu")]


@pytest.mark.parametrize("case", POINTWISE_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("target", [CPU, CPU_GENERIC, FIXED_ISAS["avx2"]], ids=["host", "llvm", "avx2"])
def test_cpu_pointwise_conv2d_gemm(case, target):
    from tvm import s_tir

    conv2d = schedules.cpu.conv2d
    cin, cout, hw, epi = case
    mod, w, b = conv_relax(cin, cout, hw, 1, 1, 0, 1, epi)
    func = the_func(mod, "conv2d")
    plain = s_tir.Schedule(func)
    info = analysis.ConvInfo(plain, analysis.find_conv_block(plain))
    # AVX-512's register tile takes every case (SSE2's smaller one finds no pixel tile for some planes)
    tiles = conv2d.Conv2d.tiles(info, VNNI, True)
    assert tiles["mode"] == "gemm" and (tiles["KC"] is not None) == (cin >= 512), tiles
    # so does AVX2's, with 16 ymm registers: accumulators, weight vectors and a broadcast fit
    avx2 = conv2d.Conv2d.tiles(info, FIXED_ISAS["avx2"], True)
    assert avx2["mode"] == "gemm" and avx2["FO"] * avx2["PU"] + avx2["FO"] + 1 <= 16, avx2
    if target is FIXED_ISAS["avx2"]:
        require_runs_here(target)
    rule, sch = schedules.apply_rules(func, target, schedules.schedule_rules(target, prepacked_weights=True))
    assert rule_name(rule) == "Conv2d"
    x = RNG.standard_normal((1, cin, hw, hw)).astype("float32")
    ref = conv_ref(x, w, b, 1, 0, 1, epi)
    args = [x, w] + ([b] if epi in ("bias", "relu", "clip") else []) + [np.zeros(ref.shape, "float32")]
    out = run_prim(sch.mod["main"], target, args)
    # float32 sums of up to 520 products: 1e-5 of the largest output
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# Per kernel kind, one case each schedule of it takes: x-vectorized, channel-vectorized and
# depthwise direct convs, the pointwise GEMM tile, dense.
# conv_fvec2: two registers of output channels per pixel on AVX2 (16 registers)
ISA_CASES = {"conv_xvec": (16, 13, 14, 3, 1, 1, 1, "relu"), "conv_fvec": (32, 64, 58, 3, 1, 1, 1, "relu"),
             "conv_fvec2": (16, 32, 28, 3, 1, 1, 1, "relu"),
             "conv_dw": (16, 16, 15, 3, 2, 1, 16, "clip"), "conv_gemm": (64, 40, 7, 1, 1, 0, 1, "clip")}


def test_avx2_channel_vectorized_conv_takes_two_channel_registers():
    from tvm import s_tir

    mod, _, _ = conv_relax(*ISA_CASES["conv_fvec2"])
    plain = s_tir.Schedule(the_func(mod, "conv2d"))
    tiles = schedules.cpu.conv2d.Conv2d.tiles(analysis.ConvInfo(plain, analysis.find_conv_block(plain)),
                                              FIXED_ISAS["avx2"], True)
    assert tiles["mode"] == "fvec" and tiles["FV"] == 16 and 2 * tiles["XU"] + 3 <= 16, tiles


@pytest.mark.parametrize("isa", list(FIXED_ISAS))
@pytest.mark.parametrize("case", [*ISA_CASES, "dense"])
def test_cpu_kernels_compile_for_every_x86_kind_ci_lands_on(case, isa):
    """Every x86 kind is compiled on any machine and its assembly read: AVX2 code must keep to
    ymm registers (a zmm register dies with SIGILL there), AVX-512 code vectorized over 16
    output channels uses zmm. The
    numerics run only where this CPU has the ISA (the host's own run above everywhere)."""
    target = FIXED_ISAS[isa]
    if case == "dense":
        func = the_func(dense_relax(256, 100), "matmul")
    else:
        cin, cout, hw, k, stride, pad, groups, epi = ISA_CASES[case]
        mod, w, b = conv_relax(cin, cout, hw, k, stride, pad, groups, epi)
        func = the_func(mod, "conv2d")
    rule, sch = schedules.apply_rules(func, target, schedules.schedule_rules(target, prepacked_weights=True))
    assert rule_name(rule) == ("Dense" if case == "dense" else "Conv2d")
    lib = tvm.tirx.build(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    registers = vector_registers(lib.inspect_source("asm"))
    assert "ymm" in registers or "zmm" in registers, registers
    if isa == "avx2":
        assert "zmm" not in registers, registers
    elif case in ("conv_fvec", "conv_fvec2", "conv_gemm"):  # 16 float32 lanes of output channels
        assert "zmm" in registers, registers
    require_runs_here(target)
    args = _random_args(func)
    ref = run_prim(func, target, [a.copy() for a in args])
    np.testing.assert_allclose(run_prim(sch.mod["main"], target, args), ref, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- CPU: other ops vs unscheduled
def _random_args(func, seed=1):
    rng = np.random.default_rng(seed)
    args = []
    for p in func.params:
        shape = [int(s) for s in p.ty.shape]
        args.append(rng.standard_normal(shape).astype(str(p.ty.dtype)))
    args[-1] = np.zeros_like(args[-1])
    return args


def check_against_unscheduled(func, target, expect_rule):
    rule, sch = schedules.apply_rules(func, target)
    assert rule is not None and rule_name(rule) == expect_rule, rule
    args = _random_args(func)
    ref = run_prim(func, target, [a.copy() for a in args])
    out = run_prim(sch.mod["main"], target, [a.copy() for a in args])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def dense_relax(k, n, act="relu"):
    w = RNG.standard_normal((k, n)).astype("float32")
    b = RNG.standard_normal((n,)).astype("float32")

    def body(bb, x):
        y = bb.emit(relax.op.matmul(x, relax.const(w)))
        y = bb.emit(relax.op.add(y, relax.const(b)))
        if act == "relu":
            y = bb.emit(relax.op.nn.relu(y))
        return y

    return _legalize(body, [("x", (1, k), "float32")])


@pytest.mark.parametrize("k,n", [(64, 48), (100, 37), (256, 1000), (33, 7), (1030, 300)])
@pytest.mark.parametrize("target", [CPU, CPU_GENERIC], ids=["host", "llvm"])
def test_cpu_dense(k, n, target):
    check_against_unscheduled(the_func(dense_relax(k, n), "matmul"), target, "Dense")


@pytest.mark.parametrize("split_k", [False, True], ids=["columns", "split_k"])
@pytest.mark.parametrize("k,n", [(512, 64), (1030, 37), (96, 1000)])
def test_cpu_dense_both_strategies(k, n, split_k):
    dense = schedules.cpu.dense.Dense(split_k=split_k)
    func = the_func(dense_relax(k, n), "matmul")
    rule, sch = schedules.apply_rules(func, CPU, [dense])
    assert rule is dense
    args = _random_args(func)
    ref = run_prim(func, CPU, [a.copy() for a in args])
    np.testing.assert_allclose(run_prim(sch.mod["main"], CPU, args), ref, rtol=1e-5, atol=1e-5)


POOL_CASES = {
    "maxpool3s2": lambda bb, x: relax.op.nn.max_pool2d(x, pool_size=3, strides=2, padding=1),
    "maxpool3s2_ceil": lambda bb, x: relax.op.nn.max_pool2d(x, pool_size=3, strides=2, ceil_mode=True),
    "avgpool3s1": lambda bb, x: relax.op.nn.avg_pool2d(x, pool_size=3, strides=1, padding=1),
    "global_avg": lambda bb, x: relax.op.nn.adaptive_avg_pool2d(x, output_size=1),
    "mean_hw": lambda bb, x: relax.op.mean(x, axis=[2, 3], keepdims=True),
    # instance norm's centring: an epilogue larger than the reduced tensor
    "mean_centred": lambda bb, x: relax.op.subtract(x, bb.emit(relax.op.mean(x, axis=[2, 3], keepdims=True))),
    "lrn_pool3d": lambda bb, x: relax.op.nn.avg_pool3d(
        relax.op.expand_dims(relax.op.multiply(x, x), 1), pool_size=(5, 1, 1), strides=1,
        padding=(2, 0, 0, 2, 0, 0)),
}


@pytest.mark.parametrize("name", list(POOL_CASES))
def test_cpu_pool(name):
    mod = _legalize(lambda bb, x: bb.emit(POOL_CASES[name](bb, x)), [("x", (1, 13, 15, 15), "float32")], fuse=True)
    funcs = [f for n, f in prim_funcs(mod) if "pool" in n or "mean" in n]
    assert funcs, [n for n, _ in prim_funcs(mod)]
    for func in funcs:
        check_against_unscheduled(func, CPU, "Pool")


INJECTIVE_CASES = {
    "relu": lambda bb, x: relax.op.nn.relu(x),
    "clip": lambda bb, x: relax.op.clip(x, 0.0, 6.0),
    "scale_shift": lambda bb, x: relax.op.add(
        relax.op.multiply(x, relax.const(RNG.standard_normal((1, 13, 1, 1)).astype("float32"))),
        relax.const(RNG.standard_normal((1, 13, 1, 1)).astype("float32"))),
    "concat": lambda bb, x: relax.op.concat([x, relax.op.nn.relu(x), x], axis=1),
    "strided_slice": lambda bb, x: relax.op.strided_slice(x, axes=[1], begin=[3], end=[11]),
    "reshape": lambda bb, x: relax.op.reshape(x, (1, 13 * 15 * 15)),
    "lrn_tail": lambda bb, x: relax.op.divide(
        x, relax.op.power(relax.op.add(relax.op.multiply(x, relax.const(np.float32(1e-4))),
                                       relax.const(np.float32(1.0))), relax.const(np.float32(0.75)))),
}


@pytest.mark.parametrize("name", list(INJECTIVE_CASES))
def test_cpu_injective(name):
    mod = _legalize(lambda bb, x: bb.emit(INJECTIVE_CASES[name](bb, x)), [("x", (1, 13, 15, 15), "float32")])
    funcs = prim_funcs(mod)
    assert funcs
    for _, func in funcs:
        check_against_unscheduled(func, CPU, "Injective")


def test_cpu_softmax_uses_reduction_rule():
    mod = _legalize(lambda bb, x: bb.emit(relax.op.nn.softmax(x, axis=-1)), [("x", (1, 1000), "float32")])
    for _, func in prim_funcs(mod):
        check_against_unscheduled(func, CPU, "Reduction")


def test_schedule_for_targets_pass():
    """The module pass schedules every PrimFunc by its own target and marks it scheduled;
    a second llvm target (the GPU stand-in of GPU-less hosts) gets CPU rules too."""
    mod, _, _ = conv_relax(8, 16, 12, 3, 1, 1)
    mod2 = dense_relax(32, 24)
    for gv, f in mod2.functions_items():
        if isinstance(f, tirx.PrimFunc):
            mod[gv.name_hint + "_dense"] = f
    funcs = prim_funcs(mod)
    for i, (name, f) in enumerate(funcs):
        mod[name] = f.with_attr("target", CPU if i % 2 == 0 else CPU_GENERIC)
    out = schedules.ScheduleForTargets()(mod)
    for name, f in prim_funcs(out):
        assert bool(f.attrs["tirx.is_scheduled"]), name
    again = schedules.ScheduleForTargets()(out)
    import tvm_ffi

    assert tvm_ffi.structural_equal(again, out)


def test_schedule_rules_listing():
    cpu_rules = [rule_name(r) for r in schedules.schedule_rules(CPU)]
    gpu_rules = [rule_name(r) for r in schedules.schedule_rules(CUDA)]
    assert cpu_rules[:3] == ["Conv2d", "Dense", "Pool"] and cpu_rules[-1] == "Fallback"
    assert gpu_rules[:3] == ["Conv2d", "DepthwiseConv2d", "Dense"] and gpu_rules[-1] == "Fallback"
    assert [rule_name(r) for r in schedules.schedule_rules(CPU_GENERIC)] == cpu_rules


# ---------------------------------------------------------------- GPU: compile only
GPU_CONV_CASES = [
    ((16, 13, 14, 3, 1, 1, 1, "relu"), "Conv2d"),
    ((3, 32, 23, 3, 2, 1, 1, "relu"), "Conv2d"),
    ((3, 16, 35, 11, 4, 2, 1, "relu"), "Conv2d"),
    ((12, 18, 9, 3, 1, 1, 3, "relu"), "Conv2d"),  # grouped
    ((16, 16, 15, 3, 1, 1, 16, "relu"), "DepthwiseConv2d"),
    ((16, 16, 15, 3, 2, 1, 16, "clip"), "DepthwiseConv2d"),
    ((8, 37, 11, 1, 1, 0, 1, "bias"), "Matmul"),  # 1x1: dlight implicit GEMM
]


def build_gpu(func, target):
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main").with_attr("target", target)})
    lib = tvm.tirx.build(mod, target=target)
    return lib


@pytest.mark.parametrize("case,expect", GPU_CONV_CASES, ids=lambda c: "x".join(map(str, c)) if isinstance(c, tuple) else c)
@pytest.mark.parametrize("target", [CUDA, OPENCL], ids=["cuda", "opencl"])
def test_gpu_conv2d_compiles(case, expect, target):
    mod, _, _ = conv_relax(*case)
    rule, sch = schedules.apply_rules(the_func(mod, "conv2d"), target)
    assert rule_name(rule) == expect
    build_gpu(sch.mod["main"], target)


@pytest.mark.parametrize("target", [CUDA, OPENCL], ids=["cuda", "opencl"])
def test_gpu_dense_compiles(target):
    for k, n in [(256, 1000), (100, 37)]:
        rule, sch = schedules.apply_rules(the_func(dense_relax(k, n), "matmul"), target)
        assert rule_name(rule) == "Dense"
        build_gpu(sch.mod["main"], target)


@pytest.mark.parametrize("target", [CUDA, OPENCL], ids=["cuda", "opencl"])
def test_gpu_other_ops_compile(target):
    """Pools, elementwise, concat, softmax...: dlight rules, Fallback binds the rest."""
    cases = list(POOL_CASES.values()) + list(INJECTIVE_CASES.values())
    cases.append(lambda bb, x: relax.op.nn.softmax(relax.op.reshape(x, (1, 13 * 15 * 15)), axis=-1))
    for make in cases:
        mod = _legalize(lambda bb, x, make=make: bb.emit(make(bb, x)), [("x", (1, 13, 15, 15), "float32")])
        for _, func in prim_funcs(mod):
            rule, sch = schedules.apply_rules(func, target)
            assert sch is not None
            build_gpu(sch.mod["main"], target)


WINDOW_POOLS = ["maxpool3s2", "maxpool3s2_ceil", "avgpool3s1", "lrn_pool3d"]


@pytest.mark.parametrize("name", WINDOW_POOLS + ["maxpool2s2_to_fp16", "global_avg", "mean_hw"])
@pytest.mark.parametrize("target", [CUDA, OPENCL], ids=["cuda", "opencl"])
def test_gpu_window_pools_take_one_thread_per_output(name, target):
    """Pooling windows (and LRN's) reduce in the thread that writes the output, the cast to
    float16 a GPU slice's pool feeds fused in: no cross-thread reduction (dlight's Reduction
    gave each output a thread block). Global pools keep dlight's cross-thread reduction."""
    def body(bb, x):
        if name == "maxpool2s2_to_fp16":  # VGG's pools as a float16 GPU slice sees them
            return bb.emit(relax.op.astype(relax.op.nn.max_pool2d(x, pool_size=2, strides=2), "float16"))
        return bb.emit(POOL_CASES[name](bb, x))

    mod = _legalize(body, [("x", (1, 13, 15, 15), "float32")])
    (_, func), = [(n, f) for n, f in prim_funcs(mod) if "pool" in n or "mean" in n]
    rule, sch = schedules.apply_rules(func, target)
    assert (rule_name(rule) == "WindowPool") == (name not in ("global_avg", "mean_hw")), rule
    source = build_gpu(sch.mod["main"], target).imports[0].inspect_source()
    if rule_name(rule) == "WindowPool":
        assert "shfl" not in source and "barrier" not in source and "__syncthreads" not in source, source


# ---------------------------------------------------------------- other dtypes
def _int8_conv(cin, cout, hw, k, stride, pad, groups=1):
    w = RNG.integers(-128, 127, (cout, cin // groups, k, k)).astype("int8")

    def body(bb, x):
        return bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=pad, groups=groups,
                                          out_dtype="int32"))

    return _legalize(body, [("x", (1, cin, hw, hw), "uint8")]), w


@pytest.mark.parametrize("case", [(16, 13, 14, 3, 1, 1), (3, 32, 23, 3, 2, 1), (16, 16, 15, 3, 1, 1, 16),
                                  (32, 64, 58, 3, 1, 1)], ids=lambda c: "x".join(map(str, c)))
def test_cpu_conv2d_uint8_int8_int32(case):
    """u8 activations x i8 weights -> i32: the conv rule takes its lanes from the i32
    accumulator; results must be bit-exact."""
    mod, w = _int8_conv(*case)
    func = the_func(mod, "conv2d")
    rule, sch = schedules.apply_rules(func, CPU)
    assert rule_name(rule) == "Conv2d"
    x = RNG.integers(0, 255, (1, case[0], case[2], case[2])).astype("uint8")
    oh = (case[2] + 2 * case[5] - case[3]) // case[4] + 1
    out0 = np.zeros((1, case[1], oh, oh), "int32")
    ref = run_prim(func, CPU, [x, w, out0.copy()])
    np.testing.assert_array_equal(run_prim(sch.mod["main"], CPU, [x, w, out0.copy()]), ref)


@pytest.mark.parametrize("target", [CUDA, OPENCL], ids=["cuda", "opencl"])
def test_gpu_fp16_compiles(target):
    for case, expect in [((16, 13, 14, 3, 1, 1), "Conv2d"), ((16, 16, 15, 3, 1, 1, 16), "DepthwiseConv2d"),
                         ((64, 37, 13, 1, 1, 0), "Matmul")]:
        cin, cout, hw, k, s, p = case[:6]
        g = case[6] if len(case) > 6 else 1
        w = RNG.standard_normal((cout, cin // g, k, k)).astype("float16")

        def body(bb, x, w=w, s=s, p=p, g=g):
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=s, padding=p, groups=g))
            return bb.emit(relax.op.nn.relu(y))

        mod = _legalize(body, [("x", (1, cin, hw, hw), "float16")])
        rule, sch = schedules.apply_rules(the_func(mod, "conv2d"), target)
        assert rule_name(rule) == expect
        build_gpu(sch.mod["main"], target)


def test_prepacked_weights_flow():
    """ScheduleForTargets(prepacked_weights=True) + SplitLayoutRewritePreproc moves the conv's
    weight repack into its own PrimFunc (foldable at build time); results unchanged."""
    mod, w, b = conv_relax(32, 64, 20, 3, 1, 1)
    for gv, f in list(mod.functions_items()):
        if isinstance(f, tirx.PrimFunc):
            mod[gv] = f.with_attr("target", CPU)
    mod = schedules.ScheduleForTargets(prepacked_weights=True)(mod)
    mod = relax.transform.SplitLayoutRewritePreproc()(mod)
    names = [n for n, _ in prim_funcs(mod)]
    assert any(n.endswith("_weight_prepack") for n in names), names
    vm = relax.VirtualMachine(tvm.compile(mod, target=CPU), tvm.cpu())
    x = RNG.standard_normal((1, 32, 20, 20)).astype("float32")
    ref = conv_ref(x, w, b, 1, 1, 1, "relu")
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", [(3, 64, 224, 11, 4, 2), (32, 96, 28, 5, 1, 2), (48, 128, 7, 5, 1, 2),
                                  (64, 192, 27, 5, 1, 2), (3, 64, 224, 7, 2, 3), (512, 512, 14, 3, 1, 1)],
                         ids=lambda c: "x".join(map(str, c)))
def test_gpu_conv2d_shared_memory_fits(case):
    """nvcc refuses kernels with more than 48 KiB of static shared memory (seen on the H100
    host for 11x11 / 5x5 kernels and predicated 55x55 tiles): check the generated CUDA."""
    import re

    mod, _, _ = conv_relax(*case)
    rule, sch = schedules.apply_rules(the_func(mod, "conv2d"), CUDA)
    assert rule_name(rule) == "Conv2d"
    lib = build_gpu(sch.mod["main"], CUDA)
    src = lib.imports[0].inspect_source()
    sizes = {"float": 4, "half": 2, "int": 4, "signed char": 1, "unsigned char": 1}
    total = 0
    for dtype, n in re.findall(r"__shared__(?: alignas\(\d+\))? ([a-z ]+?) \w+\[(\d+)\];", src):
        total += sizes.get(dtype.strip(), 4) * int(n)
    assert 0 < total <= 48 * 1024, total
