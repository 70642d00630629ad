"""Analysis the schedule rules of both families share: which block is the conv, the matmul,
the window reduction; the blocks around it (producers to inline, epilogues to fuse); loop
extents and tile divisors.

A rule learns here whether a PrimFunc is its kind (`match_*` returns None when not) and
raises `NotApplicable` where a deeper look finds a shape it does not schedule; any other
exception is a bug of the rule (`ScheduleForTargets` fails on it in tests).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import ScheduleError
from tvm.sym.pattern import detect_linear_equation
from tvm.target import Target

from .target import dtype_bits, vector_bits


class NotApplicable(ValueError):
    """The rule does not schedule this PrimFunc (found while scheduling, not by `match_*`)."""


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def best_divisor(n: int, upper: int, lower: int = 1) -> int | None:
    """Largest divisor of n in [lower, upper], or None."""
    for d in range(min(n, upper), lower - 1, -1):
        if n % d == 0:
            return d
    return None


def const_int(x) -> int | None:
    if isinstance(x, int):
        return x
    if isinstance(x, tirx.IntImm):
        return int(x.value)
    return None


def loop_extent(sch: s_tir.Schedule, loop) -> int | None:
    return const_int(sch.get(loop).extent)


def block_name(sch: s_tir.Schedule, block) -> str:
    return sch.get(block).name_hint


def child_blocks(sch: s_tir.Schedule):
    """The blocks directly under the function's root block ([] when it has none)."""
    try:
        root = sch.get_sblock("root")
    except ScheduleError:
        return []
    return sch.get_child_blocks(root)


def iter_kinds(sch: s_tir.Schedule, block) -> str:
    kinds = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(kinds.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def is_spatial(sch: s_tir.Schedule, block) -> bool:
    return all(k == "S" for k in iter_kinds(sch, block))


def try_compute_inline(sch: s_tir.Schedule, block) -> bool:
    try:
        sch.compute_inline(block)
        return True
    except ScheduleError:
        return False


def try_reverse_compute_inline(sch: s_tir.Schedule, block) -> bool:
    try:
        sch.reverse_compute_inline(block)
        return True
    except ScheduleError:
        return False


def inline_epilogue_chain(sch: s_tir.Schedule, main_block) -> list:
    """Inline the injective consumers of ``main_block`` into one another.

    Returns the remaining consumer blocks (usually one: the last epilogue block writing the
    function's output), in program order.
    """
    blocks = child_blocks(sch)
    names = [block_name(sch, b) for b in blocks]
    main_name = block_name(sch, main_block)
    idx = names.index(main_name)
    consumers = [b for b in blocks[idx + 1 :]]
    remaining = []
    for blk in consumers:
        if not is_spatial(sch, blk):
            return None
        # A consumer that is not the last block is an intermediate: inline it into its users.
        if blk is not consumers[-1] and try_compute_inline(sch, blk):
            continue
        remaining.append(blk)
    return remaining


def has_condition(sch: s_tir.Schedule, block) -> bool:
    """True if the block's value has an if_then_else (a real padding, not a plain copy)."""
    return "if_then_else" in str(sch.get(block).body)


def inline_producers(sch: s_tir.Schedule, main_block, keep: tuple = ()) -> list:
    """Inline injective producer blocks; return the rest.

    Blocks named in ``keep`` (padding) are kept when they really pad; a zero-width "pad"
    (LegalizeOps emits one for padding=0) is a plain copy and is inlined like the rest.
    """
    blocks = child_blocks(sch)
    names = [block_name(sch, b) for b in blocks]
    idx = names.index(block_name(sch, main_block))
    rest = []
    for blk in blocks[:idx]:
        if block_name(sch, blk) in keep and has_condition(sch, blk):
            rest.append(blk)
        elif not is_spatial(sch, blk) or not try_compute_inline(sch, blk):
            rest.append(blk)
    return rest


def spatial_loops(sch: s_tir.Schedule, blk, target: Target):
    """(loops, extents, total elements, vector lanes) of a spatial block, or None when it has
    no loops or a dynamic extent (then its outer loop is just parallelized)."""
    loops = sch.get_loops(blk)
    if not loops:
        return None
    exts = [loop_extent(sch, l) for l in loops]
    if any(e is None for e in exts):
        sch.parallel(loops[0])
        return None
    total = 1
    for e in exts:
        total *= e
    stmt = sch.get(blk)
    bits = dtype_bits(stmt.writes[0].source.dtype) if stmt.writes else 32
    return loops, exts, total, max(vector_bits(target) // bits, 1)


def match_window_reduction(rule, func, target: Target):
    """(schedule, reduction block, its loops, their extents, number of leading output loops)
    when `func` is for a target `rule` serves and has one reduction block 'S..SR..R' reading
    one tensor (pooling windows, LRN's avg_pool3d, mean over axes: not a conv or matmul,
    which read two), else None: the common start of the pooling rules' `apply`."""
    if not isinstance(func, tirx.PrimFunc) or not rule.is_target_available(target):
        return None
    sch = s_tir.Schedule(func)
    reds = [b for b in child_blocks(sch) if not is_spatial(sch, b)]
    if len(reds) != 1:
        return None
    red = reds[0]
    kinds = iter_kinds(sch, red)
    ns = len(kinds) - len(kinds.lstrip("S"))
    if ns == 0 or set(kinds[ns:]) != {"R"}:
        return None
    stmt = sch.get(red)
    out = stmt.writes[0].source
    if len({r.source for r in stmt.reads if not r.source.same_as(out)}) != 1:
        return None
    loops = sch.get_loops(red)
    exts = [loop_extent(sch, l) for l in loops]
    if any(e is None for e in exts) or len(loops) != len(kinds):
        return None
    return sch, red, loops, exts, ns


class ConvInfo:  # pylint: disable=too-few-public-methods,too-many-instance-attributes
    """Shapes of a conv2d reduction block, read from its loops and buffer accesses."""

    def __init__(self, sch, block):
        stmt = sch.get(block)
        loops = sch.get_loops(block)
        ext = [loop_extent(sch, l) for l in loops]
        if any(e is None for e in ext):
            raise NotApplicable("dynamic shape")
        self.n, self.f, self.oh, self.ow, self.rc, self.kh, self.kw = ext
        ivars = [iv.var for iv in stmt.iter_vars]
        out = stmt.writes[0].source
        self.out_dtype = str(out.dtype)
        reads = [r for r in stmt.reads if not r.source.same_as(out)]
        if len(reads) != 2:
            raise NotApplicable("conv2d expects two inputs")
        data, weight = reads
        if len(data.region) != 4 or len(weight.region) != 4:
            raise NotApplicable("not 4-D")
        self.data_buffer = data.source
        self.weight_buffer = weight.source
        self.in_dtype = str(data.source.dtype)

        def coef(expr, var):
            res = detect_linear_equation(expr, [var])
            return const_int(res[0]) if len(res) else None

        self.stride_h = coef(data.region[2].min, ivars[2])
        self.stride_w = coef(data.region[3].min, ivars[3])
        if not self.stride_h or not self.stride_w:
            raise NotApplicable("cannot read stride")
        self.in_c = const_int(data.source.shape[1])
        self.in_h = const_int(data.source.shape[2])
        self.in_w = const_int(data.source.shape[3])
        # depthwise: one input channel per output channel (channel index moves with ff)
        ch = data.region[1].min
        self.depthwise = self.rc == 1 and len(detect_linear_equation(ch, [ivars[1]])) > 0 and \
            const_int(detect_linear_equation(ch, [ivars[1]])[0]) == 1
        self.weight_bytes = self.f * self.rc * self.kh * self.kw * dtype_bits(self.in_dtype) // 8
        self.input_bytes = self.in_c * self.in_h * self.in_w * dtype_bits(self.in_dtype) // 8


def match_conv(rule, func, target: Target):
    """(schedule, conv block, ConvInfo) when `func` is a static-shape NCHW conv2d for a
    target `rule` serves, else None: the common start of every conv rule's `apply`."""
    if not isinstance(func, tirx.PrimFunc) or not rule.is_target_available(target):
        return None
    sch = s_tir.Schedule(func)
    conv = find_conv_block(sch)
    if conv is None:
        return None
    try:
        return sch, conv, ConvInfo(sch, conv)
    except NotApplicable:
        return None


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


def is_pointwise(info: ConvInfo) -> bool:
    """A 1x1, stride-1, unpadded conv with one group: a GEMM over the flattened pixels."""
    return (info.kh == info.kw == 1 and info.stride_h == info.stride_w == 1 and not info.depthwise
            and info.rc == info.in_c and (info.in_h, info.in_w) == (info.oh, info.ow))


def match_matmul(rule, func, target: Target, max_rows: int):
    """(schedule, matmul block, its loops, their extents) when `func` is a static-shape
    [M<=max_rows, K] x [K, N] matmul for a target `rule` serves, else None: the common
    start of the dense rules' `apply`."""
    if not isinstance(func, tirx.PrimFunc) or not rule.is_target_available(target):
        return None
    sch = s_tir.Schedule(func)
    blk, transposed = find_matmul(sch)
    if blk is None or transposed:
        return None
    loops = sch.get_loops(blk)
    exts = [loop_extent(sch, l) for l in loops]
    if any(e is None for e in exts) or (len(exts) == 3 and exts[0] > max_rows):
        return None
    return sch, blk, loops, exts


def find_matmul(sch: s_tir.Schedule):
    """(block, transposed) for a single 'S..SR' x@W block, else (None, None)."""
    blocks = child_blocks(sch)
    reds = [b for b in blocks if not is_spatial(sch, b)]
    if len(reds) != 1:
        return None, None
    blk = reds[0]
    kinds = iter_kinds(sch, blk)
    if kinds not in ("SSR", "SR"):
        return None, None
    stmt = sch.get(blk)
    out = stmt.writes[0].source
    reads = [r for r in stmt.reads if not r.source.same_as(out)]
    if len(reads) != 2:
        return None, None
    ivars = [iv.var for iv in stmt.iter_vars]
    n_var, k_var = ivars[-2], ivars[-1]
    w = reads[1]
    if len(w.region) != 2:
        return None, None
    i0, i1 = w.region[0].min, w.region[1].min
    if i0.same_as(k_var) and i1.same_as(n_var):
        return blk, False
    if i0.same_as(n_var) and i1.same_as(k_var):
        return blk, True
    return None, None
