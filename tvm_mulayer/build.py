"""Compile: ONNX -> Plan -> split Relax -> one executable holding kernels for both targets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import tvm
from tvm import relax

from .calibration import DEFAULT_PERCENTILE, obtain_calibration
from .errors import MulayerError
from .frontend import import_onnx
from .layers import layer_bindings, layer_weights
from .passes._vdevice import vdevice_index
from .passes import LiftWeights, OrderForOverlap, PropagateDevices, SplitChannels
from .deploy import add_rpc_entry
from .plan import Plan, make_plan
from .processors import Processor, cpu_processor, default_gpu, gpu_processor
from .quantization import assign_precision, parse_precision, requested_precisions
from .schedules import PrepackWeights, ScheduleForTargets


def vm_pipeline() -> tvm.transform.Pass:
    """TVM's default Relax build pipeline without static memory planning.

    TVM 0.27's StaticPlanBlockMemory reuses a storage block across vdevices (a GPU
    tensor placed in CPU memory; seen as "Mismatched ... device_id"), so with two devices
    each tensor gets its own allocation from the VM's pooled allocator instead.
    """
    from tvm.relax import backend, transform

    return tvm.transform.Sequential([
        backend.DispatchSampling(),
        backend.DispatchSortScan(),
        transform.LegalizeOps(),
        transform.RewriteDataflowReshape(),
        transform.ToNonDataflow(),
        transform.RemovePurityChecking(),
        transform.CallTIRRewrite(),
        transform.LowerAllocTensor(),
        transform.KillAfterLastUse(),
        transform.LowerRuntimeBuiltin(),
        transform.ComputePrimValue(),
        transform.VMShapeLower(),
        transform.AttachGlobalSymbol(),
    ], name="mulayer_vm_pipeline")


def crossing_bytes(split_mod: tvm.IRModule) -> dict:
    """Bytes copied between the processors per inference, by direction ("to_gpu",
    "to_cpu") and dtype, from the `to_vdevice` calls of a module SplitChannels wrote."""
    from .passes._vdevice import vdevice_index

    declared = split_mod.global_infos["vdevice"]
    moved = {"to_gpu": {}, "to_cpu": {}}
    for block in split_mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.to_vdevice":
                ty = binding.var.ty
                nbytes = math.prod(int(d) for d in ty.shape.values) * tvm.runtime.DataType(ty.dtype).bits // 8
                side = moved["to_gpu" if vdevice_index(declared, ty.vdevice) == 1 else "to_cpu"]
                side[str(ty.dtype)] = side.get(str(ty.dtype), 0) + nbytes
    return moved


def lower(mod: tvm.IRModule, plan: Plan, cpu: Processor, gpu: Processor) -> tuple:
    """(IRModule ready for tvm.compile, weights in parameter order, device index per weight,
    bytes crossing per inference — see `crossing_bytes`)."""
    mod = SplitChannels(plan, cpu.tvm_target(), gpu.tvm_target(host=cpu))(mod)
    crossing = crossing_bytes(mod)
    mod = tvm.transform.Sequential([
        LiftWeights(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        PropagateDevices(),
        # CPU kernels read weights in the blocked layout their rule chose; the repack runs
        # once here, at compile time, not per inference
        ScheduleForTargets(prepacked_weights=True),
        relax.transform.SplitLayoutRewritePreproc(),
        PrepackWeights(),
        OrderForOverlap(),
        relax.transform.DeadCodeElimination(["main"]),
    ])(mod)
    func = mod["main"]
    weights = [w.numpy() for w in func.attrs["params"]] if "params" in func.attrs else []
    num_inputs = int(func.attrs["num_input"])
    declared = mod.global_infos["vdevice"]
    devices = [vdevice_index(declared, p.ty.vdevice) for p in func.params[num_inputs:]]
    mod.update_func(mod.get_global_var("main"), func.without_attr("params"))
    return mod, weights, devices, crossing


def resolve_processors(cpu="host", gpu=None) -> tuple:
    cpu_proc = cpu if isinstance(cpu, Processor) else cpu_processor(cpu)
    if gpu is None:
        gpu_proc = default_gpu(cpu_proc)
    else:
        gpu_proc = gpu if isinstance(gpu, Processor) else gpu_processor(gpu, cpu_proc)
    return cpu_proc, gpu_proc


def compile_model(model, cpu="host", gpu=None, split=0.5, shapes=None, predictor=None, verify=False,
                  log=None, precision=None, calib=None, calib_method="percentile",
                  calib_percentile=DEFAULT_PERCENTILE):
    """Build an `Executable` for `model` (ONNX path or ModelProto) split per `split`:
    a ratio, 'cpu', 'gpu', a per-layer spec or Plan, or 'auto' (the partitioner, with
    `predictor`; `verify` then measures the auto plan against both single-processor
    plans and keeps the fastest, reporting through `log`).

    `precision`: "native" (default: int8 CPU slices, fp16 GPU slices), "fp32", or
    overrides such as "native,gpu=fp32" (see `tvm_mulayer.quantization`); a per-layer plan
    may also set `cpu_precision`/`gpu_precision` per layer. int8 slices need `calib`
    (see `tvm_mulayer.calibration`); without it they are calibrated on random inputs,
    with a warning through `log`."""
    cpu_proc, gpu_proc = resolve_processors(cpu, gpu)
    mode = parse_precision(precision)
    overrides = requested_precisions(_plan_spec(split))
    mod, info = import_onnx(model, shapes)
    bindings = layer_bindings(mod["main"])
    layers = list(bindings.values())
    if not layers and split == "auto":  # otherwise the model simply runs whole on the CPU
        raise MulayerError("the model has no conv or dense layer with constant weights, so "
                           "there is nothing to split between the processors")
    multiple = max(cpu_proc.channel_multiple, gpu_proc.channel_multiple)
    calibration = []  # computed once, when the first plan with an int8 slice needs it

    def build(plan: Plan):
        wants_int8 = any(lp.gpu_channels < lp.channels for lp in plan.layers) and (
            mode["cpu"] == "int8" or any(o.get("cpu") == "int8" for o in overrides.values()))
        if wants_int8 and not calibration:
            calibration.append(obtain_calibration(mod, info, calib, calib_method, calib_percentile, log))
        ranges = calibration[0].ranges if calibration else None
        assign_precision(plan, {l.name: l for l in layers}, layer_weights(mod["main"], bindings), mode, ranges,
                         overrides)
        executable = _build(mod, info, plan, cpu_proc, gpu_proc)
        executable.calibration = calibration[0] if calibration else None
        return executable

    if split != "auto":
        return build(make_plan(layers, split, multiple, info.sources))
    from .partitioner import auto_plan

    # the partitioner predicts the slices in the precision they will be built in
    chosen = build(auto_plan(mod["main"], cpu_proc, gpu_proc, predictor, info.sources, multiple, precision=mode,
                             log=log)[0])
    if not verify:
        return chosen
    candidates = {"auto": chosen}
    for single in ("cpu", "gpu"):
        candidates[single] = build(make_plan(layers, single, multiple, info.sources))
    measured = {name: exe.benchmark(repeat=10)["median"] for name, exe in candidates.items()}
    best = min(measured, key=measured.get)
    if log:
        times = ", ".join(f"{name} {seconds * 1e3:.3f} ms" for name, seconds in measured.items())
        log(f"--verify measured {times}: keeping the {best} plan")
    candidates[best].plan.description += f" [verified: {best} fastest of {sorted(measured)}]"
    return candidates[best]


def _plan_spec(split):
    """The per-layer plan dict behind `split`, when it is one (else None)."""
    if isinstance(split, Plan):
        return split.to_json()
    if isinstance(split, dict):
        return split
    if isinstance(split, (str, Path)) and str(split).endswith(".json") and Path(split).is_file():
        try:
            return json.loads(Path(split).read_text())
        except json.JSONDecodeError:
            return None  # make_plan reports it
    return None


def _build(mod, info, plan: Plan, cpu_proc: Processor, gpu_proc: Processor):
    from .runtime import Executable

    lowered, weights, devices, crossing = lower(mod, plan, cpu_proc, gpu_proc)
    lowered = add_rpc_entry(lowered)  # weights from the remote's tensor cache: `mulayer deploy`
    executable = tvm.compile(lowered, target=None, relax_pipeline=vm_pipeline())
    result = Executable(executable, plan, cpu_proc, gpu_proc, info.inputs, info.outputs, info.sources,
                        weights, devices)
    result.crossing = crossing
    return result
