"""Helpers shared by the CPU and GPU schedule rules (target facts, block analysis, tiling)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target


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
    try:
        from tvm.target.codegen import llvm_get_cpu_features  # pylint: disable=import-outside-toplevel

        return frozenset(str(k) for k in llvm_get_cpu_features(target))
    except Exception:  # pylint: disable=broad-except
        return frozenset()


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


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def best_divisor(n: int, upper: int, lower: int = 1) -> int | None:
    """Largest divisor of n in [lower, upper], or None."""
    for d in range(min(n, upper), lower - 1, -1):
        if n % d == 0:
            return d
    return None


def const_int(x) -> int | None:
    if isinstance(x, int):
        return x
    if isinstance(x, tirx.IntImm):
        return int(x.value)
    return None


def loop_extent(sch: s_tir.Schedule, loop) -> int | None:
    return const_int(sch.get(loop).extent)


def block_name(sch: s_tir.Schedule, block) -> str:
    return sch.get(block).name_hint


def child_blocks(sch: s_tir.Schedule):
    root = sch.get_sblock("root") if _has_root(sch) else None
    return sch.get_child_blocks(root) if root is not None else []


def _has_root(sch: s_tir.Schedule) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # pylint: disable=broad-except
        return False


def iter_kinds(sch: s_tir.Schedule, block) -> str:
    kinds = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(kinds.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def is_spatial(sch: s_tir.Schedule, block) -> bool:
    return all(k == "S" for k in iter_kinds(sch, block))


def try_compute_inline(sch: s_tir.Schedule, block) -> bool:
    try:
        sch.compute_inline(block)
        return True
    except Exception:  # pylint: disable=broad-except
        return False


def try_reverse_compute_inline(sch: s_tir.Schedule, block) -> bool:
    try:
        sch.reverse_compute_inline(block)
        return True
    except Exception:  # pylint: disable=broad-except
        return False


def inline_epilogue_chain(sch: s_tir.Schedule, main_block) -> list:
    """Inline the injective consumers of ``main_block`` into one another.

    Returns the remaining consumer blocks (usually one: the last epilogue block writing the
    function's output), in program order.
    """
    blocks = child_blocks(sch)
    names = [block_name(sch, b) for b in blocks]
    main_name = block_name(sch, main_block)
    idx = names.index(main_name)
    consumers = [b for b in blocks[idx + 1 :]]
    remaining = []
    for blk in consumers:
        if not is_spatial(sch, blk):
            return None
        # A consumer that is not the last block is an intermediate: inline it into its users.
        if blk is not consumers[-1] and try_compute_inline(sch, blk):
            continue
        remaining.append(blk)
    return remaining


def has_condition(sch: s_tir.Schedule, block) -> bool:
    """True if the block's value has an if_then_else (a real padding, not a plain copy)."""
    return "if_then_else" in str(sch.get(block).body)


def inline_producers(sch: s_tir.Schedule, main_block, keep: tuple = ()) -> list:
    """Inline injective producer blocks; return the rest.

    Blocks named in ``keep`` (padding) are kept when they really pad; a zero-width "pad"
    (LegalizeOps emits one for padding=0) is a plain copy and is inlined like the rest.
    """
    blocks = child_blocks(sch)
    names = [block_name(sch, b) for b in blocks]
    idx = names.index(block_name(sch, main_block))
    rest = []
    for blk in blocks[:idx]:
        if block_name(sch, blk) in keep and has_condition(sch, blk):
            rest.append(blk)
        elif not is_spatial(sch, blk) or not try_compute_inline(sch, blk):
            rest.append(blk)
    return rest


class NamedRule(ScheduleRule):
    """A dlight ScheduleRule with a readable name and a target-family check."""

    family = "any"

    def is_target_available(self, target: Target) -> bool:
        if self.family == "cpu":
            return is_cpu_target(target)
        if self.family == "gpu":
            return is_gpu_target(target)
        return True

    def __repr__(self) -> str:
        return f"{self.family}.{type(self).__name__}"


def num_cores(target: Target) -> int:
    """Threads the schedule should feed: the target's num-cores, else this host's CPU count."""
    n = target.attrs.get("num-cores", None) if target.kind.name == "llvm" else None
    if n is not None and int(n) > 0:
        return int(n)
    import os  # pylint: disable=import-outside-toplevel

    return os.cpu_count() or 1


def spatial_loops(sch: s_tir.Schedule, blk, target: Target):
    """(loops, extents, total elements, vector lanes) of a spatial block, or None when it has
    no loops or a dynamic extent (then its outer loop is just parallelized)."""
    loops = sch.get_loops(blk)
    if not loops:
        return None
    exts = [loop_extent(sch, l) for l in loops]
    if any(e is None for e in exts):
        sch.parallel(loops[0])
        return None
    total = 1
    for e in exts:
        total *= e
    stmt = sch.get(blk)
    bits = dtype_bits(stmt.writes[0].source.dtype) if stmt.writes else 32
    return loops, exts, total, max(vector_bits(target) // bits, 1)


def match_window_reduction(rule, func, target: Target):
    """(schedule, reduction block, its loops, their extents, number of leading output loops)
    when `func` is for a target `rule` serves and has one reduction block 'S..SR..R' reading
    one tensor (pooling windows, LRN's avg_pool3d, mean over axes: not a conv or matmul,
    which read two), else None: the common start of the pooling rules' `apply`."""
    if not isinstance(func, tirx.PrimFunc) or not rule.is_target_available(target):
        return None
    sch = s_tir.Schedule(func)
    reds = [b for b in child_blocks(sch) if not is_spatial(sch, b)]
    if len(reds) != 1:
        return None
    red = reds[0]
    kinds = iter_kinds(sch, red)
    ns = len(kinds) - len(kinds.lstrip("S"))
    if ns == 0 or set(kinds[ns:]) != {"R"}:
        return None
    stmt = sch.get(red)
    out = stmt.writes[0].source
    if len({r.source for r in stmt.reads if not r.source.same_as(out)}) != 1:
        return None
    loops = sch.get_loops(red)
    exts = [loop_extent(sch, l) for l in loops]
    if any(e is None for e in exts) or len(loops) != len(kinds):
        return None
    return sch, red, loops, exts, ns
