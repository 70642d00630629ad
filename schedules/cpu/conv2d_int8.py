"""CPU rule for uint8 x int8 -> int32 NCHW conv2d on a dot-product instruction (x86 VNNI).

The quantized CPU slice's conv (u8 activations, i8 OIHW weights, i32 accumulators, then
the bias/scale/relu/requantize epilogue) computed with the 4-deep dot product of
dot_intrin.py, LANES output channels per instruction:

    weights  OIHW -> [F'/L, C/4, KH, KW, L, 4]      (zero-padded to F' = L * ceil(F/L))
    input    NCHW -> [N, C/4, H, W, 4]               (fused with the zero padding)
    parallel (channel block, output row)
      for x_outer:
        acc[XI][FB][L] = 0                            # XI * FB vector registers
        for c4, ry, rx:
          for xi (unrolled), fb (unrolled):
            acc[xi][fb] = dot(acc[xi][fb], input quad at (c4, y*s+ry, (x+xi)*s+rx), W[f+fb, c4, ry, rx])
        out[f.., y, x..] = epilogue(acc)               # only the F real channels are written

The input quad is one broadcast scalar load, so strides and odd widths cost nothing. Output
channel counts that are not a multiple of L (split layers: 13, 37, ...) compute zero lanes
in the last block (the padded weights are zero) and write only the real ones: the conv's
iteration domain is padded with pad_einsum (after reindex, since the input index y*s+ry is
not an einsum index; the reindexed copy is inlined back).

The weight repack is a block marked as a layout-rewrite preprocessor, so a build that runs
SplitLayoutRewritePreproc + PrepackWeights does it once at compile time; otherwise it runs
in the kernel (cheap next to the convolution for all but the deepest, smallest layers).

The Conv2d rule (conv2d.py) schedules a conv this way when `fits` and the target has an exact
dot product (dot_intrin.py); otherwise (no VNNI, depthwise and grouped convs, input channel
counts that are not a multiple of 4) it uses its generic int32 path. The split pass's int8
slices of convs with more than 4 input channels read them zero-padded to a multiple of 4 on
such a target (`dot_intrin.slice_input_channels`), so those run here too.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from ..analysis import NotApplicable, best_divisor, inline_epilogue_chain, inline_producers
from ..target import num_vector_registers
from .blocks import pack_weights, pad_conv_iterations, producer_writing, schedule_producer, write_back_at
from .dot_intrin import DEPTH, DotProduct


def is_u8_i8_i32(info_in_dtype: str, weight_dtype: str, out_dtype: str) -> bool:
    return (info_in_dtype, weight_dtype, out_dtype) == ("uint8", "int8", "int32")


def schedule_weight_pack(sch: s_tir.Schedule, pack, lanes: int):
    """Iterate the OIHW -> [F/L, C/4, KH, KW, L, 4] repack in destination order, parallel over
    channel blocks: each thread writes its own contiguous range. (Source order scatters the
    writes, and threads splitting a source loop write into the same cache lines: 4x slower
    than the whole convolution for a 512x512x3x3 layer.)"""
    f, c, y, x = sch.get_loops(pack)
    fo, fl = sch.split(f, [None, lanes])
    co, cl = sch.split(c, [None, DEPTH])
    sch.reorder(fo, co, y, x, fl, cl)
    sch.parallel(fo)


def fits(sch: s_tir.Schedule, conv, info) -> bool:
    """u8 x i8 -> i32, groups == 1, input channels a multiple of the dot product's depth."""
    stmt = sch.get(conv)
    if not is_u8_i8_i32(info.in_dtype, str(info.weight_buffer.dtype), info.out_dtype):
        return False
    if info.depthwise or info.rc % DEPTH:
        return False
    # groups == 1: the input channel read is the reduction variable itself
    data = next(r for r in stmt.reads if r.source.same_as(info.data_buffer))
    return data.region[1].min.same_as(stmt.iter_vars[4].var)


def tiles(info, target: Target, dot: DotProduct) -> dict:
    """Register tile: FB channel blocks of LANES x XI output pixels, FB * XI accumulators
    in at most the register file less 8 (the FB weight vectors, the broadcast input).

    XI divides the output width (a width tail's predicate defeats tensorize), so a width
    with small divisors (55 -> 11, 111 -> 3) takes more channel blocks instead. The tile
    loading the fewest operands per dot product wins ((FB + XI) / (FB * XI))."""
    blocks = -(-info.f // dot.lanes)
    budget = max(num_vector_registers(target) - 8, 4)
    best = None
    for fb in (4, 2, 1):
        if blocks % fb or fb > budget:
            continue
        xi = best_divisor(info.ow, budget // fb)
        score = (fb + xi) / (fb * xi)
        if best is None or score < best[0]:
            best = (score, fb, xi)
    return {"FB": best[1], "XI": best[2]}


def schedule(sch: s_tir.Schedule, conv, info, target: Target, dot: DotProduct):
    """Schedule the conv block (see the module docstring); `fits` must hold."""
    t = tiles(info, target, dot)
    lanes, fb_, xi_ = dot.lanes, t["FB"], t["XI"]
    epilogues = inline_epilogue_chain(sch, conv)
    if epilogues is None:
        raise NotApplicable("non-injective consumer")
    producers = inline_producers(sch, conv, keep=("pad_temp",))
    # pad the output-channel domain to whole LANES blocks
    pad_conv_iterations(sch, conv, [1, lanes * fb_, 1, 1, DEPTH, 1, 1])

    wpack = pack_weights(sch, conv, 1, lambda f, c, y, x: (f // lanes, c // DEPTH, y, x, f % lanes, c % DEPTH))
    data = sch.get(conv).reads[0].source
    dpack = producer_writing(sch, conv, data)
    if dpack is None:
        dpack = sch.cache_read(conv, data, "global")
        producers.append(dpack)
    sch.transform_layout(dpack, ("write", 0), lambda n, c, h, w: (n, c // DEPTH, h, w, c % DEPTH))

    n, ff, yy, xx, rc, ry, rx = sch.get_loops(conv)
    fo, fb, fl = sch.split(ff, [None, fb_, lanes])
    rco, rci = sch.split(rc, [None, DEPTH])
    sch.reorder(n, fo, yy, xx, rco, ry, rx, fb, fl, rci)
    acc = sch.cache_write(conv, 0, "local")
    # accumulator tile [x][f]: each LANES run of channels is one register
    sch.transform_layout(conv, ("write", 0), lambda n_, f, y, x: (n_, y, x, f))
    # blockize before the width split: a width tail's predicate on the dot-product block
    # makes tensorize fail, on the block around it it does not
    dot_block = sch.blockize(fl)
    xo, xi = sch.split(xx, [None, xi_])
    sch.reorder(xo, rco, ry, rx, xi)
    sch.parallel(sch.fuse(n, fo, yy))
    write_back_at(sch, acc, xo)
    init = sch.decompose_reduction(dot_block, rco)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(xi)
    sch.unroll(fb)
    sch.tensorize(dot_block, dot.name)

    schedule_weight_pack(sch, wpack, lanes)
    for blk in producers:
        schedule_producer(sch, blk, target)
    return sch
