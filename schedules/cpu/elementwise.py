"""CPU rules for injective functions (elementwise, broadcast, concat, reshape, slices) and a
last-resort fallback that at least parallelizes every remaining loop nest."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ..common import (
    NamedRule,
    child_blocks,
    dtype_bits,
    is_spatial,
    loop_extent,
    try_compute_inline,
    try_reverse_compute_inline,
    vector_bits,
    spatial_loops,
)

PARALLEL_MIN_ELEMS = 16384  # below this a parallel launch costs more than it saves


def inline_all(sch: s_tir.Schedule) -> list:
    """Inline every injective block that can be inlined; return the blocks left."""
    changed = True
    while changed:
        changed = False
        blocks = child_blocks(sch)
        if len(blocks) <= 1:
            break
        for blk in blocks[:-1]:
            if is_spatial(sch, blk) and try_compute_inline(sch, blk):
                changed = True
                break
        if changed:
            continue
        for blk in blocks[1:]:
            if is_spatial(sch, blk) and try_reverse_compute_inline(sch, blk):
                changed = True
                break
    return child_blocks(sch)


def schedule_flat(sch: s_tir.Schedule, blk, target: Target, min_parallel: int = PARALLEL_MIN_ELEMS):
    """Fuse all loops of a spatial block, vectorize by whole registers, parallelize chunks."""
    shape = spatial_loops(sch, blk, target)
    if shape is None:
        return
    loops, exts, total, vl = shape
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if total % vl == 0 and total >= vl:
        outer, vec = sch.split(fused, [None, vl])
        sch.vectorize(vec)
        chunks = total // vl
    else:
        outer, chunks = fused, total
    if total >= min_parallel and chunks > 1:
        # chunks of >= 1024 elements per parallel task
        per = max(1, 1024 // (total // chunks))
        if per > 1 and chunks % per == 0:
            par, _ = sch.split(outer, [None, per])
        else:
            par = outer
        sch.parallel(par)


def schedule_planar(sch: s_tir.Schedule, blk, target: Target, min_parallel: int = PARALLEL_MIN_ELEMS):
    """Blocks that select between inputs by an outer index (concat, padding): parallel over the
    outer axes, the two innermost axes fused into one loop whose select is loop invariant
    (LLVM unswitches and vectorizes it) instead of a per-lane select across planes."""
    loops = sch.get_loops(blk)
    exts = [loop_extent(sch, l) for l in loops]
    if len(loops) < 3 or any(e is None for e in exts):
        schedule_flat(sch, blk, target, min_parallel)
        return
    total = 1
    for e in exts:
        total *= e
    outer = sch.fuse(*loops[:-2]) if len(loops) > 3 else loops[0]
    inner = sch.fuse(*loops[-2:])
    stmt = sch.get(blk)
    bits = dtype_bits(stmt.writes[0].source.dtype) if stmt.writes else 32
    vl = max(vector_bits(target) // bits, 1)
    if (exts[-1] * exts[-2]) % vl == 0:
        _, vec = sch.split(inner, [None, vl])
        sch.vectorize(vec)
    if total >= min_parallel:
        sch.parallel(outer)


def _selects_by_outer_axis(sch: s_tir.Schedule, blk) -> bool:
    return "if_then_else" in str(sch.get(blk).body)


class Injective(NamedRule):
    """Functions made only of spatial blocks: inline into one loop nest, vectorize, parallel."""

    family = "cpu"

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = child_blocks(sch)
        if not blocks or not all(is_spatial(sch, b) for b in blocks):
            return None
        for blk in inline_all(sch):
            if _selects_by_outer_axis(sch, blk):
                schedule_planar(sch, blk, target)
            else:
                schedule_flat(sch, blk, target)
        return sch


class Fallback(NamedRule):
    """Anything else: inline what can be inlined, parallelize each nest's outer spatial loops."""

    family = "cpu"

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        try:
            blocks = inline_all(sch)
        except Exception:  # pylint: disable=broad-except
            sch = s_tir.Schedule(func)
            blocks = child_blocks(sch)
        for blk in blocks:
            try:
                loops = sch.get_loops(blk)
                stmt = sch.get(blk)
                kinds = [iv.iter_type for iv in stmt.iter_vars]
                if not loops or len(kinds) != len(loops):
                    continue
                lead = []
                for loop, kind in zip(loops, kinds):
                    if kind != tirx.IterVar.DataPar:
                        break
                    lead.append(loop)
                if not lead:
                    continue
                fused = sch.fuse(*lead) if len(lead) > 1 else lead[0]
                ext = loop_extent(sch, fused)
                if ext is None or ext > 1:
                    sch.parallel(fused)
            except Exception:  # pylint: disable=broad-except
                continue
        return sch
