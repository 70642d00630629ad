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
predicated tail; widths get a dividing tile when one exists.
The accumulation dtype is the conv block's output dtype (float32, or int32 for int8 inputs).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.sym.pattern import detect_linear_equation
from tvm.target import Target

from ..common import (
    NamedRule,
    best_divisor,
    block_name,
    child_blocks,
    const_int,
    dtype_bits,
    inline_epilogue_chain,
    inline_producers,
    iter_kinds,
    is_spatial,
    loop_extent,
    num_vector_registers,
    try_compute_inline,
    try_reverse_compute_inline,
    vector_bits,
)


class ConvInfo:  # pylint: disable=too-few-public-methods,too-many-instance-attributes
    """Shapes of a conv2d reduction block, read from its loops and buffer accesses."""

    def __init__(self, sch, block):
        stmt = sch.get(block)
        loops = sch.get_loops(block)
        ext = [loop_extent(sch, l) for l in loops]
        if any(e is None for e in ext):
            raise ValueError("dynamic shape")
        self.n, self.f, self.oh, self.ow, self.rc, self.kh, self.kw = ext
        ivars = [iv.var for iv in stmt.iter_vars]
        out = stmt.writes[0].source
        self.out_dtype = str(out.dtype)
        reads = [r for r in stmt.reads if not r.source.same_as(out)]
        if len(reads) != 2:
            raise ValueError("conv2d expects two inputs")
        data, weight = reads
        if len(data.region) != 4 or len(weight.region) != 4:
            raise ValueError("not 4-D")
        self.data_buffer = data.source
        self.weight_buffer = weight.source
        self.in_dtype = str(data.source.dtype)

        def coef(expr, var):
            res = detect_linear_equation(expr, [var])
            return const_int(res[0]) if len(res) else None

        self.stride_h = coef(data.region[2].min, ivars[2])
        self.stride_w = coef(data.region[3].min, ivars[3])
        if not self.stride_h or not self.stride_w:
            raise ValueError("cannot read stride")
        self.in_c = const_int(data.source.shape[1])
        self.in_h = const_int(data.source.shape[2])
        self.in_w = const_int(data.source.shape[3])
        # depthwise: one input channel per output channel (channel index moves with ff)
        ch = data.region[1].min
        self.depthwise = self.rc == 1 and len(detect_linear_equation(ch, [ivars[1]])) > 0 and \
            const_int(detect_linear_equation(ch, [ivars[1]])[0]) == 1
        self.weight_bytes = self.f * self.rc * self.kh * self.kw * dtype_bits(self.in_dtype) // 8
        self.input_bytes = self.in_c * self.in_h * self.in_w * dtype_bits(self.in_dtype) // 8


def find_conv_block(sch: s_tir.Schedule):
    """The single conv2d NCHW reduction block of the function, or None."""
    blocks = child_blocks(sch)
    reductions = [b for b in blocks if not is_spatial(sch, b)]
    if len(reductions) != 1:
        return None
    blk = reductions[0]
    name = block_name(sch, blk)
    if "conv2d" not in name or "nhwc" in name.lower():
        return None
    if iter_kinds(sch, blk) != "SSSSRRR":
        return None
    if len(sch.get_loops(blk)) != 7:
        return None
    return blk


def _pick_width_tile(ow: int, max_tile: int) -> tuple[int, bool]:
    """Tile along the output width: a divisor of ow if a usable one exists, else predicated."""
    d = best_divisor(ow, max_tile, lower=4)
    if d is not None and (d >= 7 or d == ow or d >= max_tile // 2):
        return d, False
    if ow <= max_tile:
        return ow, False
    # no good divisor (prime widths such as 111, 113): vector-sized tile with a tail
    d2 = best_divisor(ow, max_tile, lower=2)
    if d2 is not None and d2 >= max_tile // 4 and d2 >= 4:
        return d2, False
    return max_tile // 2, True


def _pick_channel_tile(f: int, target_fi: int) -> int:
    """Output-channel register tile: prefer a divisor of f close to target_fi."""
    if f <= target_fi:
        return f
    d = best_divisor(f, target_fi, lower=max(2, (target_fi * 2) // 3))
    if d is not None:
        return d
    return target_fi  # predicated tail (odd split-layer channel counts)


class Conv2d(NamedRule):
    """Direct NCHW conv2d with register tiling, parallel outer loops and fused epilogue."""

    family = "cpu"

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        conv = find_conv_block(sch)
        if conv is None:
            return None
        try:
            info = ConvInfo(sch, conv)
        except ValueError:
            return None
        self.schedule(sch, conv, info, target)
        return sch

    # ------------------------------------------------------------------
    @staticmethod
    def tiles(info: ConvInfo, target: Target) -> dict:
        """Analytic tile sizes for the conv (exposed for tests and benchmarks)."""
        vbits = vector_bits(target)
        acc_bits = dtype_bits(info.out_dtype)
        vl = max(vbits // acc_bits, 1)  # lanes per register
        regs = num_vector_registers(target)
        acc_budget = max(regs - 4, 4)  # registers for accumulators
        if info.depthwise:
            xi, pred_x = _pick_width_tile(info.ow, 2 * vl if vl >= 8 else 4 * vl)
            nvec = -(-xi // vl)
            yi = best_divisor(info.oh, max(1, min(4, acc_budget // (2 * nvec)))) or 1
            return {"FI": 1, "XI": xi, "YI": yi, "pred_x": pred_x, "lanes": vl}
        # width tile: up to two registers wide
        xi, pred_x = _pick_width_tile(info.ow, max(2 * vl, 8) if vl >= 8 else 4 * vl)
        nvec = max(1, -(-xi // vl))
        fi = _pick_channel_tile(info.f, max(1, min(16, (acc_budget * 3 // 4) // nvec)))
        yi = 1
        return {"FI": fi, "XI": xi, "YI": yi, "pred_x": pred_x, "lanes": vl}

    def schedule(self, sch: s_tir.Schedule, conv, info: ConvInfo, target: Target):
        t = self.tiles(info, target)
        epilogues = inline_epilogue_chain(sch, conv)
        producers = inline_producers(sch, conv, keep=("pad_temp",))

        n, ff, yy, xx, rc, ry, rx = sch.get_loops(conv)
        fo, fi = sch.split(ff, [None, t["FI"]])
        yo, yi = sch.split(yy, [None, t["YI"]])
        xo, xi = sch.split(xx, [None, t["XI"]])
        if info.depthwise or info.weight_bytes > info.input_bytes:
            # weight-heavy (deep layers): each thread keeps its channel block's weights hot
            sch.reorder(n, fo, yo, xo, rc, ry, rx, yi, fi, xi)
            par = sch.fuse(n, fo, yo)
        else:
            # activation-heavy (early layers): threads split rows, weights are small
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
            if len(epilogues) == 1 and try_reverse_compute_inline(sch, last):
                pass
            else:
                for epi in epilogues:
                    schedule_injective_block(sch, epi, target)
        wb_loops = sch.get_loops(wb)
        sch.vectorize(wb_loops[-1])
        sch.decompose_reduction(conv, rc)

        # padding / remaining producers: parallel over channels
        for blk in producers:
            if info.depthwise and block_name(sch, blk) == "pad_temp":
                try:
                    sch.compute_at(blk, par, preserve_unit_loops=True)
                    continue
                except Exception:  # pylint: disable=broad-except
                    pass
            schedule_injective_block(sch, blk, target)
        return sch


def schedule_injective_block(sch: s_tir.Schedule, blk, target: Target, min_parallel: int = 4096):
    """Parallel outer / vectorized inner for one spatial block at root level."""
    loops = sch.get_loops(blk)
    if not loops:
        return
    exts = [loop_extent(sch, l) for l in loops]
    if any(e is None for e in exts):
        sch.parallel(loops[0])
        return
    total = 1
    for e in exts:
        total *= e
    stmt = sch.get(blk)
    bits = dtype_bits(stmt.writes[0].source.dtype) if stmt.writes else 32
    vl = max(vector_bits(target) // bits, 1)
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
    if inner_ext >= 2:
        if inner_ext % vl == 0 and inner_ext > vl:
            _, v = sch.split(inner, [None, vl])
            sch.vectorize(v)
        elif inner_ext <= 4 * vl:
            sch.vectorize(inner)
