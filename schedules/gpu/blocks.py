"""Thread bindings of the blocks around a GPU kernel's main block, shared by the GPU rules."""

from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from ..analysis import try_reverse_compute_inline
from .base import max_threads


def finish_epilogue(sch, acc, epilogues, target):
    if epilogues:
        if not (len(epilogues) == 1 and try_reverse_compute_inline(sch, epilogues[-1])):
            for epi in epilogues:
                bind_flat(sch, epi, target)


def thread_per_output(sch: s_tir.Schedule, block, spatial: int, epilogues: list, target: Target):
    """One thread per output element of a reduction `block` (its first `spatial` loops fused
    and bound), the reduction loops (a small window) unrolled in the thread, the accumulator
    in a register and `epilogues` fused into its write-back."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops[:spatial])
    bx, tx = sch.split(fused, [None, min(256, max_threads(target))])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    for loop in loops[spatial:]:
        sch.unroll(loop)
    acc = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(acc, tx, preserve_unit_loops=True)
    finish_epilogue(sch, acc, epilogues, target)
    sch.decompose_reduction(block, loops[spatial])


def bind_flat(sch: s_tir.Schedule, blk, target: Target, threads: int | None = None):
    """Fuse a spatial block's loops and bind them to blockIdx.x / threadIdx.x."""
    loops = sch.get_loops(blk)
    if not loops:
        loops = [sch.add_unit_loop(blk)]
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    bx, tx = sch.split(fused, [None, threads or min(256, max_threads(target))])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def cooperative_fetch(sch, blk, thread_extents, vec: int = 1):
    loops = sch.get_loops(blk)
    # loops above the copy are the compute_at loops; the copy's own loops follow them
    n_outer = len(sch.get_loops(blk)) - len(sch.get(blk).iter_vars)
    inner = loops[n_outer:]
    fused = sch.fuse(*inner) if len(inner) > 1 else inner[0]
    names = ["threadIdx.z", "threadIdx.y", "threadIdx.x"][-len(thread_extents):]
    factors = [None] + list(thread_extents) + ([vec] if vec > 1 else [])
    parts = sch.split(fused, factors)
    for loop, name in zip(parts[1 : 1 + len(thread_extents)], names):
        sch.bind(loop, name)
    if vec > 1:
        sch.vectorize(parts[-1])
