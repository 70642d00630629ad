"""GPU (cuda, opencl, ...) schedule rules."""

from tvm.s_tir import dlight as dl


def default_rules():
    """GPU rules in the order they are tried; dlight's Fallback binds threads to the rest."""
    return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
