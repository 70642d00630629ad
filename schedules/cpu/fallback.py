"""The CPU's last rule: anything no other rule takes gets its remaining loop nests' outer
spatial loops parallelized."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import ScheduleError
from tvm.target import Target

from ..analysis import loop_extent
from .base import CPUScheduleRule
from .blocks import inline_all


class Fallback(CPUScheduleRule):
    """Anything else: inline what can be inlined, parallelize each nest's outer spatial loops."""

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        for blk in inline_all(sch):
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
            except ScheduleError:  # a loop nest it cannot fuse or parallelize stays serial
                continue
        return sch
