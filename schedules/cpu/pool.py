"""CPU rule for window/axis reductions with a spatial output: max/avg pooling (incl. the
avg_pool3d of LRN), adaptive/global average pooling, mean/sum over trailing axes.

Schedule: leading output axes fused and parallel; the innermost output axis split into a
vector tile that stays in registers while the window is reduced; the epilogue (avg divide,
relu, ...) fused into the register write-back; the padding block computed per parallel task.
"""

from __future__ import annotations

from tvm.sym.pattern import detect_linear_equation
from tvm.s_tir import ScheduleError
from tvm.target import Target

from ..analysis import (
    NotApplicable,
    best_divisor,
    block_name,
    const_int,
    inline_epilogue_chain,
    inline_producers,
    match_window_reduction,
    try_reverse_compute_inline,
)
from ..target import dtype_bits, num_cores, vector_bits
from .base import CPUScheduleRule
from .blocks import schedule_flat, schedule_injective_block, schedule_pad_block


class Pool(CPUScheduleRule):
    """One reduction block 'S..SR..R' (no multiply of two inputs) plus injective blocks."""

    plane_tasks = True  # parallel over whole planes (padding once per plane) when possible

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        matched = match_window_reduction(self, func, target)
        if matched is None:
            return None
        sch, red, loops, exts, ns = matched
        try:
            self._schedule(sch, red, loops, exts, ns, target)
        except NotApplicable:
            return None
        return sch

    @staticmethod
    def _schedule(sch, red, loops, exts, ns, target):
        epilogues = inline_epilogue_chain(sch, red)
        if epilogues is None:
            raise NotApplicable("non-injective consumer")
        producers = inline_producers(sch, red, keep=("pad_temp",))
        bits = dtype_bits(sch.get(red).writes[0].source.dtype)
        vl = max(vector_bits(target) // bits, 1)
        s_loops, r_loops = loops[:ns], loops[ns:]
        x_ext = exts[ns - 1]
        # Output axes that the window slides along (e.g. H, W for pooling, C for LRN).
        win = Pool._window_axes(sch, red, ns)
        first_win = min(win) if win else ns - 1
        xi_ext = best_divisor(x_ext, max(vl, 8), lower=1) if x_ext > 1 else 1
        if xi_ext < 4 and x_ext > 16:
            xi_ext = 1  # odd width: keep scalar
        xi = None
        if xi_ext > 1:
            xo, xi = sch.split(s_loops[-1], [None, xi_ext])
            outer = s_loops[:-1] + [xo]
        else:
            outer = s_loops
        # Parallel over the axes before the first window axis (whole planes per task, so the
        # padding is computed once per plane inside the task); if those are too few, over
        # all but the last output loop, with the padding done up front.
        threads = num_cores(target)
        n_par = first_win if 0 < first_win < len(outer) else 0
        par_ext = 1
        for e in exts[:n_par]:
            par_ext *= e
        pad_inside = n_par > 0 and par_ext >= 2 * threads and Pool.plane_tasks
        if not pad_inside:
            n_par = max(1, len(outer) - 1)
        par_loops = outer[:n_par]
        sch.reorder(*outer, *r_loops, *([xi] if xi is not None else []))
        par = sch.fuse(*par_loops) if len(par_loops) > 1 else par_loops[0]
        sch.parallel(par)
        if xi is not None:
            sch.vectorize(xi)
        acc = sch.cache_write(red, 0, "local")
        sch.reverse_compute_at(acc, outer[-1] if len(outer) > 1 else par, preserve_unit_loops=True)
        if epilogues:
            # An epilogue larger than the reduced tensor (instance norm's x - mean over each
            # plane) cannot be inlined into the write-back; TVM 0.27's reverse_compute_inline
            # fails it with an InternalError instead of a ScheduleError, so it is not tried.
            shape = lambda block: [int(d) for d in sch.get(block).writes[0].source.shape]  # noqa: E731
            if not (len(epilogues) == 1 and shape(epilogues[-1]) == shape(red)
                    and try_reverse_compute_inline(sch, epilogues[-1])):
                for epi in epilogues:
                    schedule_flat(sch, epi, target)
        if xi is not None:
            sch.vectorize(sch.get_loops(acc)[-1])
        sch.decompose_reduction(red, r_loops[0])
        for blk in producers:
            if block_name(sch, blk) == "pad_temp":
                # plane tasks pad their planes, row tasks the rows their windows need
                try:
                    sch.compute_at(blk, par, preserve_unit_loops=True)
                    placed = True
                except ScheduleError:
                    placed = False
                if placed and pad_inside:
                    try:  # fill value and interior copy as two branch-free loops
                        sch.decompose_padding(blk, sch.get_loops(blk)[1])
                    except ScheduleError:
                        pass
                if not placed:
                    schedule_pad_block(sch, blk, target)
                continue
            schedule_injective_block(sch, blk, target)

    @staticmethod
    def _window_axes(sch, red, ns) -> set:
        stmt = sch.get(red)
        out = stmt.writes[0].source
        reads = [r for r in stmt.reads if not r.source.same_as(out)]
        rvars = [iv.var for iv in stmt.iter_vars[ns:]]
        axes = set()
        if len(reads) != 1:
            return axes
        region = reads[0].region
        for i, rng in enumerate(region[:ns] if len(region) >= ns else region):
            for rv in rvars:
                coef = detect_linear_equation(rng.min, [rv])
                if not len(coef) or const_int(coef[0]) != 0:
                    axes.add(i)
                    break
        return axes

