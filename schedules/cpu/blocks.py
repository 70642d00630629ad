"""Schedules of the blocks around a CPU kernel's main block, shared by the CPU rules:
injective blocks (parallel outer, vectorized inner), padding, and the layout changes of the
register-tiled kernels (iteration domains padded to whole register blocks, weights repacked
into blocked layouts at compile time, accumulators written back with the epilogue)."""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir import ScheduleError
from tvm.target import Target

from ..analysis import (
    block_name,
    child_blocks,
    dtype_bits,
    is_spatial,
    loop_extent,
    spatial_loops,
    try_compute_inline,
    try_reverse_compute_inline,
)
from ..target import vector_bits


LAYOUT_REWRITE_PREPROC = "meta_schedule.layout_rewrite_preproc"


PARALLEL_MIN_ELEMS = 16384  # below this a parallel launch costs more than it saves


def schedule_injective_block(
    sch: s_tir.Schedule, blk, target: Target, min_parallel: int = 4096, vectorize: bool = True
):
    """Parallel outer / vectorized inner for one spatial block at root level."""
    shape = spatial_loops(sch, blk, target)
    if shape is None:
        return
    loops, exts, total, vl = shape
    inner = loops[-1]
    inner_ext = exts[-1]
    outer = loops[:-1]
    if outer:
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        if total >= min_parallel:
            sch.parallel(fused)
    elif total >= min_parallel and inner_ext > vl * 4:
        fused, inner = sch.split(inner, [None, vl * 4])
        sch.parallel(fused)
        inner_ext = vl * 4
    if vectorize and inner_ext >= 2:
        if inner_ext % vl == 0 and inner_ext > vl:
            _, v = sch.split(inner, [None, vl])
            sch.vectorize(v)
        elif inner_ext <= vl:
            sch.vectorize(inner)


def schedule_pad_block(sch: s_tir.Schedule, blk, target: Target):
    """Zero-padding copy: parallel over channel planes; the border fill is split from the
    interior copy (decompose_padding) so that both are branch-free streaming loops."""
    loops = sch.get_loops(blk)
    if len(loops) < 3:
        schedule_injective_block(sch, blk, target)
        return
    par = sch.fuse(*loops[:-2])
    sch.parallel(par)
    try:
        sch.decompose_padding(blk, sch.get_loops(blk)[1])
    except ScheduleError:  # a padding it cannot split stays one loop with a select
        pass


def schedule_producer(sch: s_tir.Schedule, blk, target: Target):
    if "pad" in block_name(sch, blk):
        schedule_pad_block(sch, blk, target)
    else:
        schedule_injective_block(sch, blk, target)


def inline_all(sch: s_tir.Schedule) -> list:
    """Inline every injective block that can be inlined; return the blocks left."""
    changed = True
    while changed:
        changed = False
        blocks = child_blocks(sch)
        if len(blocks) <= 1:
            break
        for blk in blocks[:-1]:
            if is_spatial(sch, blk) and try_compute_inline(sch, blk):
                changed = True
                break
        if changed:
            continue
        for blk in blocks[1:]:
            if is_spatial(sch, blk) and try_reverse_compute_inline(sch, blk):
                changed = True
                break
    return child_blocks(sch)


def schedule_flat(sch: s_tir.Schedule, blk, target: Target, min_parallel: int = PARALLEL_MIN_ELEMS):
    """Fuse all loops of a spatial block, vectorize by whole registers, parallelize chunks."""
    shape = spatial_loops(sch, blk, target)
    if shape is None:
        return
    loops, exts, total, vl = shape
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if total % vl == 0 and total >= vl:
        outer, vec = sch.split(fused, [None, vl])
        sch.vectorize(vec)
        chunks = total // vl
    else:
        outer, chunks = fused, total
    if total >= min_parallel and chunks > 1:
        # chunks of >= 1024 elements per parallel task
        per = max(1, 1024 // (total // chunks))
        if per > 1 and chunks % per == 0:
            par, _ = sch.split(outer, [None, per])
        else:
            par = outer
        sch.parallel(par)


def schedule_planar(sch: s_tir.Schedule, blk, target: Target, min_parallel: int = PARALLEL_MIN_ELEMS):
    """Blocks that select between inputs by an outer index (concat, padding): parallel over the
    outer axes, the two innermost axes fused into one loop whose select is loop invariant
    (LLVM unswitches and vectorizes it) instead of a per-lane select across planes."""
    loops = sch.get_loops(blk)
    exts = [loop_extent(sch, l) for l in loops]
    if len(loops) < 3 or any(e is None for e in exts):
        schedule_flat(sch, blk, target, min_parallel)
        return
    total = 1
    for e in exts:
        total *= e
    outer = sch.fuse(*loops[:-2]) if len(loops) > 3 else loops[0]
    inner = sch.fuse(*loops[-2:])
    stmt = sch.get(blk)
    bits = dtype_bits(stmt.writes[0].source.dtype) if stmt.writes else 32
    vl = max(vector_bits(target) // bits, 1)
    if (exts[-1] * exts[-2]) % vl == 0:
        _, vec = sch.split(inner, [None, vl])
        sch.vectorize(vec)
    if total >= min_parallel:
        sch.parallel(outer)


def producer_writing(sch: s_tir.Schedule, block, buffer):
    """The producer block of `block` that writes `buffer`, or None."""
    for prod in sch.get_producers(block):
        if any(w.source.same_as(buffer) for w in sch.get(prod).writes):
            return prod
    return None


def inline_crop(sch: s_tir.Schedule, block) -> None:
    """pad_einsum copies the padded result into the original buffer with a crop block named
    after the padded buffer; inline it into the epilogue that reads it (when there is one)."""
    out_name = sch.get(block).writes[0].source.name
    for consumer in sch.get_consumers(block):
        if block_name(sch, consumer) == out_name:
            try_compute_inline(sch, consumer)


def blocks_after(sch: s_tir.Schedule, block) -> list:
    blocks = child_blocks(sch)
    names = [block_name(sch, b) for b in blocks]
    return blocks[names.index(block_name(sch, block)) + 1 :]


def pad_conv_iterations(sch: s_tir.Schedule, conv, padding: list) -> None:
    """pad_einsum on an NCHW conv block (output channels rounded up to a whole register
    block, ...): its input read y*s+ry is not an einsum index, so the input is reindexed
    first and the reindexed copy inlined back; the crop of the padded result goes into the
    epilogue."""
    reindexed = sch.reindex(conv, ("read", 0))
    sch.pad_einsum(conv, padding)
    sch.compute_inline(reindexed)
    inline_crop(sch, conv)


def write_back_at(sch: s_tir.Schedule, acc, loop) -> None:
    """Move the accumulator's write-back `acc` and the epilogue blocks after it under
    `loop`, and inline the write-back: the epilogue then reads the accumulators directly."""
    sch.reverse_compute_at(acc, loop, preserve_unit_loops=True)
    for epi in blocks_after(sch, acc):
        sch.reverse_compute_at(epi, loop, preserve_unit_loops=True)
    try_compute_inline(sch, acc)


def pack_weights(sch: s_tir.Schedule, block, read_index: int, index_map):
    """Repack the weight `block` reads (through pad_einsum's zero-padding block when there is
    one) into `index_map`'s layout, marked as a layout-rewrite preprocessor."""
    weight = sch.get(block).reads[read_index].source
    pack = producer_writing(sch, block, weight)
    if pack is None:
        pack = sch.cache_read(block, weight, "global")
    sch.transform_layout(pack, ("write", 0), index_map)
    sch.annotate(pack, LAYOUT_REWRITE_PREPROC, True)
    return pack
