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


STATIC_SHARED_LIMIT = 48 * 1024  # bytes of static shared memory a CUDA block may use


def max_shared_bytes(target: Target) -> int:
    """Bytes of shared (OpenCL: local) memory one block may use: the target's
    max_shared_memory_per_block where it says (TVM's OpenCL targets: 16 KiB, which every OpenCL
    GPU offers; phones have 32 KiB), never over CUDA's 48 KiB of static shared memory."""
    val = target.attrs.get("max_shared_memory_per_block", None)
    return min(STATIC_SHARED_LIMIT, int(val)) if val is not None else STATIC_SHARED_LIMIT
