"""GPU rule for small-window reductions with a spatial output: max/avg pooling and LRN's
avg_pool3d (dlight's Reduction rules, which took them before, give every output element a
thread block that reduces its 4-9 window values across threads: VGG-16's first max pool
ran 0.57 ms on the H200, longer than the two convs before it together).

One thread per output element, the window unrolled in the thread, the padding inlined into
the window reads and the epilogue (cast to float16, divide, relu) fused into the write.
Larger reductions (global average pooling, mean over 7x7 or 13x13) keep dlight's
cross-thread Reduction.
"""

from __future__ import annotations

from tvm.target import Target

from ..analysis import NotApplicable, inline_epilogue_chain, inline_producers, match_window_reduction
from .base import GPUScheduleRule
from .blocks import thread_per_output


class WindowPool(GPUScheduleRule):
    """A window reduction of at most `max_window` elements per output, one thread each."""

    max_window = 32

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        matched = match_window_reduction(self, func, target)
        if matched is None:
            return None
        sch, red, _, exts, ns = matched
        window = 1
        for ext in exts[ns:]:
            window *= ext
        if window > self.max_window:
            return None
        try:
            epilogues = inline_epilogue_chain(sch, red)
            if epilogues is None:
                return None
            if inline_producers(sch, red):  # the padding too: read through a select
                return None
            thread_per_output(sch, red, ns, epilogues, target)
        except NotApplicable:
            return None
        return sch
