"""GPU rule for depthwise conv2d: no reuse across channels, so one thread per output pixel,
window unrolled, padding inlined, accumulator in a register."""

from __future__ import annotations

from tvm.target import Target

from ..analysis import NotApplicable, inline_epilogue_chain, inline_producers, match_conv
from .base import GPUScheduleRule
from .blocks import thread_per_output


class DepthwiseConv2d(GPUScheduleRule):
    """Depthwise conv2d: a thread per output pixel, unrolled window, fused pad/epilogue."""

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        matched = match_conv(self, func, target)
        if matched is None:
            return None
        sch, conv, info = matched
        if not info.depthwise:
            return None
        try:
            epilogues = inline_epilogue_chain(sch, conv)
            if inline_producers(sch, conv):  # the padding too: read through a select
                return None
            thread_per_output(sch, conv, 4, epilogues, target)
        except NotApplicable:
            return None
        return sch
