"""CPU rule for NCHW/OIHW conv2d (regular, 1x1, strided, grouped, depthwise) + fused epilogue.

Schedule-only on NCHW (no layout change), direct convolution with register blocking:

    parallel (output-channel block, output row)        # or (row, channel block), see below
      for x_outer:
        acc[YI][FI][XI] = 0                             # register tile (local buffer)
        for rc, ry, rx:                                 # reduction
          for yi (unrolled), fi (unrolled):
            for xi (vectorized):                        # contiguous output/input width
              acc[yi, fi, xi] += pad[rc, y*s+ry, (x+xi)*s+rx] * W[f+fi, rc, ry, rx]
        out[f+fi, y+yi, x+xi] = epilogue(acc)          # bias/relu/clip fused into write-back

One weight scalar is broadcast per FMA row and one input vector load feeds FI FMAs, so the
inner loop is FMA bound when FI * ceil(XI/lanes) accumulators fill the register file.
Output channel counts that the tile does not divide (split layers: 13, 37, ...) get a
predicated tail; widths get a dividing tile when one exists. Where neither does (a prime
width), the predicated width tail would scalarize the vector loop, so the conv is
vectorized over output channels instead, padded to whole vectors (`schedule_fvec`).
A 1x1 stride-1 unpadded conv is the GEMM out[f, p] = sum_c W[f, c] * X[c, p] over the
flattened pixels p, and gets a GEMM register tile instead (`schedule_gemm`): FO weight vectors
of output channels x PU pixels, the pixel tile running across rows, so that on 7x7-28x28
planes each weight vector feeds FO*PU FMAs instead of one row's worth (7-28).
The accumulation dtype is the conv block's output dtype (float32, or int32 for int8 inputs).
A uint8 x int8 -> int32 conv that fits the target's exact dot-product instruction (VNNI) is
scheduled by conv2d_int8 instead.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import ScheduleError
from tvm.target import Target

from ..analysis import (
    ConvInfo,
    NotApplicable,
    best_divisor,
    block_name,
    divisors,
    inline_epilogue_chain,
    inline_producers,
    is_pointwise,
    match_conv,
    try_reverse_compute_inline,
)
from ..target import dtype_bits, num_cores, num_vector_registers, vector_bits
from . import conv2d_int8
from .base import CPUScheduleRule
from .blocks import pack_weights, pad_conv_iterations, schedule_injective_block, schedule_producer, write_back_at
from .dot_intrin import dot_product_for


def _pick_width_tile(ow: int, max_tile: int) -> tuple[int, bool]:
    """Tile along the output width: the largest divisor of ow up to max_tile (one vector
    register; longer odd-length vectors make LLVM spill), else a predicated tail."""
    d = best_divisor(ow, max_tile, lower=1)
    if d >= 7 or d == ow or d >= max_tile // 2:
        return d, False
    return max_tile, True


def _pick_channel_tile(f: int, target_fi: int) -> int:
    """Output-channel register tile: prefer a divisor of f close to target_fi."""
    if f <= target_fi:
        return f
    d = best_divisor(f, target_fi, lower=max(2, (target_fi * 2) // 3))
    if d is not None:
        return d
    return target_fi  # predicated tail (odd split-layer channel counts)


# Strided depthwise convs de-interleave their input only for output rows at least this long
# (see Conv2d.tiles).
DW_DEINTERLEAVE_MIN_WIDTH = 14

# GEMM tiling thresholds, measured on 1x1 convs of the zoo (1 thread, AVX-512, benchmarks/log/2026-11-23.md):
# - fewer input channels than this and the direct schedules are as fast (too short a
#   reduction to amortise the register tile's write-back);
GEMM_MIN_IN_CHANNELS = 64
# - reduction split in chunks of GEMM_K_CHUNK input channels (the accumulators of all pixels
#   of a channel block then live in L1/L2 across chunks) for deep layers (1024->1024 at 7x7:
#   0.82 -> 0.75 ms) and for inputs larger than L2 (128->128 at 56x56: 1.45 -> 1.24 ms);
GEMM_K_CHUNK = 64
GEMM_CHUNKED_MIN_IN_CHANNELS = 512
GEMM_CHUNKED_MIN_INPUT_BYTES = 1 << 20
# cycles from one FMA to the next that reads its result (4 on Skylake and Zen 3, 5 on Haswell)
FMA_LATENCY = 4


def _gemm_tiles(info: ConvInfo, lanes: int, acc_budget: int) -> dict | None:
    """Register tile of a pointwise conv: FO vectors of `lanes` output channels x PU pixels
    (PU divides the pixel count: with a pixel tail, the fused and split pixel loop computed
    wrong results in TVM 0.27), or None where the direct schedules serve as well."""
    if not is_pointwise(info) or info.rc < GEMM_MIN_IN_CHANNELS or info.f < 2 * lanes:
        return None
    fo = 2 if info.f >= 4 * lanes else 1
    pu = best_divisor(info.oh * info.ow, acc_budget // fo, lower=4)
    if pu is None:
        return None
    chunked = info.rc >= GEMM_CHUNKED_MIN_IN_CHANNELS or (
        info.rc >= 2 * GEMM_K_CHUNK and info.input_bytes > GEMM_CHUNKED_MIN_INPUT_BYTES)
    return {"mode": "gemm", "FV": lanes, "FO": fo, "PU": pu, "KC": GEMM_K_CHUNK if chunked else None}


def _gemm_tiles_16_registers(info: ConvInfo, lanes: int, regs: int) -> dict | None:
    """The pointwise GEMM tile for 16 vector registers (AVX2): FO x PU accumulators, FO
    weight vectors and a broadcast in the register file, the pair that keeps the FMA units
    busiest: per input channel FO*PU FMAs, FO+PU loads (2 of each per cycle) and at least
    FMA_LATENCY cycles between updates of one accumulator; channels padded to whole FO*FV
    blocks count as lost work. With two or more chunks' worth of input channels the reduction
    is chunked, by a divisor of them near GEMM_K_CHUNK (a chunk tail would predicate the
    reduction loop): 16 registers hold a small tile, whose weight block then stays in L1."""
    if not is_pointwise(info) or info.rc < GEMM_MIN_IN_CHANNELS or info.f < lanes:
        return None
    best = None
    for fo in range(1, regs):
        block = fo * lanes
        kept = info.f / (-(-info.f // block) * block)
        for pu in divisors(info.oh * info.ow):
            acc = fo * pu
            if pu < 2 or acc + fo + 1 > regs:
                continue
            rate = acc / max(acc / 2, (fo + pu) / 2, FMA_LATENCY) * kept
            if best is None or (rate, acc) > best[:2]:
                best = (rate, acc, fo, pu)
    if best is None:
        return None
    chunk = best_divisor(info.rc, GEMM_K_CHUNK, lower=GEMM_K_CHUNK // 4)
    return {"mode": "gemm", "FV": lanes, "FO": best[2], "PU": best[3],
            "KC": chunk if chunk and info.rc >= 2 * chunk else None}


class Conv2d(CPUScheduleRule):
    """Direct NCHW conv2d with register tiling, parallel outer loops and fused epilogue."""

    def __init__(self, override: dict | None = None, prepacked_weights: bool = False):
        self.override = override
        # True when the build hoists the marked weight repack out of the kernel (see
        # schedule_fvec): repacking is then free and the channel-vectorized form is preferred.
        self.prepacked_weights = prepacked_weights

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        matched = match_conv(self, func, target)
        if matched is None:
            return None
        sch, conv, info = matched
        dot = dot_product_for(target)
        if dot is not None and conv2d_int8.fits(sch, conv, info):
            return conv2d_int8.schedule(sch, conv, info, target, dot)
        self.schedule(sch, conv, info, target)
        return sch

    # ------------------------------------------------------------------
    @staticmethod
    def tiles(info: ConvInfo, target: Target, prepacked_weights: bool = False) -> dict:
        """Analytic tile sizes for the conv (exposed for tests and benchmarks)."""
        vbits = vector_bits(target)
        acc_bits = dtype_bits(info.out_dtype)
        vl = max(vbits // acc_bits, 1)  # lanes per register
        regs = num_vector_registers(target)
        acc_budget = max(regs - 4, 4)  # registers for accumulators
        if info.depthwise:
            xi, pred_x = _pick_width_tile(info.ow, max(vl, 8))
            nvec = -(-xi // vl)
            # several output rows per task: enough independent accumulators, and small planes
            # (7x7, 14x14) are done in one or two tasks per channel
            yi = best_divisor(info.oh, max(1, min(8, acc_budget // nvec))) or 1
            # strided: de-interleave the padded input (see schedule) where the output rows are
            # long enough to pay for the scattered copy (1 thread, 3x3/2: 112->56 0.85 -> 0.57
            # ms, 28->14 0.22 -> 0.14 ms, but 14->7 0.10 -> 0.34 ms)
            return {"mode": "dw", "FI": 1, "XI": xi, "YI": yi, "pred_x": pred_x, "lanes": vl,
                    "deinterleave": info.ow >= DW_DEINTERLEAVE_MIN_WIDTH}
        xi, pred_x = _pick_width_tile(info.ow, max(vl, 8))
        nvec = max(1, -(-xi // vl))
        fi = _pick_channel_tile(info.f, max(1, min(16, (acc_budget * 3 // 4) // nvec)))
        xvec = {"mode": "xvec", "FI": fi, "XI": xi, "YI": 1, "pred_x": pred_x, "lanes": vl}
        # channel-vectorized variant: whole vectors of output channels (8 lanes where they
        # divide the channels and the register's lanes do not); other channel counts are
        # padded to whole registers (schedule_fvec)
        fv = 8 if vl > 8 and info.f % vl and info.f % 8 == 0 else vl
        spatial = info.oh * info.ow
        eff_x = xi / (nvec * vl)
        use_fvec = pred_x or (spatial >= 2000 and (eff_x < 1 or info.kh * info.kw > 1)) or (
            spatial >= 400 and (info.stride_w > 1 or eff_x < 0.75)
        )
        # OIHW rows a multiple of 4 KiB apart: the FI weights an x-vectorized step broadcasts
        # all fall into one L1 set and evict each other (seen: 1024->1024 1x1 at 22 GF/s);
        # the channel-vectorized schedule reads repacked, contiguous weights instead.
        row_bytes = info.rc * info.kh * info.kw * dtype_bits(info.in_dtype) // 8
        if (row_bytes % 4096 == 0 and xvec["FI"] > 8) or prepacked_weights:
            use_fvec = True
        # the pointwise GEMM tile repacks (and pads) weights as the channel-vectorized form does
        if not use_fvec:
            gemm = None
        elif regs <= 16:
            gemm = _gemm_tiles_16_registers(info, vl, regs)
        else:
            gemm = _gemm_tiles(info, vl, acc_budget)
        if gemm is not None:
            return gemm
        # channels padded to whole vectors: far faster than the x-vectorized form with a
        # predicated width tail, which scalarizes (H200 host, benchmarks/log/2026-11-30.md: 274 -> 212 on
        # 57x57 73.8 -> 3.7 ms); elsewhere only where the padding adds at most an eighth (more,
        # and the idle lanes cost more than the x-vectorized form's channel tail: small
        # channel counts on small planes ran slower padded to 16)
        padded_waste = -(-info.f // fv) * fv / info.f
        if not use_fvec or (padded_waste > 9 / 8 and not pred_x):
            return xvec
        xu = best_divisor(info.ow, min(14, acc_budget // 2), lower=1)
        if xu < 4 and info.ow > 4:
            xu = 8  # predicated on an unrolled loop: cheap
        if regs <= 16 and fv == vl and info.f % (2 * vl) == 0 and 2 * xu + 3 <= regs:
            # 16 registers: two registers of channels per pixel (2 x XU accumulators, 2 weight
            # vectors, a broadcast), so that each broadcast input feeds two FMAs, not one
            fv = 2 * vl
        return {"mode": "fvec", "FV": fv, "XU": xu, "lanes": vl}

    def schedule(self, sch: s_tir.Schedule, conv, info: ConvInfo, target: Target):
        t = dict(self.tiles(info, target, self.prepacked_weights))
        t.update(self.override or {})
        if t.get("mode") == "fvec":
            return self.schedule_fvec(sch, conv, info, target, t)
        if t.get("mode") == "gemm":
            return self.schedule_gemm(sch, conv, info, target, t)
        threads = num_cores(target)
        epilogues = inline_epilogue_chain(sch, conv)
        producers = inline_producers(sch, conv, keep=("pad_temp",))

        pack = None
        if not info.depthwise and t["FI"] > 1 and t.get("pack", False):
            # Repack OIHW weights to [F/FI, I, KH, KW, FI]: the FI weights one input vector
            # meets are then one cache line instead of FI lines a multiple of 4 KiB apart.
            fi_ = t["FI"]
            pack = sch.cache_read(conv, info.weight_buffer, "global")
            sch.transform_layout(
                pack, ("write", 0), lambda f, c, y, x: (f // fi_, c, y, x, f % fi_),
                pad_value=tirx.const(0, info.in_dtype),
            )

        phase = None
        sw = info.stride_w
        if sw > 1 and t.get("deinterleave", True):
            # Strided conv: a vector of outputs along x reads every sw-th input. Store the
            # (padded) input de-interleaved, [n, c, h, w % sw, w // sw], so that those reads
            # become contiguous vector loads instead of element-wise gathers.
            pads = [b for b in producers if block_name(sch, b) == "pad_temp"]
            if pads:
                phase = pads[0]
            else:
                # the buffer the conv reads now: a zero-width pad_temp may have been inlined
                # since ConvInfo was taken (an unpadded strided conv then reads its input)
                reads = [r.source for r in sch.get(conv).reads]
                data = next(b for b in reads if not b.same_as(info.weight_buffer))
                phase = sch.cache_read(conv, data, "global")
                producers.append(phase)
            sch.transform_layout(
                phase, ("write", 0), lambda n_, c, h, w: (n_, c, h, w % sw, w // sw),
                pad_value=tirx.const(0, info.in_dtype),
            )

        n, ff, yy, xx, rc, ry, rx = sch.get_loops(conv)
        fo, fi = sch.split(ff, [None, t["FI"]])
        yo, yi = sch.split(yy, [None, t["YI"]])
        xo, xi = sch.split(xx, [None, t["XI"]])
        n_fo = -(-info.f // t["FI"])
        weight_heavy = info.weight_bytes > info.input_bytes
        pack_at = None
        if info.depthwise:
            sch.reorder(n, fo, yo, xo, rc, ry, rx, yi, fi, xi)
            par = sch.fuse(n, fo, yo)
        elif weight_heavy and n_fo >= 4 * threads and pack is not None:
            # deep layers: a thread owns channel blocks; their packed weights stay in cache
            sch.reorder(n, fo, yo, xo, rc, ry, rx, yi, fi, xi)
            par = sch.fuse(n, fo)
            pack_at = par
        elif weight_heavy:
            sch.reorder(n, fo, yo, xo, rc, ry, rx, yi, fi, xi)
            par = sch.fuse(n, fo, yo)
        else:
            # early layers: threads split rows, weights are small
            sch.reorder(n, yo, fo, xo, rc, ry, rx, yi, fi, xi)
            par = sch.fuse(n, yo, fo)
        sch.parallel(par)
        sch.unroll(yi)
        sch.unroll(fi)
        sch.vectorize(xi)

        acc = sch.cache_write(conv, 0, "local")
        sch.reverse_compute_at(acc, xo, preserve_unit_loops=True)
        wb = acc
        if epilogues:
            last = epilogues[-1]
            if not (len(epilogues) == 1 and try_reverse_compute_inline(sch, last)):
                for epi in epilogues:
                    schedule_injective_block(sch, epi, target)
        wb_loops = sch.get_loops(wb)
        sch.vectorize(wb_loops[-1])
        sch.decompose_reduction(conv, rc)

        if pack is not None:
            if pack_at is not None:
                sch.compute_at(pack, pack_at, preserve_unit_loops=True)
            else:
                schedule_injective_block(sch, pack, target, vectorize=False)

        # padding / remaining producers: parallel over channels
        for blk in producers:
            if info.depthwise and (block_name(sch, blk) == "pad_temp" or blk == phase):
                try:
                    sch.compute_at(blk, par, preserve_unit_loops=True)
                    continue
                except ScheduleError:
                    pass
            schedule_producer(sch, blk, target)
        return sch

    def schedule_fvec(self, sch: s_tir.Schedule, conv, info: ConvInfo, target: Target, t: dict):
        """Vectorize over output channels instead of width.

        The input value is a broadcast scalar, so stride and odd widths cost nothing; the
        weights are repacked to [F'/FV, I, KH, KW, FV], marked as a layout-rewrite preprocessor
        (`blocks.pack_weights`: a build with prepacked weights runs it once, at compile
        time; otherwise it runs per call, cheap when I*KH*KW*F is small, e.g. the first layer
        of a network). Output channels that are not a multiple of FV (274 -> 212) are padded
        to F' (zero weights; only the real channels are written): a predicate on the
        vectorized channel lanes would scalarize the inner loop.
        """
        fv_ = t["FV"]
        xu_ = t["XU"]
        epilogues = inline_epilogue_chain(sch, conv)
        producers = inline_producers(sch, conv, keep=("pad_temp",))
        if info.f % fv_:
            pad_conv_iterations(sch, conv, [1, fv_, 1, 1, 1, 1, 1])
        pack = pack_weights(sch, conv, 1, lambda f, c, y, x: (f // fv_, c, y, x, f % fv_))
        n, ff, yy, xx, rc, ry, rx = sch.get_loops(conv)
        fo, fv = sch.split(ff, [None, fv_])
        xo, xu = sch.split(xx, [None, xu_])
        sch.reorder(n, fo, yy, xo, rc, ry, rx, xu, fv)
        if info.weight_bytes > info.input_bytes:
            par = sch.fuse(n, fo, yy)
        else:
            sch.reorder(n, yy, fo)
            par = sch.fuse(n, yy, fo)
        sch.parallel(par)
        sch.unroll(xu)
        if fv_ > t["lanes"]:
            # several registers of channels per pixel (16 registers: see Conv2d.tiles)
            fvo, fv = sch.split(fv, [None, t["lanes"]])
            sch.unroll(fvo)
        sch.vectorize(fv)
        acc = sch.cache_write(conv, 0, "local")
        # accumulator tile laid out [x][f] so that each register holds FV channels
        sch.transform_layout(conv, ("write", 0), lambda n_, f, y, x: (n_, y, x, f))
        if info.f % fv_:
            # the crop to the real channels and the epilogue read the accumulators under the
            # tile (inlining the epilogue into the padded write-back loses its width predicate)
            if epilogues is None:
                raise NotApplicable("non-injective consumer")
            write_back_at(sch, acc, xo)
        else:
            sch.reverse_compute_at(acc, xo, preserve_unit_loops=True)
            if epilogues and not (len(epilogues) == 1 and try_reverse_compute_inline(sch, epilogues[-1])):
                for epi in epilogues:
                    schedule_injective_block(sch, epi, target)
            if t.get("wb_vec", True):
                sch.vectorize(sch.get_loops(acc)[-1])
        sch.decompose_reduction(conv, rc)
        schedule_injective_block(sch, pack, target, vectorize=False)
        for blk in producers:
            schedule_producer(sch, blk, target)
        return sch

    @staticmethod
    def schedule_gemm(sch: s_tir.Schedule, conv, info: ConvInfo, target: Target, t: dict):
        """Pointwise conv as a GEMM (`is_pointwise`), vectorized over output channels:

            weights OIHW -> [F'/FB, C, 1, 1, FB]            FB = FO * FV, F' = F rounded up to FB
            parallel (image, channel block)
              [for c_chunk:]                                  KC input channels (see _gemm_tiles)
                for pixel tile (PU pixels of the flattened plane):
                  acc[PU][FO] vectors (FV channels each)     registers
                  for c: acc[p][fo] += X[c, p] (broadcast) * W[c, fo] (vector load)
              out[f, p] = epilogue(acc)                       only the F real channels

        Channel counts that are not a multiple of FB (1000 classes, split tails) are padded:
        a predicate on the vectorized channel lanes would scalarize the inner loop.
        """
        fb_, pu_, kc_ = t["FV"] * t["FO"], t["PU"], t["KC"]
        epilogues = inline_epilogue_chain(sch, conv)
        if epilogues is None:
            raise NotApplicable("non-injective consumer")
        producers = inline_producers(sch, conv, keep=("pad_temp",))
        pad_conv_iterations(sch, conv, [1, fb_, 1, 1, 1, 1, 1])  # whole FB blocks
        pack = pack_weights(sch, conv, 1, lambda f, c, y, x: (f // fb_, c, y, x, f % fb_))

        n, ff, yy, xx, rc, ry, rx = sch.get_loops(conv)
        pixels = sch.fuse(yy, xx)
        fo, fi = sch.split(ff, [None, fb_])
        po, pu = sch.split(pixels, [None, pu_])
        if kc_:
            rco, rci = sch.split(rc, [None, kc_])
            sch.reorder(n, fo, rco, po, rci, ry, rx, pu, fi)
        else:
            sch.reorder(n, fo, po, rc, ry, rx, pu, fi)
        par = sch.fuse(n, fo)
        sch.parallel(par)
        fvo, fvi = sch.split(fi, [None, t["FV"]])
        sch.unroll(pu)
        sch.unroll(fvo)
        sch.vectorize(fvi)
        acc = sch.cache_write(conv, 0, "local")
        # accumulator tile [pixel][channel]: each FV run of channels is one register
        sch.transform_layout(conv, ("write", 0), lambda n_, f, y, x: (n_, y, x, f))
        # chunked: the accumulators of the whole channel block persist across chunks
        write_back_at(sch, acc, par if kc_ else po)
        sch.decompose_reduction(conv, rco if kc_ else rc)
        schedule_injective_block(sch, pack, target, vectorize=False)
        for blk in producers:
            schedule_producer(sch, blk, target)
        return sch


