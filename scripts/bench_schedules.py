#!/usr/bin/env python3
"""Per-op (and optionally whole-model) CPU benchmark of tvm_mulayer.schedules.

For every conv2d / dense PrimFunc of the chosen zoo models (as the project's ONNX frontend,
LegalizeOps and FuseOps/FuseTIR produce them, so bias + relu are fused in), time:

  * the kernel scheduled by ``schedules`` (the rule that matched is listed) as `mulayer
    compile` builds it: rules for prepacked weights, weight repacks folded at build time,
    called through a one-op Relax VM (so a blocked-weight kernel is not charged a repack per
    call, which no build runs),
  * the same kernel unscheduled (stock legalized TIR; ``--no-unscheduled`` to skip),
  * onnxruntime running the same single op (a one-node Conv/Gemm model + Relu/Clip),

all with the same thread count (TVM_NUM_THREADS is set: TVM's default is cores / 2 on x86).
Scheduled TVM and onnxruntime are timed op by op, alternating for ``--rounds`` rounds with
short pauses (so neither runtime's spinning worker threads steal the other's cores); the table
keeps each op's best time, which is what a noisy shared machine allows. Unscheduled kernels
run once in a separate process. Whole models (``--e2e``) alternate onnxruntime and TVM
processes.

    python scripts/bench_schedules.py --models squeezenet1_1,mobilenet_v1 --threads 2 --e2e

``--e2e`` also builds each model CPU-only (every PrimFunc scheduled) and times it against
onnxruntime on the whole ONNX model, and reports the compile time.

GPU (float16 slices, for the GPU host; see the GPU section below):

    python scripts/bench_schedules.py --gpu-pack .carry/gpubench   # here: kernels, models, fatbins
    sh .carry/gpubench/run.sh $OUT                                 # there, with the TVM runtime only
    python scripts/bench_schedules.py --gpu-report $OUT/gpu_bench_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("vgg16", "alexnet", "googlenet", "squeezenet1_1", "mobilenet_v1")


# ----------------------------------------------------------------------------- shared
def _setup_path():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def _schedules():
    _setup_path()
    try:
        from tvm_mulayer import schedules  # pylint: disable=import-outside-toplevel
    except ImportError:
        import schedules  # type: ignore  # pylint: disable=import-outside-toplevel
    return schedules


def cpu_target(threads: int):
    """LLVM for this host's CPU, or for the `--mcpu` given (BENCH_MCPU in the workers: e.g.
    haswell, to time AVX2 code on an AVX-512 machine)."""
    import tvm  # pylint: disable=import-outside-toplevel

    mcpu = os.environ.get("BENCH_MCPU") or tvm.target.codegen.llvm_get_system_cpu()
    spec = {"kind": "llvm", "num-cores": threads}
    if mcpu and mcpu != "generic":
        spec["mcpu"] = mcpu
    return tvm.target.Target(spec)


def schedule_module(mod, prepack: bool):
    """Every PrimFunc of `mod` scheduled by the rules. With `prepack`, the way `mulayer
    compile` builds CPU slices: rules for prepacked weights, the marked weight repacks moved
    into their own PrimFuncs and folded into constants (run once, at build time)."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    mod = _schedules().ScheduleForTargets(prepacked_weights=prepack)(mod)
    if prepack:
        mod = relax.transform.SplitLayoutRewritePreproc()(mod)
        mod = relax.transform.FoldConstant()(mod)
    return mod


def single_op_vm(func, target):
    """(VM, input) running the one conv/dense PrimFunc `func` (already scheduled, or left to
    the rules) on its first argument, its weights (random) as constants, through
    `schedule_module` with prepacked weights: what the op costs inside a model compiled by
    the project."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax  # pylint: disable=import-outside-toplevel

    x, *weights, out = _args_for(func)
    bb = relax.BlockBuilder()
    param = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
    with bb.function("main", [param]):
        op = bb.add_func(func.with_attr("target", target), "op")
        y = bb.emit(relax.call_tir(op, [param] + [relax.const(w.numpy()) for w in weights],
                                   relax.TensorType(out.shape, str(out.dtype))))
        bb.emit_func_output(y)
    mod = schedule_module(bb.get(), prepack=True)
    return relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu()), x


def model_onnx(name: str):
    _setup_path()
    from tvm_mulayer.base import zoo  # pylint: disable=import-outside-toplevel

    return zoo.build(name)


def model_relax(name: str):
    """(fused legalized IRModule, onnx model) the way the project's build sees them."""
    _setup_path()
    from tvm import relax  # pylint: disable=import-outside-toplevel
    from tvm_mulayer.compiler import frontend  # pylint: disable=import-outside-toplevel

    onnx_model = model_onnx(name)
    mod, _ = frontend.import_onnx(onnx_model)
    mod = relax.transform.LegalizeOps()(mod)
    mod = relax.transform.AnnotateTIROpPattern()(mod)
    mod = relax.transform.FuseOps()(mod)
    mod = relax.transform.FuseTIR()(mod)
    return mod, onnx_model


def op_specs(name: str):
    """conv2d / dense PrimFuncs of a model: [(func_name, PrimFunc, spec dict)]."""
    from tvm import s_tir, tirx  # pylint: disable=import-outside-toplevel

    schedules = _schedules()
    ConvInfo, find_conv_block = schedules.analysis.ConvInfo, schedules.analysis.find_conv_block
    mod, _ = model_relax(name)
    main_text = mod["main"].script()
    out = []
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        fname = gv.name_hint
        calls = len(re.findall(r"call_tir\((?:cls\.)?" + re.escape(fname) + r"[,)]", main_text))
        shapes = [[int(s) for s in p.ty.shape] for p in func.params]
        act = "relu" if "relu" in fname else ("clip" if "clip" in fname else None)
        bias = "_add" in fname
        sch = s_tir.Schedule(func)
        conv = find_conv_block(sch)
        if conv is not None:
            info = ConvInfo(sch, conv)
            pads = [0, 0, 0, 0]
            blocks = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
                      if sch.get(b).name_hint == "pad_temp"]
            if blocks:
                pshape = [int(s) for s in sch.get(blocks[0]).writes[0].source.shape]
                ph, pw = pshape[2] - shapes[0][2], pshape[3] - shapes[0][3]
                pads = [ph // 2, pw // 2, ph - ph // 2, pw - pw // 2]
            groups = shapes[0][1] // info.rc
            flops = 2 * info.f * info.rc * info.kh * info.kw * info.oh * info.ow
            spec = dict(kind="conv", x=shapes[0], w=shapes[1], stride=info.stride_h, pads=pads,
                        groups=groups, bias=bias, act=act, out=shapes[-1], flops=flops, calls=calls)
            desc = (f"conv {shapes[1][1] * groups}->{shapes[1][0]} {shapes[0][2]}x{shapes[0][3]} "
                    f"k{info.kh} s{info.stride_h}" + (f" g{groups}" if groups > 1 else ""))
            out.append((fname, func, spec, desc))
            continue
        if fname.startswith("fused_matmul") or fname.startswith("matmul"):
            if len(shapes[0]) == 2 and len(shapes[1]) == 2 and shapes[0][0] == 1:
                k, n = shapes[1]
                spec = dict(kind="dense", x=shapes[0], w=shapes[1], bias=bias, act=act,
                            out=shapes[-1], flops=2 * k * n, calls=calls)
                out.append((fname, func, spec, f"dense {k}->{n}"))
    return out


# ----------------------------------------------------------------------------- workers
def _args_for(func, seed=0):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(seed)
    return [tvm.runtime.tensor(rng.standard_normal([int(s) for s in p.ty.shape]).astype(str(p.ty.dtype)))
            for p in func.params]


CLOCK = {"name": "wall"}


def _now():
    """Wall clock, or this thread's CPU time ("cpu" clock, single-threaded runs only): on a
    shared machine the CPU time leaves out the time the process waits for a core."""
    return time.thread_time() if CLOCK["name"] == "cpu" else time.perf_counter()


def _best_of(fn, budget_s, repeat=3):
    fn()
    t0 = _now()
    fn()
    first = max(_now() - t0, 1e-6)
    number = max(1, min(200, int(budget_s / repeat / first)))
    best = float("inf")
    for _ in range(repeat):
        t0 = _now()
        for _ in range(number):
            fn()
        best = min(best, (_now() - t0) / number)
    return best * 1e3


def _time_lib(lib, args, budget_s=1.0):
    import tvm  # pylint: disable=import-outside-toplevel

    if CLOCK["name"] == "cpu":
        func = lib["main"]
        return _best_of(lambda: func(*args), budget_s)
    t0 = time.perf_counter()
    lib["main"](*args)
    first = time.perf_counter() - t0
    number = max(1, min(50, int(budget_s / 3 / max(first, 1e-6))))
    repeat = 3 if first * number * 3 < budget_s * 2 else 1
    te = lib.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat)
    return min(te(*args).results) * 1e3


def worker_tvm(models, threads, scheduled: bool, max_unsched_gflop: float):
    import tvm  # pylint: disable=import-outside-toplevel

    schedules = _schedules()
    target = cpu_target(threads)
    res = {}
    for model in models:
        for fname, func, spec, _ in op_specs(model):
            key = f"{model}/{fname}"
            if not scheduled and spec["flops"] / 1e9 > max_unsched_gflop:
                res[key] = {"ms": None}
                continue
            rule = None
            f = func
            if scheduled:
                rule, sch = schedules.apply_rules(func, target)
                if sch is not None:
                    f = sch.mod["main"]
            lib = tvm.tirx.build(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target)
            ms = _time_lib(lib, _args_for(func), budget_s=1.0 if scheduled else 0.1)
            res[key] = {"ms": ms, "rule": repr(rule) if rule is not None else None}
    return res


def _onnx_single(spec):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from onnx import TensorProto, helper, numpy_helper  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    w = rng.standard_normal(spec["w"]).astype("float32")
    inits = [numpy_helper.from_array(w, "W")]
    inputs = ["x", "W"]
    nb = spec["w"][0] if spec["kind"] == "conv" else spec["w"][1]
    if spec["bias"]:
        inits.append(numpy_helper.from_array(rng.standard_normal([nb]).astype("float32"), "B"))
        inputs.append("B")
    if spec["kind"] == "conv":
        k = spec["w"][2:]
        node = helper.make_node("Conv", inputs, ["y0"], kernel_shape=k, strides=[spec["stride"]] * 2,
                                pads=spec["pads"], group=spec["groups"])
    else:
        node = helper.make_node("Gemm", inputs, ["y0"])
    nodes = [node]
    if spec["act"] == "relu":
        nodes.append(helper.make_node("Relu", ["y0"], ["y"]))
    elif spec["act"] == "clip":
        inits += [numpy_helper.from_array(np.array(0, "float32"), "lo"),
                  numpy_helper.from_array(np.array(6, "float32"), "hi")]
        nodes.append(helper.make_node("Clip", ["y0", "lo", "hi"], ["y"]))
    else:
        nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "op", [helper.make_tensor_value_info("x", TensorProto.FLOAT, spec["x"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, spec["out"])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _ort_session(model_bytes, threads):
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _time_ort(sess, feed, budget_s=1.0):
    if CLOCK["name"] == "cpu":
        return _best_of(lambda: sess.run(None, feed), budget_s)
    for _ in range(3):
        sess.run(None, feed)
    best = float("inf")
    t_end = time.perf_counter() + budget_s
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t0 < budget_s / 3:
            sess.run(None, feed)
            n += 1
            if time.perf_counter() > t_end + budget_s:
                break
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e3


def worker_ort(models, threads):
    import numpy as np  # pylint: disable=import-outside-toplevel

    res = {}
    for model in models:
        for fname, _, spec, _ in op_specs(model):
            sess = _ort_session(_onnx_single(spec), threads)
            x = np.random.default_rng(1).standard_normal(spec["x"]).astype("float32")
            res[f"{model}/{fname}"] = {"ms": _time_ort(sess, {"x": x})}
    return res


def worker_pair(models, threads, rounds):
    """Scheduled TVM (as the build runs it: `single_op_vm`) and onnxruntime, alternating op by
    op (pauses let the other runtime's spinning worker threads go to sleep), best of
    ``rounds``."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    schedules = _schedules()
    target = cpu_target(threads)
    res = {}
    for model in models:
        for fname, func, spec, _ in op_specs(model):
            rule, sch = schedules.apply_rules(func, target, schedules.schedule_rules(target, prepacked_weights=True))
            # scheduled once here (the table names the rule); schedule_module leaves it as is
            scheduled = sch.mod["main"].with_attr("tirx.is_scheduled", True) if sch is not None else func
            vm, tvm_x = single_op_vm(scheduled, target)
            sess = _ort_session(_onnx_single(spec), threads)
            x = np.random.default_rng(1).standard_normal(spec["x"]).astype("float32")
            best_t, best_o = float("inf"), float("inf")
            for _ in range(rounds):
                time.sleep(0.05)
                best_o = min(best_o, _time_ort(sess, {"x": x}, budget_s=0.3))
                time.sleep(0.05)
                best_t = min(best_t, _best_of(lambda: vm["main"](tvm_x), 0.3))
            res[f"{model}/{fname}"] = {"ms": best_t, "ort_ms": best_o,
                                        "rule": repr(rule) if rule is not None else None}
    return res


def worker_e2e_tvm(model, threads, prepack=False):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax, tirx  # pylint: disable=import-outside-toplevel

    target = cpu_target(threads)
    t0 = time.perf_counter()
    mod, _ = model_relax(model)
    for gv, f in list(mod.functions_items()):
        if isinstance(f, tirx.PrimFunc):
            mod[gv] = f.with_attr("target", target)
    mod = schedule_module(mod, prepack)
    t1 = time.perf_counter()
    ex = tvm.compile(mod, target=target)
    t2 = time.perf_counter()
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32"))
    vm["main"](x)
    ms = _best_of(lambda: vm["main"](x), 2.0, repeat=5)
    return {"ms": ms, "schedule_s": t1 - t0, "compile_s": t2 - t1}


def worker_e2e_ort(model, threads):
    import numpy as np  # pylint: disable=import-outside-toplevel

    sess = _ort_session(model_onnx(model).SerializeToString(), threads)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32")
    return {"ms": _time_ort(sess, {name: x}, budget_s=2.0)}


# ----------------------------------------------------------------------------- GPU: float16 forms
# The quantized GPU slices compute conv2d/matmul(astype(x, float16), float16 w, out_dtype=float32)
# followed by a float32 bias/activation. `--gpu-pack DIR` builds (here, with the compiler) every
# zoo layer shape in that form and in float32, each with the current rules and with a baseline
# revision's rules (GPU_VARIANTS), and whole models GPU-only the same four ways; CUDA sources
# are compiled to fatbins here (nvcc 13.0, as on the host). `sh DIR/run.sh $OUT` then runs on
# the GPU host with only the TVM runtime:
# PyTorch fp16 eager peers first (fresh processes), every kernel checked against a float64
# numpy reference and timed, then the models.
GPU_ARCH = "sm_90"
# what is built and compared: (rules revision, slice precision) per variant
GPU_VARIANTS = {"fp16_new": ("new", "fp16"), "fp16_old": ("old", "fp16"), "fp32_new": ("new", "fp32"),
                "fp32_old": ("old", "fp32")}
GPU_TAILS = (  # split tails: (model, layer index among the zoo's layers, channels kept)
    ("vgg16", 1, 37), ("alexnet", 0, 13), ("googlenet", 2, 13), ("squeezenet1_1", 3, 37),
    ("mobilenet_v1", 1, 37), ("vgg16", 13, 37), ("alexnet", 6, 13))


def gpu_target():
    import tvm  # pylint: disable=import-outside-toplevel

    return tvm.target.Target({"kind": "cuda", "arch": GPU_ARCH}, host={"kind": "llvm"})


def gpu_layers(models):
    """(tag, Layer) for every zoo layer shape at full width, plus the split tails above."""
    _setup_path()
    from tvm_mulayer.compiler.frontend import import_onnx  # pylint: disable=import-outside-toplevel
    from tvm_mulayer.base.layers import find_layers  # pylint: disable=import-outside-toplevel
    from tvm_mulayer.base.records import config_key

    seen, out = set(), []
    for model in models:
        layers = [l for l in find_layers(import_onnx(model_onnx(model))[0]["main"]) if l.splittable]
        keep = [(l, f"{model}") for l in layers]
        keep += [(layers[i].part(ch), f"{model} tail") for m, i, ch in GPU_TAILS if m == model]
        for layer, tag in keep:
            key = config_key(layer)
            if key not in seen:
                seen.add(key)
                out.append((tag, layer))
    return out


def layer_desc(layer) -> str:
    if layer.op == "dense":
        return f"dense {layer.weight_shape[0]}->{layer.weight_shape[1]}"
    cin, hw = layer.input_shape[1], f"{layer.input_shape[2]}x{layer.input_shape[3]}"
    return (f"conv {cin}->{layer.channels} {hw} k{layer.weight_shape[2]} s{layer.strides[0]}"
            + (f" g{layer.groups}" if layer.groups > 1 else ""))


def layer_flops(layer) -> int:
    w = layer.weight_shape
    if layer.op == "dense":
        return 2 * w[0] * w[1]
    return 2 * w[0] * w[1] * w[2] * w[3] * layer.output_shape[2] * layer.output_shape[3]


def precision_layer(bb, x, w, layer, precision):
    """The layer as the quantization pass emits it: float16 operands, float32 accumulator."""
    from tvm.relax import op  # pylint: disable=import-outside-toplevel

    if precision == "fp16":
        x = bb.emit(op.astype(x, "float16"))
    out_dtype = "float32"
    if layer.op == "conv2d":
        return bb.emit(op.nn.conv2d(x, w, strides=layer.strides, padding=layer.padding, dilation=layer.dilation,
                                    groups=layer.groups, out_dtype=out_dtype))
    return bb.emit(op.matmul(x, w, out_dtype=out_dtype))


def layer_kernel(layer, precision):
    """The fused conv/dense PrimFunc (bias + relu fused in) of one layer in one precision."""
    from tvm import relax, tirx  # pylint: disable=import-outside-toplevel
    from tvm.relax import op  # pylint: disable=import-outside-toplevel

    w_dtype = "float16" if precision == "fp16" else "float32"
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(layer.input_shape, "float32"))
    w = relax.Var("w", relax.TensorType(layer.weight_shape, w_dtype))
    b = relax.Var("b", relax.TensorType((1, layer.channels, 1, 1) if layer.op == "conv2d" else (1, layer.channels),
                                        "float32"))
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            y = precision_layer(bb, x, w, layer, precision)
            out = bb.emit_output(op.nn.relu(op.add(y, b)))
        bb.emit_func_output(out)
    mod = _fuse(bb.get())
    return next(f for gv, f in mod.functions_items()
                if isinstance(f, tirx.PrimFunc) and gv.name_hint.startswith(("fused_conv2d", "fused_matmul")))


def _fuse(mod):
    from tvm import relax  # pylint: disable=import-outside-toplevel

    for transform in (relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                      relax.transform.FuseOps(), relax.transform.FuseTIR()):
        mod = transform(mod)
    return mod


def schedules_at(rev: str | None, package: str):
    """The `schedules` package as committed at `rev`, imported as `package`, so that two
    revisions' rules build the same kernels (and others' uncommitted edits stay out). rev None:
    the revision before schedules/gpu/tensor_core.py was added (the rules without tensor cores)."""
    import importlib  # pylint: disable=import-outside-toplevel
    import io  # pylint: disable=import-outside-toplevel
    import tarfile  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel

    if rev is None:
        added = subprocess.run(["git", "-C", ROOT, "log", "--diff-filter=A", "--format=%H", "--",
                                "schedules/gpu/tensor_core.py"], capture_output=True, text=True, check=True)
        rev = added.stdout.split()[-1] + "~1"
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix=f"{package}-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "schedules"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp)
    os.rename(os.path.join(tmp, "schedules"), os.path.join(tmp, package))
    sys.path.insert(0, tmp)
    return importlib.import_module(package), rev


def _cuda_sources(module):
    """CUDA source of every CUDA module inside a built module."""
    found = []
    if module.kind == "cuda":
        found.append(module.inspect_source())
    for sub in module.imports:
        found += _cuda_sources(sub)
    return found


def _export_gpu(lib, path, fatbins):
    """Export a built module; compile its CUDA source to a fatbin here, keyed by the source's
    SHA-256 (the host's load-time callback looks it up instead of running nvcc)."""
    import hashlib  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel

    lib.export_library(str(path))
    for code in _cuda_sources(lib):
        digest = hashlib.sha256(code.encode()).hexdigest()
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "k.cu")
            with open(src, "w", encoding="utf-8") as fh:
                fh.write(code)
            subprocess.run(["nvcc", "-fatbin", "-O3", f"-arch={GPU_ARCH}", "-o",
                            os.path.join(fatbins, digest + ".fatbin"), src], check=True)


def gpu_pack(out_dir, models, rules_rev="HEAD", baseline_rev=None):
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import tirx  # pylint: disable=import-outside-toplevel

    schedules, new_rev = schedules_at(rules_rev, "rules_new")
    old, rev = schedules_at(baseline_rev, "rules_old")
    target = gpu_target()
    fatbins = os.path.join(out_dir, "fatbins")
    os.makedirs(fatbins, exist_ok=True)
    cases = gpu_layers(models)
    kernels = []
    packages = {"new": schedules, "old": old}
    for variant, (rules, precision) in GPU_VARIANTS.items():
        package = packages[rules]
        funcs = {}
        for index, (tag, layer) in enumerate(cases):
            func = layer_kernel(layer, precision)
            rule, sch = package.apply_rules(func, target)
            funcs[f"k{index}"] = sch.mod["main"].with_attr("global_symbol", f"k{index}")
            if variant == "fp16_new":
                kernels.append({"name": f"k{index}", "tag": tag, "desc": layer_desc(layer), "op": layer.op,
                                "x": list(layer.input_shape), "w": list(layer.weight_shape),
                                "out": list(layer.output_shape), "strides": list(layer.strides),
                                "padding": list(layer.padding), "groups": layer.groups,
                                "flops": layer_flops(layer), "rules": {}})
            kernels[index]["rules"][variant] = repr(rule)
        lib = tirx.build(tvm.IRModule(funcs), target=target)
        if variant == "fp16_new":
            source = "\n".join(_cuda_sources(lib))
            for index, kernel in enumerate(kernels):  # which kernels run on tensor cores
                body = source.split(f"k{index}_kernel(")[-1].split("extern \"C\"")[0]
                kernel["tensor_core"] = "wmma::mma_sync" in body
        _export_gpu(lib, os.path.join(out_dir, f"ops_{variant}.so"), fatbins)
        print(f"packed {len(funcs)} kernels ({variant})", file=sys.stderr, flush=True)
    model_runs = []
    for model in models:
        for variant, (rules, precision) in GPU_VARIANTS.items():  # both precisions with both revisions' rules
            package = packages[rules]
            t0 = time.perf_counter()
            ex, weights = gpu_model(model, precision, package, target)
            path = f"model_{model}_{variant}.so"
            _export_gpu(ex, os.path.join(out_dir, path), fatbins)
            model_runs.append({"model": model, "variant": variant, "precision": precision, "lib": path,
                               "weights": weights, "rules": rev if package is old else new_rev,
                               "build_s": time.perf_counter() - t0})
            print(f"packed {path}", file=sys.stderr, flush=True)
    with open(os.path.join(out_dir, "gpu_bench.json"), "w", encoding="utf-8") as fh:
        json.dump({"kernels": kernels, "models": model_runs, "baseline": rev, "rules": new_rev, "arch": GPU_ARCH,
                   "date": time.strftime("%Y-%m-%d")}, fh, indent=1)
    write_gpu_runner(out_dir)


def write_gpu_runner(out_dir):
    """What the GPU host needs besides the built kernels: the TVM runtime, the tvm-ffi wheel
    for its Python (3.12), and run.sh."""
    from pathlib import Path  # pylint: disable=import-outside-toplevel

    _setup_path()
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import gpu_host_run  # pylint: disable=import-outside-toplevel

    here = os.path.relpath(out_dir, ROOT)
    with open(os.path.join(out_dir, "run.sh"), "w", encoding="utf-8") as fh:
        fh.write("set -e\n" + gpu_host_run.runtime_setup(Path(out_dir), here, ["3.12"]) +
                 f"python3 scripts/bench_schedules.py --gpu-run {here} --out \"$1/gpu_bench_results.json\"\n")


def gpu_model(model, precision, package, target):
    """(built VM executable, [[shape, dtype] of each weight]) of a zoo model, GPU-only: every
    conv/dense weight becomes a parameter in `precision` (float16: the input is cast to
    float16 before the layer, the accumulator is float32); every PrimFunc scheduled by `package`."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax, tirx  # pylint: disable=import-outside-toplevel

    _setup_path()
    from tvm_mulayer.compiler.frontend import import_onnx  # pylint: disable=import-outside-toplevel

    mod, _ = import_onnx(model_onnx(model))

    @relax.expr_functor.mutator
    class WeightsAsParams(relax.PyExprMutator):  # pylint: disable=abstract-method
        def __init__(self):
            super().__init__(mod)
            self.params = []

        def visit_call_(self, call):  # pylint: disable=arguments-renamed
            call = super().visit_call_(call)
            name = getattr(call.op, "name", "")
            if name not in ("relax.nn.conv2d", "relax.matmul") or not isinstance(call.args[1], tvm.ir.Constant):
                return call
            shape = [int(d) for d in call.args[1].ty.shape]
            w = relax.Var(f"w{len(self.params)}", relax.TensorType(shape, "float16" if precision == "fp16" else "float32"))
            self.params.append(w)
            x = call.args[0]
            if precision == "fp16":
                x = self.builder_.emit(relax.op.astype(x, "float16"))
            if name == "relax.matmul":
                return relax.op.matmul(x, w, out_dtype="float32")
            a = call.attrs
            return relax.op.nn.conv2d(x, w, strides=a.strides, padding=a.padding, dilation=a.dilation,
                                      groups=a.groups, out_dtype="float32")

    rewrite = WeightsAsParams()
    main = mod["main"]
    body = rewrite.visit_expr(main.body)
    mod["main"] = relax.Function(list(main.params) + rewrite.params, body, attrs=main.attrs)
    mod = _fuse(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc):
            mod[gv] = func.with_attr("target", target)
    mod = package.ScheduleForTargets()(mod)
    ex = tvm.compile(mod, target=target)
    return ex.mod, [[[int(d) for d in p.ty.shape], str(p.ty.dtype)] for p in rewrite.params]


def gpu_reference(kernel, x, w, b):
    """float64 relu(layer(x, w) + b) in numpy, from the same (float16-rounded) operands."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    x, w, b = (np.asarray(a, dtype=np.float64) for a in (x, w, b))
    if kernel["op"] == "dense":
        return np.maximum(x @ w + b, 0)
    top, left, bottom, right = kernel["padding"]
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    f, cg, kh, kw = w.shape
    sh, sw = kernel["strides"]
    oh, ow = kernel["out"][2], kernel["out"][3]
    windows = np.lib.stride_tricks.sliding_window_view(x[0], (kh, kw), axis=(1, 2))[:, ::sh, ::sw][:, :oh, :ow]
    groups = kernel["groups"]
    fg = f // groups
    out = np.empty((f, oh, ow))
    for g in range(groups):  # windows[c, y, x, ky, kx]
        out[g * fg:(g + 1) * fg] = np.tensordot(w[g * fg:(g + 1) * fg], windows[g * cg:(g + 1) * cg],
                                                axes=([1, 2, 3], [0, 3, 4]))
    return np.maximum(out[None] + b, 0)


def _load_gpu_lib(directory, name):
    import hashlib  # pylint: disable=import-outside-toplevel

    import tvm  # pylint: disable=import-outside-toplevel
    from tvm_mulayer.runtime import devices  # pylint: disable=import-outside-toplevel

    devices.enable_cuda_runtime()
    fatbins = os.path.join(directory, "fatbins")

    def fatbin(code, target=None):
        path = os.path.join(fatbins, hashlib.sha256(code.encode()).hexdigest() + ".fatbin")
        if os.path.exists(path):
            with open(path, "rb") as fh:
                return bytearray(fh.read())
        print(f"no prebuilt fatbin for {name}: nvcc here", file=sys.stderr)
        return devices.cuda_compile_callback(code, target)

    tvm.register_global_func("tvm_callback_cuda_compile", fatbin, override=True)
    return tvm.runtime.load_module(os.path.join(directory, name))


def _gpu_time_ms(fn, dev, repeat):
    import numpy as np  # pylint: disable=import-outside-toplevel

    for _ in range(3):
        fn()
    dev.sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        dev.sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _variant(run: dict) -> str:
    """A model run's GPU_VARIANTS key; packs and results from before the variants were named
    hold only the precision (fp16 built with the new rules, fp32 with the old)."""
    return run.get("variant", {"fp16": "fp16_new", "fp32": "fp32_old"}[run["precision"]])


def gpu_run(directory, out_path):
    import numpy as np  # pylint: disable=import-outside-toplevel

    with open(os.path.join(directory, "gpu_bench.json"), encoding="utf-8") as fh:
        spec = json.load(fh)
    results = {"peers": {}, "kernels": [], "models": [], "baseline": spec["baseline"], "rules": spec["rules"],
               "date": spec["date"]}
    for model in sorted({m["model"] for m in spec["models"]}):
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--gpu-peer", model],
                              capture_output=True, text=True, check=False)
        results["peers"][model] = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                                   else {"error": done.stderr[-1000:]})
        print(model, results["peers"][model], flush=True)

    def save():  # after every section: a failure later keeps what was measured
        with open(out_path, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)

    save()
    import tvm  # pylint: disable=import-outside-toplevel

    dev = tvm.cuda(0)
    libs = {v: _load_gpu_lib(directory, f"ops_{v}.so") for v in GPU_VARIANTS}
    rng = np.random.default_rng(0)
    for kernel in spec["kernels"]:
        bias_shape = [1, kernel["out"][1], 1, 1] if kernel["op"] == "conv2d" else [1, kernel["out"][1]]
        x = rng.standard_normal(kernel["x"])
        w = rng.standard_normal(kernel["w"]) / np.sqrt(np.prod(kernel["w"][1:] if kernel["op"] == "conv2d"
                                                               else kernel["w"][:1]))
        b = rng.standard_normal(bias_shape)
        row = {k: kernel[k] for k in ("name", "tag", "desc", "flops", "rules", "tensor_core")}
        reference = {}
        for variant, lib in libs.items():
            dtype = "float16" if variant.startswith("fp16") else "float32"
            xs, ws = x.astype(dtype), w.astype(dtype)
            try:
                args = [tvm.runtime.tensor(a, dev) for a in (xs, ws, b.astype("float32"))]
                out = tvm.runtime.tensor(np.zeros(kernel["out"], "float32"), dev)
                lib[kernel["name"]](*args, out)
                if dtype not in reference:
                    reference[dtype] = gpu_reference(kernel, xs, ws, b.astype("float32"))
                ref = reference[dtype]
                row[f"{variant}_rel_error"] = float(np.max(np.abs(out.numpy() - ref)) / max(np.max(np.abs(ref)), 1e-30))
                timer = lib.time_evaluator(kernel["name"], dev, number=10, repeat=5)
                row[f"{variant}_ms"] = float(min(timer(*args, out).results) * 1e3)
            except Exception as err:  # pylint: disable=broad-except
                row[f"{variant}_error"] = f"{type(err).__name__}: {err}"[-500:]
        results["kernels"].append(row)
        print(kernel["desc"], {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()
                               if k.endswith(("_ms", "_rel_error", "_error"))}, flush=True)
    save()
    outputs = {}  # (model, precision) -> output of the first variant: new and old rules agree?
    for run in spec["models"]:
        row = {k: run[k] for k in ("model", "precision", "rules", "build_s")}
        row["variant"] = _variant(run)
        try:
            # the same input and weights for every variant of a model
            seed = sum(ord(c) for c in run["model"])
            result, output = _gpu_model_run(directory, run, dev, np.random.default_rng(seed))
            row.update(result)
            first = outputs.setdefault((run["model"], run["precision"]), (row["variant"], output))
            if first[0] != row["variant"]:
                row["rel_diff_vs_" + first[0]] = float(np.max(np.abs(output - first[1])) /
                                                       max(np.max(np.abs(first[1])), 1e-30))
        except Exception as err:  # pylint: disable=broad-except
            row["error"] = f"{type(err).__name__}: {err}"[-1000:]
        results["models"].append(row)
        print(json.dumps(row), flush=True)
        save()


def _gpu_model_run(directory, run, dev, rng):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel
    import tvm.runtime.vm  # pylint: disable=import-outside-toplevel  # not imported by `import tvm` (runtime only)

    lib = _load_gpu_lib(directory, run["lib"])
    vm = tvm.runtime.vm.VirtualMachine(lib, [dev, tvm.cpu()])
    x = tvm.runtime.tensor(rng.standard_normal((1, 3, 224, 224)).astype("float32"), dev)
    weights = []
    for shape, dtype in run["weights"]:  # He-scaled, so activations stay in float16 range
        fan_in = np.prod(shape[1:]) if len(shape) == 4 else shape[0]
        weights.append(tvm.runtime.tensor((rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(dtype), dev))
    main = vm["main"]
    output = main(x, *weights).numpy()
    return ({"finite": bool(np.isfinite(output).all()), "median_ms": _gpu_time_ms(lambda: main(x, *weights), dev, 50)},
            output.astype("float64"))


def gpu_peer(model):
    """PyTorch (cuDNN) float16 eager and CUDA-graph latency of a zoo model (fresh process)."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from torch_peer import time_torch  # pylint: disable=import-outside-toplevel

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32")
    result = time_torch(model_onnx(model), x, 50)
    result.pop("output")
    print(json.dumps(result))


def gpu_report(results_path) -> str:
    """Markdown tables (per model, per op) of a --gpu-run results file."""
    with open(results_path, encoding="utf-8") as fh:
        res = json.load(fh)
    lines = [f"Rules: new = `{res['rules']}`, old = `{res['baseline']}`; date {res['date']}.", "",
             "| model | GPU-only fp16, new rules ms | GPU-only fp16, old rules ms | GPU-only fp32, new rules ms | "
             "GPU-only fp32, old rules ms | PyTorch fp16 eager ms | PyTorch fp16 CUDA graph ms | "
             "fp16 new / PyTorch eager | fp16 old / PyTorch eager | fp16 new / PyTorch graph | fp32 old / fp32 new |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    models = {}
    for row in res["models"]:
        variant = _variant(row)
        models.setdefault(row["model"], {})[variant] = row.get("median_ms") if row.get("finite", True) else None

    def ratio(a, b):
        return _fmt(a / b if a and b else None, 2)

    for model, ms in models.items():
        peer = res["peers"].get(model, {})
        eager, graph = peer.get("eager_ms"), peer.get("graph_ms")
        new, old16, new32, old32 = (ms.get(v) for v in GPU_VARIANTS)
        lines.append(f"| {model} | {_fmt(new)} | {_fmt(old16)} | {_fmt(new32)} | {_fmt(old32)} | {_fmt(eager)} | "
                     f"{_fmt(graph)} | {ratio(new, eager)} | {ratio(old16, eager)} | {ratio(new, graph)} | "
                     f"{ratio(old32, new32)} |")
    lines += ["", "| model | layer | tensor cores | GFLOP | fp16 new ms | fp16 old ms | fp32 new ms | fp32 old ms | "
              "fp16 old / new | fp32 old / new | TFLOP/s (fp16 new) | max rel. error (fp16 new / fp32 new) |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in res["kernels"]:
        new, old16, new32, old32 = (k.get(f"{v}_ms") for v in GPU_VARIANTS)
        lines.append(f"| {k['tag']} | {k['desc']} | {'yes' if k['tensor_core'] else 'no'} | {k['flops'] / 1e9:.3f} | "
                     f"{_fmt(new, 4)} | {_fmt(old16, 4)} | {_fmt(new32, 4)} | {_fmt(old32, 4)} | "
                     f"{ratio(old16, new)} | {ratio(old32, new32)} | "
                     f"{_fmt(k['flops'] / new / 1e9 if new else None, 1)} | {k.get('fp16_new_rel_error', float('nan')):.1e}"
                     f" / {k.get('fp32_new_rel_error', float('nan')):.1e} |")
    failed = [f"{k['desc']} ({v})" for k in res["kernels"] for v in GPU_VARIANTS
              if f"{v}_error" in k or k.get(f"{v}_rel_error", 0) > 1e-3]
    lines += ["", f"Kernels over the 1e-3 relative tolerance or failed: {', '.join(failed) or 'none'}."]
    diffs = [f"{row['model']} {row['variant']} vs {key[len('rel_diff_vs_'):]}: {row[key]:.1e}"
             for row in res["models"] for key in row if key.startswith("rel_diff_vs_")]
    broken = [f"{row['model']} {row.get('variant', row['precision'])}" for row in res["models"]
              if "error" in row or not row.get("finite", False)]
    lines += ["", f"Whole models, max |difference| / max |output| between rules on the same input and weights: "
              f"{'; '.join(diffs) or '-'}. Failed or non-finite: {', '.join(broken) or 'none'}."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver
def _run_worker(args_list, threads):
    env = dict(os.environ)
    env["BENCH_CLOCK"] = CLOCK["name"]
    env["TVM_NUM_THREADS"] = str(threads)  # TVM's default is cores/2 on x86
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker"] + args_list,
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise RuntimeError(f"worker {args_list} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _merge_min(acc, new):
    for k, v in new.items():
        if k not in acc or (v.get("ms") is not None and (acc[k].get("ms") is None or v["ms"] < acc[k]["ms"])):
            acc[k] = v
    return acc


def _fmt(x, nd=3):
    return "–" if x is None else (f"{x:.{nd}f}" if x < 100 else f"{x:.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds (best kept)")
    ap.add_argument("--no-unscheduled", action="store_true")
    ap.add_argument("--max-unscheduled-gflop", type=float, default=1.0,
                    help="skip unscheduled timing of bigger ops (they take seconds each)")
    ap.add_argument("--e2e", action="store_true", help="also time whole models CPU-only")
    ap.add_argument("--prepack", action="store_true",
                    help="with --e2e: also time ScheduleForTargets(prepacked_weights=True) + "
                         "SplitLayoutRewritePreproc + FoldConstant (weight repacks done at build time)")
    ap.add_argument("--clock", choices=["auto", "wall", "cpu"], default="auto",
                    help="cpu: per-thread CPU time (only with --threads 1); auto: cpu for 1 thread")
    ap.add_argument("--mcpu", help="compile for this LLVM CPU instead of the host's (e.g. haswell: AVX2 code)")
    ap.add_argument("--out", help="write the markdown table here too")
    ap.add_argument("--gpu-pack", metavar="DIR", help="build the float16/float32 GPU kernels and models "
                    "of --models for the GPU host into DIR (then: sh DIR/run.sh $OUT there)")
    ap.add_argument("--rules-rev", default="HEAD", help="with --gpu-pack: git revision of the new rules")
    ap.add_argument("--baseline-rev", help="with --gpu-pack: git revision of the old rules "
                    "(default: the one before schedules/gpu/tensor_core.py was added)")
    ap.add_argument("--gpu-run", metavar="DIR", help="(on the GPU host) run what --gpu-pack built")
    ap.add_argument("--gpu-report", metavar="RESULTS", help="markdown tables of a --gpu-run results file")
    ap.add_argument("--gpu-peer", help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.gpu_pack:
        gpu_pack(args.gpu_pack, [m for m in args.models.split(",") if m], args.rules_rev, args.baseline_rev)
        return
    if args.gpu_run:
        gpu_run(args.gpu_run, args.out or os.path.join(args.gpu_run, "gpu_bench_results.json"))
        return
    if args.gpu_peer:
        gpu_peer(args.gpu_peer)
        return
    if args.gpu_report:
        print(gpu_report(args.gpu_report))
        return

    if args.worker:
        kind, rest = args.worker[0], args.worker[1:]
        CLOCK["name"] = os.environ.get("BENCH_CLOCK", "wall")
        threads = int(rest[0])
        models = rest[1].split(",")
        if kind == "pair":
            res = worker_pair(models, threads, int(rest[2]))
        elif kind == "tvm":
            res = worker_tvm(models, threads, scheduled=rest[2] == "1", max_unsched_gflop=float(rest[3]))
        elif kind == "ort":
            res = worker_ort(models, threads)
        elif kind == "e2e-tvm":
            res = worker_e2e_tvm(models[0], threads, prepack=len(rest) > 2 and rest[2] == "prepack")
        elif kind == "e2e-ort":
            res = worker_e2e_ort(models[0], threads)
        else:
            raise SystemExit(f"unknown worker {kind}")
        print(json.dumps(res))
        return

    if args.mcpu:
        os.environ["BENCH_MCPU"] = args.mcpu  # the workers inherit it
    models = [m for m in args.models.split(",") if m]
    th = str(args.threads)
    CLOCK["name"] = ("cpu" if args.threads == 1 else "wall") if args.clock == "auto" else args.clock
    if CLOCK["name"] == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu needs --threads 1")
    sched, unsched, ort_res = {}, {}, {}
    for model in models:
        print(f"per-op: {model}", file=sys.stderr, flush=True)
        pair = _run_worker(["pair", th, model, str(args.rounds)], args.threads)
        for key, val in pair.items():
            sched[key] = {"ms": val["ms"], "rule": val["rule"]}
            ort_res[key] = {"ms": val["ort_ms"]}
    if not args.no_unscheduled:
        unsched = _run_worker(["tvm", th, ",".join(models), "0", str(args.max_unscheduled_gflop)], args.threads)

    _setup_path()
    lines = []
    cpu_name = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu_name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    compiled = f"code for LLVM mcpu {args.mcpu}, " if args.mcpu else ""
    lines.append(f"Machine: {cpu_name}, {compiled}{os.cpu_count()} cores, {args.threads} thread(s) for TVM and onnxruntime; "
                 f"clock: {'thread CPU time' if CLOCK['name'] == 'cpu' else 'wall'}; best of {args.rounds} "
                 f"alternating rounds; python {platform.python_version()}; date {time.strftime('%Y-%m-%d')}.")
    lines.append("")
    lines.append("| model | op | calls | GFLOP | unscheduled ms | scheduled ms | onnxruntime ms | sched / ORT | "
                 "unsched / sched | rule |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    totals = {}
    for model in models:
        for fname, _, spec, desc in op_specs(model):
            key = f"{model}/{fname}"
            s = sched.get(key, {}).get("ms")
            o = ort_res.get(key, {}).get("ms")
            u = unsched.get(key, {}).get("ms") if unsched else None
            rule = sched.get(key, {}).get("rule") or "–"
            tot = totals.setdefault(model, [0.0, 0.0])
            tot[0] += (s or 0) * spec["calls"]
            tot[1] += (o or 0) * spec["calls"]
            lines.append(f"| {model} | {desc} | {spec['calls']} | {spec['flops'] / 1e9:.3f} | {_fmt(u)} | {_fmt(s)} | {_fmt(o)} | "
                         f"{_fmt(s / o if s and o else None, 2)} | {_fmt(u / s if u and s else None, 1)} | {rule} |")
    lines.append("")
    lines.append("| model | scheduled conv/dense ms (x calls) | onnxruntime single ops ms (x calls) | ratio |")
    lines.append("|---|---:|---:|---:|")
    for model, (s, o) in totals.items():
        lines.append(f"| {model} | {s:.2f} | {o:.2f} | {s / o:.2f} |")

    if args.e2e:
        lines.append("")
        lines.append("Whole model, CPU only (all PrimFuncs scheduled), batch 1, 224x224:")
        lines.append("")
        head = "| model | TVM scheduled ms | onnxruntime ms | ratio | schedule s | tvm.compile s |"
        if args.prepack:
            head += " TVM prepacked ms | ratio |"
        lines.append(head)
        lines.append("|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.prepack else ""))
        for model in models:
            tv, ov, pv = {}, {}, {}
            for _ in range(args.rounds):
                o = _run_worker(["e2e-ort", th, model], args.threads)
                t = _run_worker(["e2e-tvm", th, model], args.threads)
                if not ov or o["ms"] < ov["ms"]:
                    ov = o
                if not tv or t["ms"] < tv["ms"]:
                    tv = t
                if args.prepack:
                    p = _run_worker(["e2e-tvm", th, model, "prepack"], args.threads)
                    if not pv or p["ms"] < pv["ms"]:
                        pv = p
            line = (f"| {model} | {tv['ms']:.2f} | {ov['ms']:.2f} | {tv['ms'] / ov['ms']:.2f} | "
                    f"{tv['schedule_s']:.1f} | {tv['compile_s']:.1f} |")
            if args.prepack:
                line += f" {pv['ms']:.2f} | {pv['ms'] / ov['ms']:.2f} |"
            lines.append(line)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
