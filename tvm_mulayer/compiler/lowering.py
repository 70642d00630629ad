"""Lowering: a split plan applied to an imported Relax module, down to one VM executable
holding kernels for both targets."""

from __future__ import annotations

import math

import tvm
from tvm import relax

from ..base.plan import Plan
from ..base.processors import Processor
from ..passes import LiftWeights, OrderForOverlap, PooledCopies, PrepackWeights, PropagateDevices, SplitChannels
from ..passes.vdevices import vdevice_index
from ..runtime.executable import Executable
from ..schedules import ScheduleForTargets
from .rpc_entry import add_rpc_entry


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
        PooledCopies(),
    ])(mod)
    func = mod["main"]
    weights = [w.numpy() for w in func.attrs["params"]] if "params" in func.attrs else []
    num_inputs = int(func.attrs["num_input"])
    declared = mod.global_infos["vdevice"]
    devices = [vdevice_index(declared, p.ty.vdevice) for p in func.params[num_inputs:]]
    mod.update_func(mod.get_global_var("main"), func.without_attr("params"))
    return mod, weights, devices, crossing


def build_executable(mod, info, plan: Plan, cpu_proc: Processor, gpu_proc: Processor):
    """The `Executable` of imported module `mod` (with its ModelInfo `info`) split per `plan`,
    whose layers already carry their slice precisions."""
    lowered, weights, devices, crossing = lower(mod, plan, cpu_proc, gpu_proc)
    lowered = add_rpc_entry(lowered)  # weights from the remote's tensor cache: `mulayer deploy`
    executable = tvm.compile(lowered, target=None, relax_pipeline=vm_pipeline())
    result = Executable(executable, plan, cpu_proc, gpu_proc, info.inputs, info.outputs, info.sources,
                        weights, devices)
    result.crossing = crossing
    return result
