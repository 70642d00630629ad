"""CPU rule for dense / matmul with few rows: [M,K] x [K,N] (M small, batch 1 => GEMV).

out[m, n] = sum_k x[m, k] * W[k, n], W row-major [K, N]: vectorize along N (contiguous), keep
a tile of NU x lanes columns in registers while k streams, parallel over column tiles, bias /
activation fused into the register write-back. The kernel is bound by streaming W once.
"""

from __future__ import annotations


from tvm.target import Target

from ..analysis import NotApplicable, inline_epilogue_chain, inline_producers, match_matmul, try_reverse_compute_inline
from ..target import dtype_bits, num_cores, vector_bits
from . import dense_int8
from .base import CPUScheduleRule
from .blocks import schedule_flat
from .dot_intrin import dot_product_for


class Dense(CPUScheduleRule):
    """GEMV-style dense with W laid out [K, N] (what Relax matmul and folded Gemm give)."""

    def __init__(self, split_k: bool | None = None, prepacked_weights: bool = False):
        self.split_k = split_k  # None: decide from the weight size
        # True when the build hoists marked weight repacks (see prepack.py): u8 x i8 -> i32
        # dense then runs on the dot-product instruction (dense_int8), if the target has one
        self.prepacked_weights = prepacked_weights

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        matched = match_matmul(self, func, target, max_rows=16)
        if matched is None:
            return None
        sch, blk, loops, exts = matched
        dot = dot_product_for(target) if self.prepacked_weights else None
        if dot is not None and dense_int8.schedule(sch, blk, loops, exts, target, dot) is not None:
            return sch
        m = exts[0] if len(exts) == 3 else 1
        k, n = exts[-1], exts[-2]
        bits = dtype_bits(sch.get(blk).writes[0].source.dtype)
        threads = num_cores(target)
        split_k = self.split_k if self.split_k is not None else (
            k * n * bits // 8 >= (1 << 20) and k >= 64 * threads and m == 1)
        try:
            if split_k:
                self._schedule_split_k(sch, blk, loops, exts, target)
            else:
                self._schedule(sch, blk, loops, exts, target)
        except NotApplicable:
            return None
        return sch

    def _schedule_split_k(self, sch, blk, loops, exts, target):
        """Big weights: each thread streams a contiguous block of W's rows (sequential memory,
        prefetcher friendly) into its own partial sums; the partials are then added up.

        Column tiling instead makes every thread jump a whole row (N*4 bytes, a new page) per
        256 bytes it reads, which leaves the kernel at a fraction of memory bandwidth."""
        epilogues = inline_epilogue_chain(sch, blk)
        if epilogues is None:
            raise NotApplicable("non-injective consumer")
        producers = inline_producers(sch, blk)
        bits = dtype_bits(sch.get(blk).writes[0].source.dtype)
        vl = max(vector_bits(target) // bits, 1)
        n, k = exts[-2], exts[-1]
        threads = num_cores(target)
        parts = threads
        while parts > 1 and k % parts:
            parts -= 1
        parts = max(parts, 1)
        kk = loops[-1]
        kt, ki = sch.split(kk, [parts, None])
        rf = sch.rfactor(kt, factor_axis=0)
        # rf block: partial[kt, m, n] += x[m, k] * W[k, n]
        rf_loops = sch.get_loops(rf)
        # loops: (m?), n, kt, ki  (spatial kt after rfactor)
        if len(rf_loops) == 4:
            mm, nn, kt_, ki_ = rf_loops
        else:
            mm, (nn, kt_, ki_) = None, rf_loops
        nvl = vl if n % vl == 0 else (8 if n % 8 == 0 else (4 if n % 4 == 0 else 1))
        ku = 4 if (k // parts) % 4 == 0 else 1
        ko, kui = sch.split(ki_, [None, ku])
        no, nv = sch.split(nn, [None, nvl])
        order = [kt_] + ([mm] if mm is not None else []) + [ko, no, kui, nv]
        sch.reorder(*order)
        sch.parallel(kt_)
        sch.unroll(kui)
        if nvl > 1:
            sch.vectorize(nv)
        sch.decompose_reduction(rf, ko)
        # final: out[m, n] = sum_kt partial[kt, m, n], vectorized over n
        f_loops = sch.get_loops(blk)
        fn, fkt = f_loops[-2], f_loops[-1]
        fno, fnv = sch.split(fn, [None, nvl])
        sch.reorder(fno, fkt, fnv)
        if nvl > 1:
            sch.vectorize(fnv)
        sch.decompose_reduction(blk, fkt)
        for epi in epilogues:
            schedule_flat(sch, epi, target)
        for p in producers:
            schedule_flat(sch, p, target)

    @staticmethod
    def tiles(n: int, k: int, target: Target, bits: int = 32) -> dict:
        vl = max(vector_bits(target) // bits, 1)
        while vl > 1 and n % vl:
            vl //= 2
        if vl < 4:
            vl = max(vector_bits(target) // bits, 1)  # predicated tail
        threads = num_cores(target)
        nu = 4
        while nu > 1 and (n % (vl * nu) or n // (vl * nu) < 2 * threads):
            nu //= 2
        return {"VL": vl, "NU": nu, "KU": 4 if k % 4 == 0 else 1}

    def _schedule(self, sch, blk, loops, exts, target):
        epilogues = inline_epilogue_chain(sch, blk)
        if epilogues is None:
            raise NotApplicable("non-injective consumer")
        producers = inline_producers(sch, blk)
        bits = dtype_bits(sch.get(blk).writes[0].source.dtype)
        n, k = exts[-2], exts[-1]
        t = self.tiles(n, k, target, bits)
        if len(loops) == 3:
            mm, nn, kk = loops
        else:
            mm, (nn, kk) = None, loops
        no, nu, nv = sch.split(nn, [None, t["NU"], t["VL"]])
        ko, ku = sch.split(kk, [None, t["KU"]])
        order = [no] + ([mm] if mm is not None else []) + [ko, ku, nu, nv]
        sch.reorder(*order)
        sch.parallel(no)
        if mm is not None:
            sch.unroll(mm)
        sch.unroll(ku)
        sch.unroll(nu)
        sch.vectorize(nv)
        acc = sch.cache_write(blk, 0, "local")
        sch.reverse_compute_at(acc, no, preserve_unit_loops=True)
        if epilogues:
            if not (len(epilogues) == 1 and try_reverse_compute_inline(sch, epilogues[-1])):
                for epi in epilogues:
                    schedule_flat(sch, epi, target)
        acc_loops = sch.get_loops(acc)
        _, v = sch.split(acc_loops[-1], [None, t["VL"]])
        sch.vectorize(v)
        sch.decompose_reduction(blk, ko)
        for p in producers:
            schedule_flat(sch, p, target)
