"""GPU rule for dense with few rows, W laid out [K, N] (Relax matmul / folded ONNX Gemm).

out[m, n] = sum_k x[m, k] W[k, n]. Threads along x own consecutive columns (coalesced reads
of each W row); TY threads along y split K and combine with a cross-thread reduction; the
activation row x is read through the cache. Bias/activation fused in the write-back.
"""

from __future__ import annotations

from tvm.target import Target

from ..common import NamedRule, inline_epilogue_chain, inline_producers
from ..cpu.dense import match_matmul
from .conv2d import _finish_epilogue, _max_threads, bind_flat


class Dense(NamedRule):
    """GEMV-shaped matmul: [M<=8, K] x [K, N]."""

    family = "gpu"

    def apply(self, func, target: Target, tunable: bool):  # pylint: disable=unused-argument
        matched = match_matmul(self, func, target, max_rows=8)
        if matched is None:
            return None
        sch, blk, loops, exts = matched
        try:
            epilogues = inline_epilogue_chain(sch, blk)
            for p in inline_producers(sch, blk):
                bind_flat(sch, p, target)
            tx_n = 32
            ty_n = max(1, min(8, _max_threads(target) // tx_n))
            if len(loops) == 3:
                mm, nn, kk = loops
            else:
                mm, (nn, kk) = None, loops
            bx, tx = sch.split(nn, [None, tx_n])
            ko, ty = sch.split(kk, [None, ty_n])
            order = [bx, tx] + ([mm] if mm is not None else []) + [ty, ko]
            sch.reorder(*order)
            sch.bind(bx, "blockIdx.x")
            sch.bind(tx, "threadIdx.x")
            sch.bind(ty, "threadIdx.y")  # cross-thread reduction over K
            if mm is not None:
                sch.unroll(mm)
            _finish_epilogue(sch, None, epilogues, target)
        except Exception:  # pylint: disable=broad-except
            return None
        return sch
