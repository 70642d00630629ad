"""GPU rules for NCHW conv2d: tensor-core implicit GEMM, direct convolution with shared-memory
tiles, and depthwise.

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

DepthwiseConv2d: no reuse across channels, so one thread per output pixel, window unrolled,
padding inlined, accumulator in a register.
"""

from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.target import Target

from ..common import (
    NamedRule,
    best_divisor,
    block_name,
    child_blocks,
    inline_epilogue_chain,
    inline_producers,
    try_compute_inline,
    try_reverse_compute_inline,
)
from ..cpu.conv2d import ConvInfo, match_conv
from .tensor_core import TARGET_BLOCKS, TensorCoreGemm


def _max_threads(target: Target) -> int:
    for key in ("max_threads_per_block", "max_num_threads"):
        val = target.attrs.get(key, None)
        if val is not None:
            return int(val)
    return 256


def _pow2_at_most(n: int, cap: int) -> int:
    p = 1
    while p * 2 <= min(n, cap):
        p *= 2
    return p


def _finish_epilogue(sch, acc, epilogues, target):
    if epilogues:
        if not (len(epilogues) == 1 and try_reverse_compute_inline(sch, epilogues[-1])):
            for epi in epilogues:
                bind_flat(sch, epi, target)


def thread_per_output(sch: s_tir.Schedule, block, spatial: int, epilogues: list, target: Target):
    """One thread per output element of a reduction `block` (its first `spatial` loops fused
    and bound), the reduction loops (a small window) unrolled in the thread, the accumulator
    in a register and `epilogues` fused into its write-back."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops[:spatial])
    bx, tx = sch.split(fused, [None, min(256, _max_threads(target))])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    for loop in loops[spatial:]:
        sch.unroll(loop)
    acc = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(acc, tx, preserve_unit_loops=True)
    _finish_epilogue(sch, acc, epilogues, target)
    sch.decompose_reduction(block, loops[spatial])


def bind_flat(sch: s_tir.Schedule, blk, target: Target, threads: int | None = None):
    """Fuse a spatial block's loops and bind them to blockIdx.x / threadIdx.x."""
    loops = sch.get_loops(blk)
    if not loops:
        loops = [sch.add_unit_loop(blk)]
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    bx, tx = sch.split(fused, [None, threads or min(256, _max_threads(target))])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def _cooperative_fetch(sch, blk, thread_extents, vec: int = 1):
    loops = sch.get_loops(blk)
    # loops above the copy are the compute_at loops; the copy's own loops follow them
    n_outer = len(sch.get_loops(blk)) - len(sch.get(blk).iter_vars)
    inner = loops[n_outer:]
    fused = sch.fuse(*inner) if len(inner) > 1 else inner[0]
    names = ["threadIdx.z", "threadIdx.y", "threadIdx.x"][-len(thread_extents):]
    factors = [None] + list(thread_extents) + ([vec] if vec > 1 else [])
    parts = sch.split(fused, factors)
    for loop, name in zip(parts[1 : 1 + len(thread_extents)], names):
        sch.bind(loop, name)
    if vec > 1:
        sch.vectorize(parts[-1])


SHARED_LIMIT = 48 * 1024  # bytes of static shared memory per block (CUDA; OpenCL local memory is 32+ KiB)
MIN_CHAIN = 2000  # multiply-adds per thread from which fill_grid splits a short grid
MIN_BLOCK_THREADS = 64  # fill_grid's floor


class Conv2d(NamedRule):
    """Tensor-core implicit GEMM where it applies, else direct conv2d with shared-memory
    input/weight tiles and register accumulators."""

    family = "gpu"

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
        except Exception:  # pylint: disable=broad-except
            return None
        return sch

    @staticmethod
    def tiles(info: ConvInfo, target: Target) -> dict:
        max_t = _max_threads(target)
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
        # The input patch and weight slab staged per reduction step must fit the 48 KiB of
        # static shared memory (11x11 and 5x5 kernels overflowed it: ptxas "uses too much
        # shared data"): give up reduction depth first, then filters, then rows.
        while Conv2d.shared_bytes(info, tiles) > SHARED_LIMIT:
            if tiles["RC"] > 1:
                tiles["RC"] = best_divisor(info.rc, tiles["RC"] - 1) or 1
            elif tiles["FI"] > 1:
                tiles["FI"] //= 2
            elif tiles["TF"] > 1:
                tiles["TF"] //= 2
            elif tiles["TY"] > 1:
                tiles["TY"] //= 2
            else:
                raise ValueError("no tiling fits shared memory")
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
        (BENCHMARKS, "Direct conv grid"). Only on CUDA, whose GPUs have a hundred SMs or more;
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
                raise ValueError("unexpected producer")
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
        _finish_epilogue(sch, acc, epilogues, target)

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
            _cooperative_fetch(sch, d_sh, extents)
        elif pad is not None:
            sch.compute_inline(pad)
        w_sh = sch.cache_read(conv, info.weight_buffer, "shared")
        sch.compute_at(w_sh, rco, preserve_unit_loops=True)
        _cooperative_fetch(sch, w_sh, extents)
        sch.decompose_reduction(conv, rco)
        return sch


class DepthwiseConv2d(NamedRule):
    """Depthwise conv2d: a thread per output pixel, unrolled window, fused pad/epilogue."""

    family = "gpu"

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
        except Exception:  # pylint: disable=broad-except
            return None
        return sch
