"""GPU (cuda, opencl, ...) schedule rules, tried in order; the first that returns a schedule
wins. dlight's Fallback, last, binds threads to anything left so every kernel builds."""

from tvm.s_tir import dlight as dl

from .conv2d import Conv2d, DepthwiseConv2d
from .dense import Dense
from .pool import WindowPool


def default_rules():
    """GPU rules in the order they are tried."""
    return [
        Conv2d(),
        DepthwiseConv2d(),
        Dense(),
        WindowPool(),
        dl.gpu.Matmul(),  # 1x1 conv (implicit GEMM via reindex) and larger matmuls
        dl.gpu.GEMV(),
        dl.gpu.Reduction(),
        dl.gpu.GeneralReduction(),
        dl.gpu.Fallback(),
    ]
