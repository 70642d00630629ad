"""GPU rule for dense with few rows, W laid out [K, N] (Relax matmul / folded ONNX Gemm).

out[m, n] = sum_k x[m, k] W[k, n], with float32 or float16 W and a float32 (or float16)
accumulator. At batch 1 this is a GEMV bound by reading W once (VGG's 25088x4096 layer:
205 MB in float16), so the schedule is about memory parallelism:

* each thread loads VEC consecutive columns of a W row at once (one 16-byte load: 8 float16
  or 4 float32) and keeps VEC x M float32 accumulators in registers; LANES threads along N cover a
  row segment of LANES * VEC columns (64-128 contiguous bytes);
* TK threads along K of the same block take rows k = ko * TK + tk, so a 4096-column layer
  still has 128 blocks (LANES * VEC = 32 columns each) for the GPU's SMs; their partial sums
  are added by a cross-thread reduction (``rfactor`` over tk, then a reduction bound to
  threadIdx.y) and the bias/activation epilogue is applied once per output.

Column counts that 16-byte vectors do not divide (a split's odd tail: 13, 37 columns) use
scalar loads (VEC = 1); a partial last block is predicated.
"""

from __future__ import annotations

from tvm.target import Target

from ..analysis import NotApplicable, best_divisor, inline_epilogue_chain, inline_producers, match_matmul
from ..target import dtype_bits
from .base import GPUScheduleRule, max_threads
from .blocks import bind_flat, finish_epilogue

LOAD_BYTES = 16  # one 128-bit load per thread and row


class Dense(GPUScheduleRule):
    """GEMV-shaped matmul: [M<=8, K] x [K, N]."""

    @staticmethod
    def tiles(n: int, k: int, w_bits: int, max_threads: int) -> dict:
        """VEC columns per load, LANES threads along N, TK threads along K."""
        vec = LOAD_BYTES * 8 // w_bits
        if n % vec:
            vec = 1
        lanes = 4 if vec > 1 else 32
        # TK must divide K: rfactor over a split with a tail drops the tail's predicate, and
        # the threads then read past the end of x and W (seen on the H100: K = 90, TK = 11)
        tk = best_divisor(k, max(1, min(64, max_threads // lanes, k // 8)))
        return {"VEC": vec, "LANES": lanes, "TK": tk}

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        matched = match_matmul(self, func, target, max_rows=8)
        if matched is None:
            return None
        sch, blk, loops, exts = matched
        try:
            w_bits = dtype_bits(sch.get(blk).reads[-1].source.dtype)
            t = self.tiles(exts[-2], exts[-1], w_bits, max_threads(target))
            epilogues = inline_epilogue_chain(sch, blk)
            for producer in inline_producers(sch, blk):
                bind_flat(sch, producer, target)
            if len(loops) == 3:
                mm, nn, kk = loops
            else:
                mm, (nn, kk) = None, loops
            bx, lane, vec = sch.split(nn, [None, t["LANES"], t["VEC"]])
            ko, tk = sch.split(kk, [None, t["TK"]])
            sch.reorder(bx, lane, tk, ko, *([mm] if mm is not None else []), vec)
            partial = sch.rfactor(tk, factor_axis=0)
            # partial[tk, m, n] (each thread's sums, in registers) is computed inside the
            # loops of the write-back block, which sums over tk across threads
            bx, lane, tk_sum, *outputs = sch.get_loops(blk)
            sch.compute_at(partial, lane, preserve_unit_loops=True)
            sch.bind(bx, "blockIdx.x")
            sch.bind(lane, "threadIdx.x")
            sch.set_scope(partial, 0, "local")
            tk, *columns, ko = sch.get_loops(partial)[2:]
            sch.reorder(ko, *columns)
            sch.bind(tk, "threadIdx.y")
            if mm is not None:
                sch.unroll(columns[0])
            sch.unroll(columns[-1])
            if t["VEC"] > 1:
                # one 16-byte load of the row segment into registers; the multiply-adds stay
                # scalar (CUDA codegen cannot zero-initialise float32x8 accumulators)
                w_row = sch.cache_read(partial, 1, "local")
                sch.compute_at(w_row, ko, preserve_unit_loops=True)
                sch.vectorize(sch.get_loops(w_row)[-1])
            sch.decompose_reduction(partial, ko)
            # several rows' loads in flight per thread
            sch.annotate(ko, "pragma_auto_unroll_max_step", 8)
            sch.annotate(ko, "pragma_unroll_explicit", 1)
            sch.reorder(*outputs, tk_sum)
            sch.bind(tk_sum, "threadIdx.y")
            # The reduced sums reach every thread of the block, so the epilogue runs in the same
            # kernel from registers (each of the TK threads writes the same values: a few KiB
            # of redundant stores against MiBs of weights read).
            if epilogues:
                sch.set_scope(blk, 0, "local")
                for epilogue in epilogues:
                    sch.reverse_compute_at(epilogue, lane, preserve_unit_loops=True)
            else:
                finish_epilogue(sch, None, epilogues, target)
        except NotApplicable:
            return None
        return sch
