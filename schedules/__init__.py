"""Analytic schedule rules for the CPU and GPU halves of a split CNN (no tuning).

``ScheduleForTargets()`` is an IRModule pass (IRModule -> IRModule, no hidden state, modelled
on dlight's ApplyDefaultSchedule): every ``tirx.PrimFunc`` that is not yet
``tirx.is_scheduled`` is scheduled with the rules of the target in its ``target`` attribute
(or ``Target.current()``), the first rule whose ``apply(func, target, tunable=False)`` returns
a schedule wins, and the result is marked ``tirx.is_scheduled``. GPU targets (``"gpu"`` in
the target keys: cuda, opencl, vulkan, ...) get ``gpu.default_rules()`` (ending in dlight's
Fallback, so every kernel has threads bound); every other target, including a second llvm
target standing in for a GPU, gets ``cpu.default_rules()``.

CPU rules (llvm): ``Conv2d`` (NCHW conv2d of any kernel/stride/padding/groups, depthwise,
fused bias/activation epilogue), ``Dense`` ([M<=16, K] x [K, N]), ``Pool`` (window and axis
reductions: max/avg/adaptive/global pooling, mean, LRN's avg_pool3d), ``Injective``
(elementwise, broadcast, concat, slices, reshape, LRN tail), dlight's cpu ``GEMV`` and
``Reduction`` (softmax), ``Fallback`` (parallel outer loops of anything else).

GPU rules: ``Conv2d`` (float16 -> float32 convs on CUDA sm_70+: tensor-core implicit GEMM;
otherwise direct, shared-memory tiles), ``DepthwiseConv2d``, ``Dense`` (GEMV, 16-byte weight
loads, cross-thread reduction), then dlight's ``Matmul`` (float32 1x1 convs as implicit GEMM),
``GEMV``, ``Reduction``, ``GeneralReduction`` and ``Fallback``.

Tile sizes come from the target (mcpu features -> vector width and register count,
num-cores; max threads per block), the shapes and the accumulator dtype, so float32, float16
and uint8 x int8 -> int32 kernels go through the same rules.
"""

from __future__ import annotations

import logging

from tvm import tirx
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass
from tvm.target import Target

from . import cpu, gpu
from .common import is_gpu_target
from .cpu.prepack import PrepackWeights

_LOG = logging.getLogger(__name__)

__all__ = ["ScheduleForTargets", "PrepackWeights", "schedule_rules", "apply_rules", "cpu", "gpu"]


def schedule_rules(target: Target, prepacked_weights: bool = False) -> list:
    """The rules tried, in order, for PrimFuncs of ``target``."""
    if isinstance(target, (str, dict)):
        target = Target(target)
    if is_gpu_target(target):
        return gpu.default_rules()
    return cpu.default_rules(prepacked_weights)


def apply_rules(func: tirx.PrimFunc, target: Target, rules=None):
    """Apply the first matching rule; return ``(rule, schedule)`` or ``(None, None)``.

    A rule that raises on an unexpected PrimFunc is skipped (with a warning) so that the
    next rule, ultimately the fallback, still schedules the function.
    """
    rules = schedule_rules(target) if rules is None else rules
    for rule in rules:
        if not rule.is_target_available(target):
            continue
        try:
            space = rule.apply(func, target, False)
        except Exception as err:  # pylint: disable=broad-except
            _LOG.warning("schedule rule %r failed on a PrimFunc: %s", rule, str(err).splitlines()[-1:])
            continue
        if space is None:
            continue
        if isinstance(space, (list, tuple)):
            if not space:
                continue
            space = space[0]
        return rule, space
    return None, None


def _is_scheduled(func) -> bool:
    return "tirx.is_scheduled" in func.attrs and bool(func.attrs["tirx.is_scheduled"])


def _func_target(func: tirx.PrimFunc) -> Target | None:
    target = func.attrs.get("target") if func.attrs is not None else None
    if target is None:
        target = Target.current(allow_none=True)
    return target


@module_pass(opt_level=0, name="ScheduleForTargets")
class ScheduleForTargets:  # pylint: disable=too-few-public-methods
    """Schedule every unscheduled PrimFunc with the rules of the target it carries.

    ``prepacked_weights=True`` tells the CPU conv rule that the build runs
    ``relax.transform.SplitLayoutRewritePreproc()`` after this pass and then folds/lifts the
    resulting weight-repack PrimFuncs (FoldConstant on constant weights, LiftTransformParams
    on weight parameters), so in-kernel weight repacking costs nothing at run time.
    """

    def __init__(self, prepacked_weights: bool = False):
        self.prepacked_weights = prepacked_weights

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        updates = {}
        for g_var, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            target = _func_target(func)
            if target is None:
                continue
            _, sch = apply_rules(func, target, schedule_rules(target, self.prepacked_weights))
            if sch is None:
                continue
            new_func = sch.mod["main"]
            if not isinstance(new_func, tirx.PrimFunc):
                continue
            updates[g_var] = new_func.with_attr("tirx.is_scheduled", True)
        for g_var, func in updates.items():
            mod[g_var] = func
        return mod
