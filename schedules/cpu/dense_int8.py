"""CPU rule for uint8 x int8 -> int32 dense ([M<=16, K] x [K, N]) on a dot-product instruction.

    weights  [K, N] -> [N'/(NB*L), K/4, NB, L, 4]     (zero-padded to N' = NB*L blocks)
    parallel (column tile of NB*L outputs)
      acc[m][NB][L] = 0
      for k4:                                       # one contiguous NB*L*4-byte run per step
        for nb (unrolled):
          acc[m][nb] = dot(acc[m][nb], x quad at k4, W[tile, k4, nb])
      out[m, tile] = epilogue(acc)

At batch 1 the kernel streams the weights once; in this layout the whole stream of a tile is
sequential and each byte feeds one multiply-add, a quarter of the float32 bytes. Output and
reduction tails (N = 13, 37, 1000; K not a multiple of 4) are computed on zero padding and only
the real outputs are written.

Only when the build hoists the weight repack (`prepacked_weights`: SplitLayoutRewritePreproc +
PrepackWeights): a repack in the kernel reads and scatters the weights once more per call,
which made a 9216x4096 layer 3.7x slower than the generic Dense rule's int8 GEMV (measured
on the 2-core znver4 machine: 7.0 ms vs 1.9 ms; hoisted: 0.87 ms).
"""

from __future__ import annotations

from tvm.target import Target

from ..analysis import inline_epilogue_chain, inline_producers
from ..target import num_cores
from .blocks import inline_crop, pack_weights, producer_writing, schedule_flat, write_back_at
from .conv2d_int8 import is_u8_i8_i32
from .dot_intrin import DEPTH, DotProduct


def schedule(sch, blk, loops, exts, target: Target, dot: DotProduct):
    """Schedule the matmul block (see the module docstring) when it is a u8 x i8 -> i32
    [M, K] x [K, N] matmul with an injective epilogue; return None (schedule untouched) if not."""
    stmt = sch.get(blk)
    out = stmt.writes[0].source
    data, weight = [r.source for r in stmt.reads if not r.source.same_as(out)]
    if len(loops) != 3 or not is_u8_i8_i32(str(data.dtype), str(weight.dtype), str(out.dtype)):
        return None
    epilogues = inline_epilogue_chain(sch, blk)
    if epilogues is None:
        return None
    producers = inline_producers(sch, blk)
    lanes = dot.lanes
    nb_ = column_blocks(exts[1], lanes, num_cores(target))
    tile = nb_ * lanes

    sch.pad_einsum(blk, [1, tile, DEPTH])
    inline_crop(sch, blk)
    x_pad = producer_writing(sch, blk, sch.get(blk).reads[0].source)  # K % 4 != 0 only
    if x_pad is not None:
        producers.append(x_pad)
    wpack = pack_weights(sch, blk, 1, lambda k, n: (n // tile, k // DEPTH, n // lanes % nb_, n % lanes,
                                                   k % DEPTH))
    mm, nn, kk = sch.get_loops(blk)
    no, nb, nl = sch.split(nn, [None, nb_, lanes])
    ko, kl = sch.split(kk, [None, DEPTH])
    sch.reorder(no, mm, ko, nb, nl, kl)
    acc = sch.cache_write(blk, 0, "local")
    dot_block = sch.blockize(nl)
    sch.parallel(no)
    write_back_at(sch, acc, no)
    init = sch.decompose_reduction(dot_block, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(nb)
    sch.unroll(mm)
    sch.tensorize(dot_block, dot.name)

    k, n = sch.get_loops(wpack)
    w_no, w_nb, w_nl = sch.split(n, [None, nb_, lanes])
    w_ko, w_kl = sch.split(k, [None, DEPTH])
    sch.reorder(w_no, w_ko, w_nb, w_nl, w_kl)  # destination order, see schedule_weight_pack
    sch.parallel(w_no)
    for producer in producers:
        schedule_flat(sch, producer, target)
    return sch


def column_blocks(n: int, lanes: int, threads: int) -> int:
    """LANES-wide column blocks per tile: up to 4 independent accumulator chains per
    weight stream, while every thread still gets two tiles."""
    blocks = -(-n // lanes)
    nb = 4
    while nb > 1 and blocks < 2 * threads * nb:
        nb //= 2
    return nb
