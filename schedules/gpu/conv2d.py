"""GPU rule for NCHW conv2d: tensor-core implicit GEMM, or direct convolution with
shared-memory tiles (depthwise convs: depthwise_conv2d.py).

Conv2d: float16 x float16 -> float32 convs (the quantized GPU slices) with groups 1 on CUDA
sm_70+ go to ``tensor_core.TensorCoreGemm`` (wmma, any kernel size, stride, channel count).
Otherwise (float32, OpenCL, grouped; k > 1 or strided) each thread block computes a tile of
TF*FI output channels x TY rows x TX columns; each thread FI channels of one pixel in
registers. The reduction walks input channels in chunks of RC: per chunk the block stages the
(padded) input patch and the weight slab in shared memory cooperatively, then every thread
accumulates from shared memory. The padding is fused into the shared-memory load and the
bias/activation epilogue into the register write-back, so the kernel is one launch. On CUDA a
short grid of long threads (a deep reduction on a small plane) is split into more blocks
(`Conv2d.fill_grid`).
"""

from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.target import Target

from ..analysis import (
    ConvInfo,
    NotApplicable,
    best_divisor,
    block_name,
    child_blocks,
    inline_epilogue_chain,
    match_conv,
    try_compute_inline,
)
from .base import GPUScheduleRule, max_shared_bytes, max_threads
from .blocks import cooperative_fetch, finish_epilogue
from .tensor_core import TARGET_BLOCKS, TensorCoreGemm


def _pow2_at_most(n: int, cap: int) -> int:
    p = 1
    while p * 2 <= min(n, cap):
        p *= 2
    return p


MIN_CHAIN = 2000  # multiply-adds per thread from which fill_grid splits a short grid
MIN_BLOCK_THREADS = 64  # fill_grid's floor


class Conv2d(GPUScheduleRule):
    """Tensor-core implicit GEMM where it applies, else direct conv2d with shared-memory
    input/weight tiles and register accumulators."""

    def apply(self, func, target: Target, tunable: bool):
        matched = match_conv(self, func, target)
        if matched is None:
            return None
        sch, conv, info = matched
        if info.depthwise:
            return None
        tensor_core = TensorCoreGemm().apply(func, target, tunable)
        if tensor_core is not None:
            return tensor_core
        if info.kh == 1 and info.kw == 1 and info.stride_h == 1 and info.stride_w == 1:
            return None  # a plain GEMM: dlight's Matmul (implicit GEMM) handles it better
        try:
            self.schedule(sch, conv, info, target)
        except NotApplicable:
            return None
        return sch

    @staticmethod
    def tiles(info: ConvInfo, target: Target) -> dict:
        max_t = max_threads(target)
        # Tiles divide the output exactly: a predicated tail keeps TVM from compacting the
        # shared-memory buffers to the tile (a 55x55 AlexNet output staged the whole padded
        # input, 712 KB, in shared memory).
        tx = best_divisor(info.ow, 16)
        ty = best_divisor(info.oh, max(1, 64 // tx))
        tf = _pow2_at_most(info.f, max(1, min(16, max_t // (tx * ty))))
        fi = 4 if info.f >= 4 * tf else (2 if info.f >= 2 * tf else 1)
        rc = best_divisor(info.rc, 8) or 1
        tiles = {"TX": tx, "TY": ty, "TF": tf, "FI": fi, "RC": rc}
        if target.kind.name == "cuda":
            Conv2d.fill_grid(info, tiles)
        # The input patch and weight slab staged per reduction step must fit the block's shared
        # memory: CUDA's 48 KiB of static shared memory (11x11 and 5x5 kernels overflowed it:
        # ptxas "uses too much shared data"), the OpenCL target's local memory (16 KiB: AlexNet's
        # first layer staged 39 KiB, more than a phone's 32). Give up reduction depth first,
        # then filters, then rows.
        limit = max_shared_bytes(target)
        while Conv2d.shared_bytes(info, tiles) > limit:
            if tiles["RC"] > 1:
                tiles["RC"] = best_divisor(info.rc, tiles["RC"] - 1) or 1
            elif tiles["FI"] > 1:
                tiles["FI"] //= 2
            elif tiles["TF"] > 1:
                tiles["TF"] //= 2
            elif tiles["TY"] > 1:
                tiles["TY"] //= 2
            else:
                raise NotApplicable("no tiling fits shared memory")
        return tiles

    @staticmethod
    def blocks(info: ConvInfo, t: dict) -> int:
        return -(-info.f // (t["TF"] * t["FI"])) * (info.oh // t["TY"]) * (info.ow // t["TX"])

    @staticmethod
    def fill_grid(info: ConvInfo, t: dict) -> None:
        """Give a short grid of long threads more blocks: a small plane with many channels
        and a deep reduction made a handful of big blocks whose threads each ran a long chain
        of multiply-adds (GoogLeNet's 192 -> 384 3x3 on 7x7: 6 blocks of 784 threads, 6,912
        each, for the H200's 132 SMs). Trade each thread's channels (register reuse of an
        input value: more threads, shorter chains) first, then rows per block, then channel
        threads per block, never below 64 threads a block. Only where the chains are long
        (2,000 multiply-adds or more) and the whole grid is under a quarter of the GPU's
        resident threads: on the H200 host the short-chain or busy grids ran slower split
        (benchmarks/log/2026-11-30.md, "Direct conv grid"). Only on CUDA, whose GPUs have a hundred SMs or more;
        a phone's GPU has a few compute units, which a few big blocks fill."""
        chain = t["FI"] * info.rc * info.kh * info.kw
        threads = -(-info.f // t["FI"]) * info.oh * info.ow
        if chain < MIN_CHAIN or threads >= TARGET_BLOCKS * 512:
            return
        while Conv2d.blocks(info, t) < TARGET_BLOCKS:
            if t["FI"] > 1:
                t["FI"] //= 2
                continue
            fewer_rows = best_divisor(info.oh, t["TY"] - 1) if t["TY"] > 1 else None
            if fewer_rows and t["TF"] * fewer_rows * t["TX"] >= MIN_BLOCK_THREADS:
                t["TY"] = fewer_rows
            elif t["TF"] > 1 and t["TF"] // 2 * t["TY"] * t["TX"] >= MIN_BLOCK_THREADS:
                t["TF"] //= 2
            else:
                return

    @staticmethod
    def shared_bytes(info: ConvInfo, t: dict) -> int:
        rows = (t["TY"] - 1) * info.stride_h + info.kh
        cols = (t["TX"] - 1) * info.stride_w + info.kw
        elems = t["RC"] * rows * cols + t["TF"] * t["FI"] * t["RC"] * info.kh * info.kw
        return elems * max(1, int(tvm.runtime.DataType(info.in_dtype).bits) // 8)

    def schedule(self, sch: s_tir.Schedule, conv, info: ConvInfo, target: Target):
        t = self.tiles(info, target)
        epilogues = inline_epilogue_chain(sch, conv)
        # producers other than the padding: inline into the padding / conv
        blocks = child_blocks(sch)
        idx = [block_name(sch, b) for b in blocks].index(block_name(sch, conv))
        pad = None
        for blk in blocks[:idx]:
            if block_name(sch, blk) == "pad_temp":
                pad = blk
            elif not try_compute_inline(sch, blk):
                raise NotApplicable("unexpected producer")
        n, ff, yy, xx, rc, ry, rx = sch.get_loops(conv)
        bf, tf, fi = sch.split(ff, [None, t["TF"], t["FI"]])
        by, ty = sch.split(yy, [None, t["TY"]])
        bx, tx = sch.split(xx, [None, t["TX"]])
        rco, rci = sch.split(rc, [None, t["RC"]])
        sch.reorder(n, bf, by, bx, tf, ty, tx, rco, ry, rx, rci, fi)
        blk_x = sch.fuse(n, bf, by, bx)
        sch.bind(blk_x, "blockIdx.x")
        sch.bind(tf, "threadIdx.z")
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
        sch.unroll(fi)

        acc = sch.cache_write(conv, 0, "local")
        sch.reverse_compute_at(acc, tx, preserve_unit_loops=True)
        finish_epilogue(sch, acc, epilogues, target)

        grouped = info.in_c != info.rc
        extents = [t["TF"], t["TY"], t["TX"]]
        if not grouped:
            # (a grouped conv's input-channel window depends on the channel block: its extent
            # is not a constant, so the input is read through the cache instead)
            data = info.data_buffer if pad is None else sch.get(pad).writes[0].source
            d_sh = sch.cache_read(conv, data, "shared")
            sch.compute_at(d_sh, rco, preserve_unit_loops=True)
            if pad is not None:
                sch.compute_inline(pad)  # padding happens while staging into shared memory
            cooperative_fetch(sch, d_sh, extents)
        elif pad is not None:
            sch.compute_inline(pad)
        w_sh = sch.cache_read(conv, info.weight_buffer, "shared")
        sch.compute_at(w_sh, rco, preserve_unit_loops=True)
        cooperative_fetch(sch, w_sh, extents)
        sch.decompose_reduction(conv, rco)
        return sch
