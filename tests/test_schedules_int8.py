"""CPU int8 rules (VNNI dot products) on the quantized slice's exact Relax forms: bit-exact
against a numpy int64 reference, the right rule chosen, the weight repack hoisted."""

import numpy as np
import pytest

import tvm
from tvm import relax, tirx
from tvm.target import Target

from tvm_mulayer import schedules
from tvm_mulayer.passes import PrepackWeights
from tvm_mulayer.base.processors import cpu_processor
from tvm_mulayer.schedules.cpu.dot_intrin import dot_product_for

from isa import AVX2 as NO_VNNI
from isa import VNNI, missing_features, runs_here

HAS_VNNI_HOST = runs_here(VNNI)
needs_vnni_host = pytest.mark.skipif(not HAS_VNNI_HOST, reason=f"this CPU cannot run AVX512-VNNI code (it lacks "
                                                               f"{', '.join(missing_features(VNNI))})")

S_X = 0.05  # input scale


def quantize(x, zp):
    """The slice's input quantization, in float32 as the kernels compute it."""
    return np.clip(np.round(x / np.float32(S_X)) + np.float32(zp), 0, 255).astype("uint8")


def conv_ref_int64(xq, w, stride, pad, dilation, groups, zp):
    """Integer conv2d (NCHW/OIHW), input padded with the zero point, in int64."""
    xp = np.pad(xq.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=zp)
    f, cg, kh, kw = w.shape
    oh = (xp.shape[2] - dilation * (kh - 1) - 1) // stride + 1
    ow = (xp.shape[3] - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((1, f, oh, ow), np.int64)
    fg = f // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for ry in range(kh):
            for rx in range(kw):
                y0, x0 = ry * dilation, rx * dilation
                patch = xs[:, :, y0:y0 + stride * (oh - 1) + 1:stride, x0:x0 + stride * (ow - 1) + 1:stride]
                out[:, g * fg:(g + 1) * fg] += np.einsum("ncyx,fc->nfyx", patch,
                                                         w[g * fg:(g + 1) * fg, :, ry, rx].astype(np.int64))
    return out


def epilogue_ref(acc, bias, scale, relu, requant):
    y = (acc + bias).astype("int32").astype("float32") * scale
    if relu:
        y = np.maximum(y, np.float32(0))
    if requant:
        y = quantize(y, 3)
    return y


def relax_epilogue(bb, acc, bias, scale, relu, requant):
    y = bb.emit(relax.op.multiply(relax.op.astype(relax.op.add(acc, relax.const(bias)), "float32"),
                                  relax.const(scale)))
    if relu:
        y = bb.emit(relax.op.nn.relu(y))
    if requant:
        y = bb.emit(relax_quantize(y, 3))
    return y


def relax_quantize(x, zp):
    scaled = relax.op.round(relax.op.divide(x, relax.const(S_X, "float32")))
    return relax.op.astype(relax.op.clip(relax.op.add(scaled, relax.const(float(zp), "float32")), 0, 255), "uint8")


def build_module(body, in_shape):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(in_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            gv = bb.emit_output(body(bb, x))
        bb.emit_func_output(gv)
    return tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                                     relax.transform.FuseOps(), relax.transform.FuseTIR()])(bb.get())


def compile_scheduled(mod, target, prepacked=True):
    """(executable, scheduled module): scheduled like the build does (repacks hoisted with
    prepacked=True) and compiled for `target`."""
    for g_var, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc):
            mod[g_var] = func.with_attr("target", target)
    passes = [schedules.ScheduleForTargets(prepacked_weights=prepacked)]
    if prepacked:
        passes += [relax.transform.SplitLayoutRewritePreproc(), PrepackWeights()]
    mod = tvm.transform.Sequential(passes)(mod)
    return tvm.compile(mod, target=target), mod


def compile_and_run(mod, target, x, prepacked=True):
    """`compile_scheduled`, run on this machine's VM: (output, scheduled module)."""
    executable, mod = compile_scheduled(mod, target, prepacked)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy(), mod


def scheduled_path(mod, name_part, target, prepacked=True):
    """(rule name, "dot" if the schedule calls vpdpbusd else "generic") for the PrimFunc."""
    funcs = [f for g, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and name_part in g.name_hint]
    assert len(funcs) == 1
    rule, sch = schedules.apply_rules(funcs[0], target, schedules.schedule_rules(target, prepacked))
    return type(rule).__name__, "dot" if "vpdpbusd" in sch.mod["main"].script() else "generic"


def qconv_case(cin, cout, hw, k, stride=1, pad=0, groups=1, dilation=1, zp=0, relu=True, requant=False, seed=0):
    """The quantized conv slice (x float -> u8 -> conv i32 -> dequantize epilogue) and its
    numpy reference output for a random input."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (cout, cin // groups, k, k)).astype("int8")
    bias = rng.integers(-3000, 3000, (1, cout, 1, 1)).astype("int32")
    scale = (rng.random((1, cout, 1, 1)) * 1e-3).astype("float32")
    x = (rng.random((1, cin, hw, hw)) * 12 - 1).astype("float32")  # some inputs clip at 0 and 255

    def body(bb, xv):
        xq = bb.emit(relax_quantize(xv, zp))
        conv_pad = pad
        if zp:  # a non-zero zero point pads with zp before the conv (which then pads nothing)
            xq = bb.emit(relax.op.nn.pad(xq, [0, 0, 0, 0, pad, pad, pad, pad], pad_value=float(zp)))
            conv_pad = 0
        acc = bb.emit(relax.op.nn.conv2d(xq, relax.const(w), strides=stride, padding=conv_pad, dilation=dilation,
                                         groups=groups, out_dtype="int32"))
        return relax_epilogue(bb, acc, bias, scale, relu, requant)

    ref = epilogue_ref(conv_ref_int64(quantize(x, zp), w, stride, pad, dilation, groups, zp), bias, scale, relu,
                       requant)
    return build_module(body, x.shape), x, ref


CONV_CASES = {
    # id: (kwargs, conv schedule on a VNNI target)
    "odd_cout_13": (dict(cin=16, cout=13, hw=14, k=3, pad=1), "dot"),
    "1x1_cout_37_width_11": (dict(cin=32, cout=37, hw=11, k=1), "dot"),
    "stride2_odd_width": (dict(cin=16, cout=32, hw=13, k=3, stride=2, pad=1), "dot"),
    "zero_point_pad": (dict(cin=8, cout=24, hw=9, k=3, pad=1, zp=5), "dot"),
    "dilation2_requantize": (dict(cin=12, cout=20, hw=11, k=3, pad=2, dilation=2, requant=True), "dot"),
    "5x5_no_relu_two_blocks": (dict(cin=4, cout=40, hw=12, k=5, pad=2, relu=False), "dot"),
    "first_layer_3_channels": (dict(cin=3, cout=16, hw=15, k=3, stride=2, pad=1), "generic"),
    "depthwise": (dict(cin=16, cout=16, hw=10, k=3, pad=1, groups=16), "generic"),
    "grouped": (dict(cin=16, cout=8, hw=10, k=3, pad=1, groups=2), "generic"),
}


@needs_vnni_host
@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_int8_conv_exact(case):
    kwargs, expect = CONV_CASES[case]
    mod, x, ref = qconv_case(**kwargs)
    assert scheduled_path(mod, "conv2d", VNNI) == ("Conv2d", expect)
    out, _ = compile_and_run(mod, VNNI, x)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("case", ["odd_cout_13", "zero_point_pad"])
def test_int8_conv_without_vnni_uses_generic_schedule(case):
    """A target without VNNI (haswell: AVX2) gets the generic conv schedule, still exact."""
    kwargs, _ = CONV_CASES[case]
    mod, x, ref = qconv_case(**kwargs)
    assert scheduled_path(mod, "conv2d", NO_VNNI) == ("Conv2d", "generic")
    out, _ = compile_and_run(mod, NO_VNNI, x)
    np.testing.assert_array_equal(out, ref)


@needs_vnni_host
def test_int8_conv_repack_in_kernel_without_prepacking():
    """Without prepacked weights the conv repacks its weights per call: same result."""
    mod, x, ref = qconv_case(cin=16, cout=37, hw=9, k=3, pad=1)
    out, lowered = compile_and_run(mod, VNNI, x, prepacked=False)
    np.testing.assert_array_equal(out, ref)
    assert not any(g.name_hint.endswith("_weight_prepack") for g in lowered.get_global_vars())


def qdense_case(k, n, relu=True, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (k, n)).astype("int8")
    bias = rng.integers(-3000, 3000, (1, n)).astype("int32")
    scale = (rng.random((1, n)) * 1e-3).astype("float32")
    x = (rng.random((1, k)) * 12 - 1).astype("float32")

    def body(bb, xv):
        xq = bb.emit(relax_quantize(xv, 0))
        acc = bb.emit(relax.op.matmul(xq, relax.const(w), out_dtype="int32"))
        return relax_epilogue(bb, acc, bias, scale, relu, False)

    acc = quantize(x, 0).astype(np.int64) @ w.astype(np.int64)
    return build_module(body, x.shape), x, epilogue_ref(acc, bias, scale, relu, False)


@needs_vnni_host
@pytest.mark.parametrize("k,n", [(64, 13), (30, 37), (256, 200)], ids=["n13", "k30_n37", "k256_n200"])
def test_int8_dense_exact(k, n):
    mod, x, ref = qdense_case(k, n)
    assert scheduled_path(mod, "matmul", VNNI) == ("Dense", "dot")
    out, lowered = compile_and_run(mod, VNNI, x)
    np.testing.assert_array_equal(out, ref)
    # the repack ran at compile time: main calls no repack and holds the packed weight
    assert not any(g.name_hint.endswith("_weight_prepack") for g in lowered.get_global_vars())


def test_int8_dense_needs_prepacked_weights_and_vnni():
    """Without hoisted repacks (or without VNNI) int8 dense keeps the generic GEMV: a per-call
    repack would cost more than the dot products save. Exact either way."""
    mod, x, ref = qdense_case(64, 13)
    assert scheduled_path(mod, "matmul", VNNI, prepacked=False) == ("Dense", "generic")
    assert scheduled_path(mod, "matmul", NO_VNNI) == ("Dense", "generic")
    out, _ = compile_and_run(mod, NO_VNNI, x)
    np.testing.assert_array_equal(out, ref)


def test_prepack_weights_on_lifted_parameters():
    """PrepackWeights also folds repacks of weights that LiftWeights made parameters of main:
    the parameter is replaced by its packed value (same vdevice), nothing repacks at run time."""
    mod, x, ref = qconv_case(cin=8, cout=20, hw=8, k=3, pad=1)
    conv_gv = next(g for g, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and "conv2d" in g.name_hint)
    weight = next(a for a in mod["main"].body.blocks[0].bindings[1].value.args[1].fields
                  if isinstance(a, tvm.ir.Constant))
    # lift the weight into a parameter, as tvm_mulayer's LiftWeights does
    w_var = relax.Var("w0", relax.TensorType(weight.ty.shape, weight.ty.dtype))
    main = mod["main"]
    blocks = []
    for block in main.body.blocks:
        bindings = []
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.args[0].same_as(conv_gv):
                fields = [w_var if f.same_as(weight) else f for f in value.args[1].fields]
                value = relax.Call(value.op, [value.args[0], relax.Tuple(fields)], value.attrs, value.ty_args)
            bindings.append(relax.VarBinding(binding.var, value))
        blocks.append(type(block)(bindings))
    lifted = relax.Function(list(main.params) + [w_var], relax.SeqExpr(blocks, main.body.body), main.ret_ty,
                            main.is_pure).with_attrs({**main.attrs, "num_input": 1, "params": [weight.value]})
    mod = mod.clone()
    mod.update_func(mod.get_global_var("main"), lifted)
    mod = relax.transform.Normalize()(mod)

    for g_var, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc):
            mod[g_var] = func.with_attr("target", VNNI)
    mod = tvm.transform.Sequential([schedules.ScheduleForTargets(prepacked_weights=True),
                                    relax.transform.SplitLayoutRewritePreproc(), PrepackWeights()])(mod)
    func = mod["main"]
    assert not any(g.name_hint.endswith("_weight_prepack") for g in mod.get_global_vars())
    (packed,) = func.attrs["params"]
    assert packed.shape == (2, 2, 3, 3, 16, 4)  # [F'/16, C/4, KH, KW, 16, 4], 20 -> 32 channels
    assert [p.name for p in func.params] == ["x", "w0_packed"]
    if HAS_VNNI_HOST:
        vm = relax.VirtualMachine(tvm.compile(mod, target=VNNI), tvm.cpu())
        out = vm["main"](tvm.runtime.tensor(x), packed).numpy()
        np.testing.assert_array_equal(out, ref)


def test_dot_product_by_target():
    assert dot_product_for(VNNI).lanes == 16
    assert dot_product_for(Target({"kind": "llvm", "mcpu": "sapphirerapids"})).lanes == 16
    assert dot_product_for(Target({"kind": "llvm", "mcpu": "alderlake"})).lanes == 8  # AVX-VNNI only
    assert dot_product_for(NO_VNNI) is None
    assert dot_product_for(Target({"kind": "llvm", "mcpu": "skylake-avx512"})) is None  # AVX-512 before VNNI
    assert dot_product_for(Target(cpu_processor("x86-avx512").target)).lanes == 16
    assert dot_product_for(Target("llvm")) is None


def test_int8_conv_avx_vnni_compiles():
    """AVX-VNNI (8 lanes, 256-bit) targets compile (this machine cannot run them)."""
    target = Target({"kind": "llvm", "mcpu": "alderlake", "num-cores": 2})
    mod, _, _ = qconv_case(cin=16, cout=13, hw=14, k=3, pad=1)
    func = next(f for g, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and "conv2d" in g.name_hint)
    _, sch = schedules.apply_rules(func, target)
    lib = tvm.tirx.build(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    assert "vpdpbusd" in lib.inspect_source("asm")
