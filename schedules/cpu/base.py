"""The CPU rule family: every rule of cpu/ serves llvm targets (and c), including the second
llvm target that stands in for a GPU on machines without one."""

from __future__ import annotations

from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..target import is_cpu_target


class CPUScheduleRule(ScheduleRule):  # pylint: disable=abstract-method
    """A rule for CPU targets; `apply(func, target, tunable)` returns a schedule or None."""

    def is_target_available(self, target: Target) -> bool:
        return is_cpu_target(target)

    def __repr__(self) -> str:
        return f"cpu.{type(self).__name__}"
