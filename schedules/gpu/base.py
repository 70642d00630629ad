"""The GPU rule family: every rule of gpu/ serves targets with the "gpu" key (cuda, opencl,
vulkan, metal, rocm)."""

from __future__ import annotations

from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..target import is_gpu_target


class GPUScheduleRule(ScheduleRule):  # pylint: disable=abstract-method
    """A rule for GPU targets; `apply(func, target, tunable)` returns a schedule or None."""

    def is_target_available(self, target: Target) -> bool:
        return is_gpu_target(target)

    def __repr__(self) -> str:
        return f"gpu.{type(self).__name__}"


def max_threads(target: Target) -> int:
    """Threads per block the target allows (256 where it does not say)."""
    for key in ("max_threads_per_block", "max_num_threads"):
        val = target.attrs.get(key, None)
        if val is not None:
            return int(val)
    return 256
