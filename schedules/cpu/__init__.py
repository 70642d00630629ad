"""CPU (llvm) schedule rules, tried in order; the first that returns a schedule wins."""

from tvm.s_tir import dlight as dl

from .base import CPUScheduleRule
from .conv2d import Conv2d
from .dense import Dense
from .fallback import Fallback
from .injective import Injective
from .pool import Pool

__all__ = ["CPUScheduleRule", "Conv2d", "Dense", "Pool", "Injective", "Fallback", "default_rules"]


def default_rules(prepacked_weights: bool = False):
    """CPU rules in the order they are tried."""
    return [Conv2d(prepacked_weights=prepacked_weights), Dense(prepacked_weights=prepacked_weights), Pool(),
            Injective(), dl.cpu.GEMV(), dl.cpu.Reduction(), Fallback()]
