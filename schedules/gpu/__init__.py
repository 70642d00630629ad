"""GPU (cuda, opencl, ...) schedule rules, tried in order; the first that returns a schedule
wins. dlight's Fallback, last, binds threads to anything left so every kernel builds."""

from tvm.s_tir import dlight as dl

from .base import GPUScheduleRule
from .conv2d import Conv2d
from .dense import Dense
from .depthwise_conv2d import DepthwiseConv2d
from .pool import WindowPool
from .tensor_core import TensorCoreGemm

__all__ = ["GPUScheduleRule", "Conv2d", "DepthwiseConv2d", "Dense", "WindowPool", "TensorCoreGemm",
           "default_rules"]


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
