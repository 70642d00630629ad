"""Tests for tvm_mulayer.schedules: CPU kernels vs a float64 numpy reference, GPU rules compile."""

import os
import sys

import numpy as np
import pytest

try:
    from tvm_mulayer import schedules
except ImportError:  # package not installed yet: import the source tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import schedules  # type: ignore

import tvm
from tvm import relax, tirx
from tvm.target import Target

CPU = Target({"kind": "llvm", "mcpu": "znver4", "num-cores": 2})
CPU_GENERIC = Target("llvm")  # the SSE2 stand-in a GPU-less host may use for the "GPU"
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
    (12, 18, 9, 3, 1, 1, 3, "relu"),  # grouped
    (27, 27, 7, 3, 1, 1, 1, "relu"),  # odd everything
    (32, 64, 58, 3, 1, 1, 1, "relu"),  # big spatial: channel-vectorized path
    (16, 48, 28, 3, 2, 1, 1, "bias"),  # strided, channel-vectorized
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("target", [CPU, CPU_GENERIC], ids=["znver4", "llvm"])
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
