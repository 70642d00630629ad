"""CPU rule for injective functions: elementwise, broadcast, concat, reshape, slices."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ..analysis import child_blocks, is_spatial
from .base import CPUScheduleRule
from .blocks import inline_all, schedule_flat, schedule_planar


def _selects_by_outer_axis(sch: s_tir.Schedule, blk) -> bool:
    return "if_then_else" in str(sch.get(blk).body)


class Injective(CPUScheduleRule):
    """Functions made only of spatial blocks: inline into one loop nest, vectorize, parallel."""

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
