"""What a target offers the schedule rules: its family, vector width and registers, cores."""

from __future__ import annotations

import os

from tvm.target import Target
from tvm.target.codegen import llvm_get_cpu_features


def is_gpu_target(target: Target) -> bool:
    """True for cuda/opencl/vulkan/metal/rocm targets (dlight's notion of a GPU)."""
    return "gpu" in target.keys


def is_cpu_target(target: Target) -> bool:
    """True for llvm (and c) targets: also the stand-in 'GPU' llvm target of GPU-less hosts."""
    return not is_gpu_target(target) and target.kind.name in ("llvm", "c")


def cpu_features(target: Target) -> frozenset:
    """LLVM CPU features implied by the target's mcpu/mattr (empty for a plain 'llvm')."""
    if target.kind.name != "llvm":
        return frozenset()
    return frozenset(str(k) for k in llvm_get_cpu_features(target))


def vector_bits(target: Target) -> int:
    """Width of the widest SIMD register the target's codegen may use, in bits.

    A plain ``Target("llvm")`` compiles for generic x86-64 (SSE2, 128 bit) whatever the host
    is, so the tile sizes must follow the target's mcpu, not the machine.
    """
    feats = cpu_features(target)
    if "avx512f" in feats:
        return 512
    if "avx2" in feats or "avx" in feats:
        return 256
    if "neon" in feats or "sve" in feats:
        return 128
    return 128


def has_fma(target: Target) -> bool:
    return "fma" in cpu_features(target)


def num_vector_registers(target: Target) -> int:
    feats = cpu_features(target)
    if "avx512f" in feats:
        return 32
    if "neon" in feats:
        return 32
    return 16


def lanes(target: Target, dtype: str) -> int:
    """SIMD lanes of ``dtype`` on the target."""
    return max(vector_bits(target) // max(dtype_bits(dtype), 8), 1)


def dtype_bits(dtype) -> int:
    s = str(dtype)
    digits = "".join(c for c in s if c.isdigit())
    return int(digits) if digits else 32


def num_cores(target: Target) -> int:
    """Threads the schedule should feed: the target's num-cores, else this host's CPU count."""
    n = target.attrs.get("num-cores", None) if target.kind.name == "llvm" else None
    if n is not None and int(n) > 0:
        return int(n)
    return os.cpu_count() or 1
