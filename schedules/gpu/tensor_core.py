"""Tensor-core (wmma) implicit GEMM for float16 x float16 -> float32 conv2d and matmul on CUDA.

The quantized GPU slices compute ``conv2d(float16 x, float16 w, out_dtype="float32")`` and
``matmul(float16 x, float16 w, out_dtype="float32")`` (then a float32 bias/activation
epilogue). Any such reduction block whose iterators split into *pixel* axes (read by the data
only), *channel* axes (read by the weights only) and *reduction* axes (read by both) is a GEMM
(dlight's iterator traits decide this, so strided, padded, dilated 1x1/3x3/5x5/7x7/11x11
convs all qualify; grouped and depthwise convs do not, their channel axis is read by both):

    C[channel, pixel] += W[channel, k] * X[k, pixel],   k = (c, ky, kx)

The data operand X is never materialised: ``reindex`` + ``transform_layout`` describe the
im2col view and the padding block is inlined into the shared-memory staging load (implicit
GEMM). Channels become the fragments' rows and pixels their columns, so the result tile is
written back along pixels, NCHW's contiguous axis, with the epilogue fused into that write.

Tiling: ``pad_einsum`` rounds M (channels), N (pixels), K up to the block tile; padded rows
and columns are computed on zeros and never stored, so any channel count (37, 1000, ...) and
any plane (13x13, 7x7) is exact. A thread block owns BM x BN (64x64, or 32x128 for <= 32
channels) outputs with 4 warps, each warp FM x FN fragments of 16x16. Layers with at most 16
channels (split tails) are left to the direct rule, which was 1.9-2.4x faster for them on the
H100.

The K loop is double-buffered: each step loads the next 32-deep slabs of W and X from global
memory into registers, runs the MMAs of the current slabs, then stores the registers into the
other shared-memory buffer (``software_pipeline_stage`` with the register stage that
``manifest_shared_memory_local_stage`` makes). For convs with a window and >= 16 input
channels K is ordered (ky, kx, c), so the gather's index arithmetic is per slab rather than a
division by kh * kw and kw per element. A grid short of one block per SM (small plane, deep
K: VGG's 14x14 and 28x28 layers, AlexNet's 13x13 ones) is filled first by splitting K over
blockIdx.z (float32 partial sums, added by a second kernel that also runs the epilogue), only
then by smaller tiles. Weights are loaded 16 bytes at a time where K allows (1x1 convs).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.dlight.gpu.matmul import (
    IterKind,
    auto_inline_consumer_chain,
    auto_inline_producers,
    detect_iter_traits,
    get_reduction_blocks,
    make_iter_fusion_index_map,
)
from tvm.target import Target

from ..analysis import NotApplicable, child_blocks, const_int
from . import wmma
from .base import GPUScheduleRule

FRAG = wmma.FRAG
WARP = 32
TARGET_BLOCKS = 132  # one block per SM of an H100
SHARED_LIMIT = 48 * 1024  # static + dynamic shared memory a kernel may use without opting in
MIN_SPLIT_DEPTH = 256  # K elements per split-K range, at least


@dataclass(frozen=True)
class GemmTiles:
    """Block tile BM x BN x BK; WM x WN warps, each FM x FN fragments (BM = 16 WM FM, ...)."""

    wm: int
    wn: int
    fm: int
    fn: int
    kf: int  # fragments along K per shared-memory slab
    split_k: int = 1  # K ranges on blockIdx.z, partial sums added by a second kernel
    stages: int = 1  # 2: the K loop fetches the next slab while it multiplies this one
    vector_w: int = 1  # weight elements per global load (8: one 16-byte load)
    channels_inner: bool = False  # K ordered (ky, kx, c): see gemm_tiles

    @property
    def bm(self) -> int:
        return FRAG * self.wm * self.fm

    @property
    def bn(self) -> int:
        return FRAG * self.wn * self.fn

    @property
    def bk(self) -> int:
        return FRAG * self.kf

    @property
    def warps(self) -> int:
        return self.wm * self.wn

    def shared_bytes(self) -> int:
        """float16 W [BM, BK] and X [BK, BN] slabs (dynamic) plus the float32 result tile
        [BM, BN] (static), each row padded as ``storage_align`` pads it."""
        slabs = 2 * (self.bm * (self.bk + 8) + self.bk * (self.bn + 8))
        return self.stages * slabs + 4 * self.bm * (self.bn + 4)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def split_k_factor(k: int, bk: int, window: int, blocks: int) -> tuple[int, bool]:
    """(ranges, whole) for a GEMM whose grid has only ``blocks`` blocks: into how many K
    ranges (blockIdx.z) to split it, and whether they are whole windows without K padding.

    Each range is whole slabs, at least MIN_SPLIT_DEPTH deep (the partial sums cost a second
    kernel and a float32 write + read per range), K padded by at most an eighth; the fewest
    ranges that give TARGET_BLOCKS blocks, else as many as allowed. Among up to twice that
    many, one whose ranges need no K padding and are whole conv windows (``window`` = kh *
    kw) is preferred: a range starting inside a window keeps the compiler from seeing that
    the 8 weights of a 16-byte load are contiguous."""

    def padded(s):
        return _ceil(k, bk * s) * bk * s

    def whole(s):
        return padded(s) == k and (k // s) % window == 0

    valid = [s for s in range(2, k // MIN_SPLIT_DEPTH + 1) if padded(s) <= k + k // 8]
    if not valid:
        return 1, True  # one range: K offsets are the slabs' only
    reaching = [s for s in valid if blocks * s >= TARGET_BLOCKS]
    if not reaching:
        aligned = [s for s in valid if whole(s) and 2 * s >= valid[-1]]
        split = aligned[-1] if aligned else valid[-1]
    else:
        aligned = [s for s in reaching if whole(s) and s <= 2 * reaching[0]]
        split = aligned[0] if aligned else reaching[0]
    return split, whole(split)


def gemm_tiles(m: int, n: int, k: int, window: int = 1, stages: int = 2, in_channels: int = 0) -> GemmTiles:
    """Tiles for an M (channels) x N (pixels) x K GEMM; see the module docstring. ``window``
    is kh * kw of a conv (1 for a matmul), ``in_channels`` its input channels (K = window *
    in_channels); ``stages`` 2 double-buffers the K loop."""
    # K = (ky, kx, c) for convs with a window and at least 16 channels: a 32-deep slab then
    # holds one or two (ky, kx) and consecutive channels, so the gather's index arithmetic is
    # a shift and a mask per element instead of a division by kh * kw, by kw and a remainder
    # (weights are then read at a stride of kh * kw elements: no 16-byte loads)
    channels_inner = window > 1 and in_channels >= FRAG
    # The float32 result tile, staged in shared memory for the epilogue, is 64x64 (or
    # 32x128) = 16 KiB; two 32-deep or one 64-deep pair of float16 slabs fit beside it.
    bm = 32 if m <= 32 else 64
    bn = 128 if bm == 32 else 64
    kf = 2 if stages == 2 or _ceil(k, 64) * 64 > k + k // 8 else 4  # K padded by at most an eighth
    # A short grid (small plane, deep K) is filled by splitting K first, which keeps the tile
    # (and its MMAs per gathered element); only then by smaller tiles.
    blocks = _ceil(m, bm) * _ceil(n, bn)
    # (whole windows per range matter only to 16-byte weight loads, impossible channels-inner)
    split, whole_ranges = (split_k_factor(k, FRAG * kf, 1 if channels_inner else window, blocks)
                           if blocks < TARGET_BLOCKS else (1, True))
    while _ceil(m, bm) * _ceil(n, bn) * split < TARGET_BLOCKS and bm * bn > 32 * 32:
        if bn >= bm and bn > 32 or bm <= 32:
            bn //= 2
        else:
            bm //= 2
    frags_m, frags_n = bm // FRAG, bn // FRAG
    wm = min(frags_m, 2)  # 4 warps (fewer for a 16-row or 16-column tile)
    wn = min(frags_n, 4 // wm)
    bk = FRAG * kf
    # 16-byte weight loads need rows of whole vectors, no K padding (a predicate per element)
    # and, under split-K or double buffering, K offsets that are whole conv windows (see
    # split_k_factor)
    vector_w = 8 if (k % bk == 0 and whole_ranges and (stages == 1 or bk % window == 0)
                     and not channels_inner) else 1
    return GemmTiles(wm=wm, wn=wn, fm=frags_m // wm, fn=frags_n // wn, kf=kf, split_k=split, stages=stages,
                     vector_w=vector_w, channels_inner=channels_inner)


def is_sm70_cuda(target: Target) -> bool:
    if target.kind.name != "cuda":
        return False
    arch = str(target.attrs.get("arch", ""))
    return arch.startswith("sm_") and arch[3:5].isdigit() and int(arch[3:5]) >= 70


class TensorCoreGemm(GPUScheduleRule):
    """conv2d (groups 1) / matmul with float16 inputs and a float32 accumulator, on wmma."""

    min_pixels = 16  # fewer pixels (a dense layer's single row) is a GEMV: gpu.Dense
    # At most one fragment row of channels (a split's 13-channel tail) the im2col gather is
    # amortised over too few outputs: the direct rule was 1.9-2.4x faster on the H100.
    min_channels = FRAG + 1
    stages = 2  # the K loop double-buffered (see gemm_tiles)

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        if not isinstance(func, tirx.PrimFunc) or not is_sm70_cuda(target):
            return None
        sch = s_tir.Schedule(func)
        reductions = get_reduction_blocks(sch, child_blocks(sch))
        if reductions is None:
            return None
        main = reductions[0]
        shape = self.gemm_shape(sch.get(main))
        if shape is None:
            return None
        m, n, k = shape
        if n < self.min_pixels or m < self.min_channels or k < FRAG:
            return None
        try:
            window, in_channels = self.k_extents(sch.get(main))
            self.schedule(sch, main, gemm_tiles(m, n, k, window, self.stages, in_channels))
        except NotApplicable:
            return None
        return sch

    @staticmethod
    def gemm_shape(block) -> tuple[int, int, int] | None:
        """(M channels, N pixels, K) of a float16 x float16 -> float32 GEMM-like block."""
        if len(block.reads) != 2 or len(block.writes) != 1:
            return None
        if any(r.source.dtype != wmma.IN_DTYPE for r in block.reads) or block.writes[0].source.dtype != wmma.ACC_DTYPE:
            return None
        traits = detect_iter_traits(block)
        if traits is None:
            return None
        extents = {IterKind.kIter_I: 1, IterKind.kIter_J: 1, IterKind.kIter_K: 1}
        for trait in traits[3]:
            if trait.kind == IterKind.kIter_S:
                return None  # a batched GEMM: not produced by the zoo's layers
            if trait.kind in extents:
                ext = const_int(trait.extent)
                if ext is None:
                    return None
                extents[trait.kind] *= ext
        return extents[IterKind.kIter_J], extents[IterKind.kIter_I], extents[IterKind.kIter_K]

    @staticmethod
    def k_extents(block) -> tuple[int, int]:
        """(window, in_channels) of the reduction: kh * kw and c of a conv (K = (c, ky, kx):
        the product of the reduction iterators after the first, and the first), (1, K) for a
        matmul."""
        extents = [const_int(t.extent) for t in detect_iter_traits(block)[3] if t.kind == IterKind.kIter_K]
        window = 1
        for ext in extents[1:]:
            window *= ext
        return window, extents[0]

    @staticmethod
    def normalize(sch: s_tir.Schedule, main, t: GemmTiles) -> None:
        """Rewrite the block as C[s, channel, pixel] += W[s, channel, k] * X[s, k, pixel] (the
        im2col view of the data, by reindex + transform_layout), padded to whole tiles."""
        s_, i_, j_, k_ = IterKind.kIter_S, IterKind.kIter_I, IterKind.kIter_J, IterKind.kIter_K
        if t.channels_inner:
            # K = (ky, kx, c) instead of (c, ky, kx): the first reduction iterator (the input
            # channel) moves last
            iters = sch.get(main).iter_vars
            reduce = [i for i, iv in enumerate(iters) if iv.iter_type == tirx.IterVar.CommReduce]
            spatial = [i for i in range(len(iters)) if i not in reduce]
            sch.reorder_block_iter_var(main, spatial + reduce[1:] + reduce[:1])
            loops = sch.get_loops(main)  # one loop per iterator, in the old order
            sch.reorder(*[loops[i] for i in reduce[1:] + reduce[:1]])
        x_re = sch.reindex(main, ("read", 0))
        w_re = sch.reindex(main, ("read", 1))
        c_re = sch.reindex(main, ("write", 0))
        # traits read after reindexing, when each operand is indexed by block iterators only
        data_traits, weight_traits, out_traits, block_traits = detect_iter_traits(sch.get(main))
        sch.transform_layout(x_re, ("write", 0), make_iter_fusion_index_map(data_traits, [s_, k_, i_]))
        sch.transform_layout(w_re, ("write", 0), make_iter_fusion_index_map(weight_traits, [s_, j_, k_]))
        sch.transform_layout(c_re, ("read", 0), make_iter_fusion_index_map(out_traits, [s_, j_, i_]))
        sch.transform_block_layout(main, make_iter_fusion_index_map(block_traits, [s_, j_, i_, k_]))
        sch.pad_einsum(main, [1, t.bm, t.bn, t.bk * t.split_k])

    @staticmethod
    def split_reduction(sch: s_tir.Schedule, main, t: GemmTiles):
        """split-K: (block computing float32 partial sums C_rf[s, channel, pixel] over the
        s-th of split_k K ranges, block adding them into C)."""
        k = sch.get_loops(main)[-1]
        ks, _ = sch.split(k, [t.split_k, None])
        return sch.rfactor(ks, factor_axis=0), main

    @staticmethod
    def schedule(sch: s_tir.Schedule, main, t: GemmTiles) -> None:
        wmma.register()
        TensorCoreGemm.normalize(sch, main, t)
        partial_sums = None
        if t.split_k > 1:
            main, partial_sums = TensorCoreGemm.split_reduction(sch, main, t)
            batch, m, n, ks, k = sch.get_loops(main)
            sch.reorder(ks, batch, m, n)
            batch = sch.fuse(ks, batch)  # blockIdx.z: the K range
        else:
            batch, m, n, k = sch.get_loops(main)
        m, m_frag = sch.split(m, [None, FRAG])
        n, n_frag = sch.split(n, [None, FRAG])
        k, k_frag = sch.split(k, [None, FRAG])
        sch.reorder(m, n, k, m_frag, n_frag, k_frag)
        inner = main
        outer = sch.blockize(m_frag)
        bm, wm, fm = sch.split(m, [None, t.wm, t.fm])
        bn, wn, fn = sch.split(n, [None, t.wn, t.fn])
        k0, k1 = sch.split(k, [None, t.kf])
        sch.reorder(bn, bm, wm, wn, k0, k1, fm, fn)
        sch.bind(batch, "blockIdx.z")
        sch.bind(bn, "blockIdx.x")
        sch.bind(bm, "blockIdx.y")
        warp = sch.fuse(wm, wn)
        sch.bind(warp, "threadIdx.y")

        def stage_in_shared(read_index: int, vector: int):
            """Cooperative copy of one operand's BK slab into shared memory at k0, consecutive
            threads on consecutive elements (pixels for X, k for W: coalesced reads), each
            thread ``vector`` consecutive elements (one 16-byte load for 8)."""
            copy = sch.cache_read(outer, read_index, wmma.SHARED)
            sch.compute_at(copy, k0)
            fused = sch.fuse(*sch.get_loops(copy)[-2:])
            if vector > 1:
                _, warp_of, lane, vec = sch.split(fused, [None, t.warps, WARP, vector])
                sch.vectorize(vec)
            else:
                _, warp_of, lane = sch.split(fused, [None, t.warps, WARP])
            sch.bind(warp_of, "threadIdx.y")
            sch.bind(lane, "threadIdx.x")
            # rows padded by 16 bytes: fragment loads of consecutive rows hit different banks
            sch.storage_align(copy, 0, axis=-2, factor=16, offset=8)
            auto_inline_producers(sch, copy)  # the im2col gather and the padding, into the copy
            if t.stages > 1:
                # loads for slab k0+1 go to registers before the MMAs of slab k0, their
                # shared-memory stores after them (the copy is split at the register stage)
                sch.annotate(copy, "tirx.manifest_shared_memory_local_stage", 1)
            return copy

        stage_in_shared(0, 1)  # the im2col gather: pixels of one row are not 16-byte aligned
        stage_in_shared(1, t.vector_w)

        x_frag = sch.cache_read(outer, 0, "wmma.matrix_b")
        w_frag = sch.cache_read(outer, 1, "wmma.matrix_a")
        sch.compute_at(x_frag, k1)
        sch.compute_at(w_frag, k1)
        if t.stages > 1:
            # k0's children: X global->registers, registers->shared, the same for W, the
            # MMA loop. Stage 0 fetches slab k0+1 while stage 1 multiplies slab k0; order:
            # both global loads, the MMAs, then both shared stores.
            sch.annotate(k0, "software_pipeline_stage", [0, 0, 0, 0, 1])
            sch.annotate(k0, "software_pipeline_order", [0, 3, 1, 4, 2])

        out_sh = sch.cache_write(outer, 0, wmma.RESULT_SHARED)
        acc = sch.cache_write(outer, 0, "wmma.accumulator")
        # the shared result tile (written by the fragment stores) with rows padded by 16
        # bytes, so that the 16 rows of one fragment store do not fall on the same banks
        sch.storage_align(acc, 0, axis=-2, factor=16, offset=4)
        sch.reverse_compute_at(acc, warp)
        sch.reverse_compute_at(out_sh, warp)

        def fragment_loops(block):
            """Split a block's last two loops into 16x16 fragments; return the inner pair's first."""
            i, j = sch.get_loops(block)[-2:]
            i0, i1 = sch.split(i, [None, FRAG])
            j0, j1 = sch.split(j, [None, FRAG])
            sch.reorder(i0, j0, i1, j1)
            return i1

        init = sch.decompose_reduction(outer, k0)
        sch.tensorize(fragment_loops(x_frag), wmma.LOAD_B)
        sch.tensorize(fragment_loops(w_frag), wmma.LOAD_A)
        sch.tensorize(sch.get_loops(sch.get_child_blocks(init)[0])[-2], wmma.FILL)
        sch.tensorize(fragment_loops(acc), wmma.STORE)
        sch.tensorize(sch.get_loops(inner)[-3], wmma.MMA)

        if partial_sums is None:
            # shared result tile -> bias/activation epilogue -> global, lanes along pixels
            auto_inline_consumer_chain(sch, out_sh)
        fused = sch.fuse(*sch.get_loops(out_sh)[-2:])
        _, lane = sch.split(fused, [None, WARP])
        sch.bind(lane, "threadIdx.x")
        if partial_sums is not None:
            TensorCoreGemm.schedule_partial_sum(sch, partial_sums)

    @staticmethod
    def schedule_partial_sum(sch: s_tir.Schedule, partial_sums) -> None:
        """The split-K second kernel: one thread per output (consecutive threads along
        pixels) adds the split_k partial sums in a register, then the unpadding, the layout
        back to NCHW and the bias/activation epilogue, inlined into its write."""
        total = sch.cache_write(partial_sums, 0, "local")
        auto_inline_consumer_chain(sch, total)
        # the write's loops (with the predicate that drops padded rows and columns) are bound
        # first and the sum is computed at the thread: binding the sum's loops and moving the
        # write under them lost that predicate (padded pixels overwrote the next channel)
        fused = sch.fuse(*sch.get_loops(total))
        bx, tx = sch.split(fused, [None, 128])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.compute_at(partial_sums, tx)
