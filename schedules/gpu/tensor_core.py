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
any plane (13x13, 7x7) is exact. A thread block owns BM x BN (<= 64x64 or 32x128) outputs
with 4 warps, each warp FM x FN fragments of 16x16; the K loop stages BK-deep slabs (32-128)
of W and X in shared memory. The tile shrinks until the grid has a block per SM (small
planes); BM is 32 rows for <= 32 channels. Layers with at most 16 channels (split tails) are
left to the direct rule, which was 1.9-2.4x faster for them on the H100.
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

from ..common import NamedRule, child_blocks, const_int
from . import wmma

FRAG = wmma.FRAG
WARP = 32
TARGET_BLOCKS = 132  # one block per SM of an H100
SHARED_LIMIT = 48 * 1024  # static + dynamic shared memory a kernel may use without opting in


@dataclass(frozen=True)
class GemmTiles:
    """Block tile BM x BN x BK; WM x WN warps, each FM x FN fragments (BM = 16 WM FM, ...)."""

    wm: int
    wn: int
    fm: int
    fn: int
    kf: int  # fragments along K per shared-memory slab

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
        return 2 * (self.bm * (self.bk + 8) + self.bk * (self.bn + 8)) + 4 * self.bm * (self.bn + 4)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def gemm_tiles(m: int, n: int, k: int) -> GemmTiles:
    """Tiles for an M (channels) x N (pixels) x K GEMM; see the module docstring."""
    # The float32 result tile, staged in shared memory for the epilogue, is at most 64x64 (or
    # 32x128) = 16 KiB, which leaves room under the 48 KiB for 64-128 deep K slabs.
    bm = 32 if m <= 32 else 64
    bn = 128 if bm == 32 else 64
    # more, smaller blocks while the grid is short of TARGET_BLOCKS (small planes, few channels)
    while _ceil(m, bm) * _ceil(n, bn) < TARGET_BLOCKS and bm * bn > 32 * 32:
        if bn >= bm and bn > 32 or bm <= 32:
            bn //= 2
        else:
            bm //= 2
    frags_m, frags_n = bm // FRAG, bn // FRAG
    wm = min(frags_m, 2)  # 4 warps (fewer for a 16-row or 16-column tile)
    wn = min(frags_n, 4 // wm)
    # the deepest K slab that fits (fewer steps, each one a gather + barrier + MMAs) and pads
    # K by at most an eighth
    for kf in (8, 4, 2):
        tiles = GemmTiles(wm=wm, wn=wn, fm=frags_m // wm, fn=frags_n // wn, kf=kf)
        if tiles.shared_bytes() <= SHARED_LIMIT and (_ceil(k, tiles.bk) * tiles.bk <= k + k // 8 or kf == 2):
            return tiles
    return GemmTiles(wm=wm, wn=wn, fm=frags_m // wm, fn=frags_n // wn, kf=1)


def _is_sm70_cuda(target: Target) -> bool:
    if target.kind.name != "cuda":
        return False
    arch = str(target.attrs.get("arch", ""))
    return arch.startswith("sm_") and arch[3:5].isdigit() and int(arch[3:5]) >= 70


class TensorCoreGemm(NamedRule):
    """conv2d (groups 1) / matmul with float16 inputs and a float32 accumulator, on wmma."""

    family = "gpu"
    min_pixels = 16  # fewer pixels (a dense layer's single row) is a GEMV: gpu.Dense
    # At most one fragment row of channels (a split's 13-channel tail) the im2col gather is
    # amortised over too few outputs: the direct rule was 1.9-2.4x faster on the H100.
    min_channels = FRAG + 1

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        if not isinstance(func, tirx.PrimFunc) or not _is_sm70_cuda(target):
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
            self.schedule(sch, main, gemm_tiles(m, n, k))
        except Exception:  # pylint: disable=broad-except
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
    def normalize(sch: s_tir.Schedule, main, t: GemmTiles) -> None:
        """Rewrite the block as C[s, channel, pixel] += W[s, channel, k] * X[s, k, pixel] (the
        im2col view of the data, by reindex + transform_layout), padded to whole tiles."""
        s_, i_, j_, k_ = IterKind.kIter_S, IterKind.kIter_I, IterKind.kIter_J, IterKind.kIter_K
        x_re = sch.reindex(main, ("read", 0))
        w_re = sch.reindex(main, ("read", 1))
        c_re = sch.reindex(main, ("write", 0))
        # traits read after reindexing, when each operand is indexed by block iterators only
        data_traits, weight_traits, out_traits, block_traits = detect_iter_traits(sch.get(main))
        sch.transform_layout(x_re, ("write", 0), make_iter_fusion_index_map(data_traits, [s_, k_, i_]))
        sch.transform_layout(w_re, ("write", 0), make_iter_fusion_index_map(weight_traits, [s_, j_, k_]))
        sch.transform_layout(c_re, ("read", 0), make_iter_fusion_index_map(out_traits, [s_, j_, i_]))
        sch.transform_block_layout(main, make_iter_fusion_index_map(block_traits, [s_, j_, i_, k_]))
        sch.pad_einsum(main, [1, t.bm, t.bn, t.bk])

    @staticmethod
    def schedule(sch: s_tir.Schedule, main, t: GemmTiles) -> None:
        wmma.register()
        TensorCoreGemm.normalize(sch, main, t)
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

        def stage_in_shared(read_index: int):
            """Cooperative copy of one operand's BK slab into shared memory at k0, consecutive
            threads on consecutive elements (pixels for X, k for W: coalesced reads)."""
            copy = sch.cache_read(outer, read_index, wmma.SHARED)
            sch.compute_at(copy, k0)
            fused = sch.fuse(*sch.get_loops(copy)[-2:])
            _, warp_of, lane = sch.split(fused, [None, t.warps, WARP])
            sch.bind(warp_of, "threadIdx.y")
            sch.bind(lane, "threadIdx.x")
            # rows padded by 16 bytes: fragment loads of consecutive rows hit different banks
            sch.storage_align(copy, 0, axis=-2, factor=16, offset=8)
            auto_inline_producers(sch, copy)  # the im2col gather and the padding, into the copy

        stage_in_shared(0)
        stage_in_shared(1)

        x_frag = sch.cache_read(outer, 0, "wmma.matrix_b")
        w_frag = sch.cache_read(outer, 1, "wmma.matrix_a")
        sch.compute_at(x_frag, k1)
        sch.compute_at(w_frag, k1)

        out_sh = sch.cache_write(outer, 0, wmma.RESULT_SHARED)
        sch.storage_align(out_sh, 0, axis=-2, factor=16, offset=4)
        acc = sch.cache_write(outer, 0, "wmma.accumulator")
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

        # shared result tile -> bias/activation epilogue -> global, lanes along pixels
        auto_inline_consumer_chain(sch, out_sh)
        fused = sch.fuse(*sch.get_loops(out_sh)[-2:])
        _, lane = sch.split(fused, [None, WARP])
        sch.bind(lane, "threadIdx.x")
