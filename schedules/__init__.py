"""Analytic schedule rules for the CPU and GPU halves of a split CNN (no tuning), in the
shape of TVM's dlight: ``transform.ScheduleForTargets`` is the one pass that applies rules;
``analysis`` and ``target`` hold what every rule shares (which block is the conv or matmul,
the blocks around it, what the target offers); ``cpu/`` and ``gpu/`` hold one rule class per
file on a family base class (``CPUScheduleRule``, ``GPUScheduleRule``).

CPU rules (llvm): ``Conv2d`` (NCHW conv2d of any kernel/stride/padding/groups, depthwise,
fused bias/activation epilogue; int8 on a dot-product instruction), ``Dense`` ([M<=16, K] x
[K, N]), ``Pool`` (window and axis reductions: max/avg/adaptive/global pooling, mean, LRN's
avg_pool3d), ``Injective`` (elementwise, broadcast, concat, slices, reshape, LRN tail),
dlight's cpu ``GEMV`` and ``Reduction`` (softmax), ``Fallback`` (parallel outer loops of
anything else).

GPU rules: ``Conv2d`` (float16 -> float32 convs on CUDA sm_70+: tensor-core implicit GEMM;
otherwise direct, shared-memory tiles), ``DepthwiseConv2d``, ``Dense`` (GEMV, 16-byte weight
loads, cross-thread reduction), ``WindowPool``, then dlight's ``Matmul`` (float32 1x1 convs as
implicit GEMM), ``GEMV``, ``Reduction``, ``GeneralReduction`` and ``Fallback``.

Tile sizes come from the target (mcpu features -> vector width and register count,
num-cores; max threads per block), the shapes and the accumulator dtype, so float32, float16
and uint8 x int8 -> int32 kernels go through the same rules.
"""

from . import cpu, gpu
from .transform import ScheduleForTargets, apply_rules, schedule_rules

__all__ = ["ScheduleForTargets", "schedule_rules", "apply_rules", "cpu", "gpu"]
