"""Analytic schedule rules for the CPU and GPU halves of a split CNN.

``ScheduleForTargets()`` is an IRModule pass: every ``tirx.PrimFunc`` that is not yet
``tirx.is_scheduled`` gets the first rule of its target family (from the func's ``target``
attribute) whose ``apply(func, target, tunable=False)`` returns a schedule.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass
from tvm.target import Target

from . import cpu, gpu
from .common import is_gpu_target

__all__ = ["ScheduleForTargets", "schedule_rules", "apply_rules", "cpu", "gpu"]


def schedule_rules(target: Target) -> list:
    """The rules tried, in order, for PrimFuncs of ``target``."""
    if isinstance(target, (str, dict)):
        target = Target(target)
    if is_gpu_target(target):
        return gpu.default_rules()
    return cpu.default_rules()


def apply_rules(func: tirx.PrimFunc, target: Target, rules=None):
    """Apply the first matching rule; return ``(rule, schedule)`` or ``(None, None)``."""
    rules = schedule_rules(target) if rules is None else rules
    for rule in rules:
        if not rule.is_target_available(target):
            continue
        space = rule.apply(func, target, False)
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
    """Schedule every unscheduled PrimFunc with the rules of the target it carries."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        updates = {}
        for g_var, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            target = _func_target(func)
            if target is None:
                continue
            _, sch = apply_rules(func, target)
            if sch is None:
                continue
            new_func = sch.mod["main"]
            if not isinstance(new_func, tirx.PrimFunc):
                continue
            updates[g_var] = new_func.with_attr("tirx.is_scheduled", True)
        for g_var, func in updates.items():
            mod[g_var] = func
        return mod
