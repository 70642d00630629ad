"""ScheduleForTargets: the one pass that applies the schedule rules (dlight's
ApplyDefaultSchedule, per target).

IRModule -> IRModule, no hidden state: every ``tirx.PrimFunc`` not yet ``tirx.is_scheduled``
is scheduled with the rules of the target in its ``target`` attribute (or
``Target.current()``); the first rule whose ``apply(func, target, tunable=False)`` returns a
schedule wins, and the result is marked ``tirx.is_scheduled``. GPU targets ("gpu" in the
target keys: cuda, opencl, vulkan, ...) get ``gpu.default_rules()``; every other target,
including a second llvm target standing in for a GPU, gets ``cpu.default_rules()``.

A rule that does not apply returns None. A rule that raises has a bug: with ``strict`` (the
tests run strict: ``TVM_MULAYER_STRICT_SCHEDULES=1``) the pass fails on it; otherwise it logs
a warning naming the rule and the function, and the next rule (ultimately the fallback, which
every kernel passes) schedules the function, so a user's build still completes.
"""

from __future__ import annotations

import logging
import os

from tvm import tirx
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass
from tvm.target import Target

from . import cpu, gpu
from .target import is_gpu_target

_LOG = logging.getLogger(__name__)
STRICT_ENV = "TVM_MULAYER_STRICT_SCHEDULES"


def strict_by_default() -> bool:
    """Whether rule errors fail the build when the caller does not say (`STRICT_ENV`)."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def schedule_rules(target: Target, prepacked_weights: bool = False) -> list:
    """The rules tried, in order, for PrimFuncs of ``target``."""
    if isinstance(target, (str, dict)):
        target = Target(target)
    if is_gpu_target(target):
        return gpu.default_rules()
    return cpu.default_rules(prepacked_weights)


def apply_rules(func: tirx.PrimFunc, target: Target, rules=None, strict: bool | None = None):
    """Apply the first matching rule; return ``(rule, schedule)`` or ``(None, None)``."""
    rules = schedule_rules(target) if rules is None else rules
    strict = strict_by_default() if strict is None else strict
    for rule in rules:
        if not rule.is_target_available(target):
            continue
        try:
            space = rule.apply(func, target, False)
        except Exception as err:  # pylint: disable=broad-except
            if strict:
                raise
            name = func.attrs.get("global_symbol", "?") if func.attrs is not None else "?"
            _LOG.warning("schedule rule %r failed on %s (%s); the next rule schedules it", rule, name,
                         str(err).strip().splitlines()[-1:])
            continue
        if isinstance(space, (list, tuple)):
            space = space[0] if space else None
        if space is not None:
            return rule, space
    return None, None


def _is_scheduled(func) -> bool:
    return func.attrs is not None and "tirx.is_scheduled" in func.attrs and bool(func.attrs["tirx.is_scheduled"])


@module_pass(opt_level=0, name="ScheduleForTargets")
class ScheduleForTargets:  # pylint: disable=too-few-public-methods
    """Schedule every unscheduled PrimFunc with the rules of the target it carries.

    ``prepacked_weights=True`` tells the CPU conv and dense rules that the build runs
    ``relax.transform.SplitLayoutRewritePreproc()`` after this pass and then folds the
    resulting weight-repack PrimFuncs (``tvm_mulayer.passes.PrepackWeights``), so an
    in-kernel weight repack costs nothing at run time. ``strict``: see the module docstring
    (None: `strict_by_default`).
    """

    def __init__(self, prepacked_weights: bool = False, strict: bool | None = None):
        self.prepacked_weights = prepacked_weights
        self.strict = strict

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        updates = {}
        for g_var, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            target = func.attrs.get("target") if func.attrs is not None else None
            target = target or Target.current(allow_none=True)
            if target is None:
                continue
            _, sch = apply_rules(func, target, schedule_rules(target, self.prepacked_weights), self.strict)
            if sch is None:
                continue
            new_func = sch.mod["main"]
            if isinstance(new_func, tirx.PrimFunc):
                updates[g_var] = new_func.with_attr("tirx.is_scheduled", True)
        for g_var, func in updates.items():
            mod[g_var] = func
        return mod
