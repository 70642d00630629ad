"""CPU rule for window/axis reductions with a spatial output: max/avg pooling (incl. the
avg_pool3d of LRN), adaptive/global average pooling, mean/sum over trailing axes.

Schedule: leading output axes fused and parallel; the innermost output axis split into a
vector tile that stays in registers while the window is reduced; the epilogue (avg divide,
relu, ...) fused into the register write-back; the padding block computed per parallel task.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ..common import (
    NamedRule,
    best_divisor,
    block_name,
    child_blocks,
    dtype_bits,
    inline_epilogue_chain,
    inline_producers,
    iter_kinds,
    is_spatial,
    loop_extent,
    try_reverse_compute_inline,
    vector_bits,
)
from .conv2d import schedule_injective_block
from .elementwise import schedule_flat


class Pool(NamedRule):
    """One reduction block 'S..SR..R' (no multiply of two inputs) plus injective blocks."""

    family = "cpu"

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = child_blocks(sch)
        reds = [b for b in blocks if not is_spatial(sch, b)]
        if len(reds) != 1:
            return None
        red = reds[0]
        kinds = iter_kinds(sch, red)
        ns = len(kinds) - len(kinds.lstrip("S"))
        if ns == 0 or set(kinds[ns:]) != {"R"}:
            return None
        stmt = sch.get(red)
        out = stmt.writes[0].source
        inputs = {r.source for r in stmt.reads if not r.source.same_as(out)}
        if len(inputs) != 1:  # conv / matmul read two tensors
            return None
        loops = sch.get_loops(red)
        exts = [loop_extent(sch, l) for l in loops]
        if any(e is None for e in exts) or len(loops) != len(kinds):
            return None
        try:
            self._schedule(sch, red, loops, exts, ns, target)
        except Exception:  # pylint: disable=broad-except
            return None
        return sch

    @staticmethod
    def _schedule(sch, red, loops, exts, ns, target):
        epilogues = inline_epilogue_chain(sch, red)
        if epilogues is None:
            raise ValueError("non-injective consumer")
        producers = inline_producers(sch, red, keep=("pad_temp",))
        bits = dtype_bits(sch.get(red).writes[0].source.dtype)
        vl = max(vector_bits(target) // bits, 1)
        s_loops, r_loops = loops[:ns], loops[ns:]
        x_ext = exts[ns - 1]
        xi_ext = best_divisor(x_ext, max(vl, 8), lower=1) if x_ext > 1 else 1
        if xi_ext < 4 and x_ext > 16:
            xi_ext = 1  # odd width: keep scalar
        xi = None
        if xi_ext > 1:
            xo, xi = sch.split(s_loops[-1], [None, xi_ext])
            outer = s_loops[:-1] + [xo]
        else:
            outer = s_loops
        # parallel over leading outputs (all but the width tile loop when that has >1 iters)
        par_loops = outer[:-1] if len(outer) > 1 else outer
        sch.reorder(*outer, *r_loops, *([xi] if xi is not None else []))
        par = sch.fuse(*par_loops) if len(par_loops) > 1 else par_loops[0]
        sch.parallel(par)
        if xi is not None:
            sch.vectorize(xi)
        acc = sch.cache_write(red, 0, "local")
        sch.reverse_compute_at(acc, outer[-1] if len(outer) > 1 else par, preserve_unit_loops=True)
        if epilogues:
            if not (len(epilogues) == 1 and try_reverse_compute_inline(sch, epilogues[-1])):
                for epi in epilogues:
                    schedule_flat(sch, epi, target)
        if xi is not None:
            sch.vectorize(sch.get_loops(acc)[-1])
        sch.decompose_reduction(red, r_loops[0])
        for blk in producers:
            if block_name(sch, blk) == "pad_temp":
                try:
                    sch.compute_at(blk, par, preserve_unit_loops=True)
                    continue
                except Exception:  # pylint: disable=broad-except
                    pass
            schedule_injective_block(sch, blk, target)
