#!/usr/bin/env python3
"""Per-op (and optionally whole-model) CPU benchmark of tvm_mulayer.schedules.

For every conv2d / dense PrimFunc of the chosen zoo models (as the project's ONNX frontend,
LegalizeOps and FuseOps/FuseTIR produce them, so bias + relu are fused in), time:

  * the kernel scheduled by ``schedules`` (the rule that matched is listed),
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
    import tvm  # pylint: disable=import-outside-toplevel

    mcpu = tvm.target.codegen.llvm_get_system_cpu()
    spec = {"kind": "llvm", "num-cores": threads}
    if mcpu and mcpu != "generic":
        spec["mcpu"] = mcpu
    return tvm.target.Target(spec)


def model_onnx(name: str):
    _setup_path()
    from tvm_mulayer import zoo  # pylint: disable=import-outside-toplevel

    return zoo.build(name)


def model_relax(name: str):
    """(fused legalized IRModule, onnx model) the way the project's build sees them."""
    _setup_path()
    from tvm import relax  # pylint: disable=import-outside-toplevel
    from tvm_mulayer import frontend  # pylint: disable=import-outside-toplevel

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
    ConvInfo, find_conv_block = schedules.cpu.conv2d.ConvInfo, schedules.cpu.conv2d.find_conv_block
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
            pad = (info.in_h - (info.oh - 1) * info.stride_h - info.kh)  # total padding
            pads = [0, 0, 0, 0]
            blocks = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
                      if sch.get(b).name_hint == "pad_temp"]
            if blocks:
                pshape = [int(s) for s in sch.get(blocks[0]).writes[0].source.shape]
                ph, pw = pshape[2] - shapes[0][2], pshape[3] - shapes[0][3]
                pads = [ph // 2, pw // 2, ph - ph // 2, pw - pw // 2]
            del pad
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
    """Scheduled TVM and onnxruntime, alternating op by op (pauses let the other runtime's
    spinning worker threads go to sleep), best of ``rounds``."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel

    schedules = _schedules()
    target = cpu_target(threads)
    res = {}
    for model in models:
        for fname, func, spec, _ in op_specs(model):
            rule, sch = schedules.apply_rules(func, target)
            f = sch.mod["main"] if sch is not None else func
            lib = tvm.tirx.build(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target)
            args = _args_for(func)
            sess = _ort_session(_onnx_single(spec), threads)
            x = np.random.default_rng(1).standard_normal(spec["x"]).astype("float32")
            best_t, best_o = float("inf"), float("inf")
            for _ in range(rounds):
                time.sleep(0.05)
                best_o = min(best_o, _time_ort(sess, {"x": x}, budget_s=0.3))
                time.sleep(0.05)
                best_t = min(best_t, _time_lib(lib, args, budget_s=0.3))
            res[f"{model}/{fname}"] = {"ms": best_t, "ort_ms": best_o,
                                        "rule": repr(rule) if rule is not None else None}
    return res


def worker_e2e_tvm(model, threads, prepack=False):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax, tirx  # pylint: disable=import-outside-toplevel

    schedules = _schedules()
    target = cpu_target(threads)
    t0 = time.perf_counter()
    mod, _ = model_relax(model)
    for gv, f in list(mod.functions_items()):
        if isinstance(f, tirx.PrimFunc):
            mod[gv] = f.with_attr("target", target)
    mod = schedules.ScheduleForTargets(prepacked_weights=prepack)(mod)
    if prepack:
        # move the marked weight repacks into their own PrimFuncs and run them at build time
        mod = relax.transform.SplitLayoutRewritePreproc()(mod)
        mod = relax.transform.FoldConstant()(mod)
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
    ap.add_argument("--out", help="write the markdown table here too")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

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
    lines.append(f"Machine: {cpu_name}, {os.cpu_count()} cores, {args.threads} thread(s) for TVM and onnxruntime; "
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
