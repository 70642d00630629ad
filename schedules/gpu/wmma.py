"""The five CUDA wmma tensor intrinsics the tensor-core rule needs (16x16x16, float16 in,
float32 accumulator), registered on first use.

TVM ships these in ``tvm.s_tir.tensor_intrin.cuda``, but importing that module registers
every mma/wmma/ldmatrix variant it knows and took 16-21 s on the 2-core development machine,
once per process; these five take well under a second.

The multiply-accumulate's description reads the *column* operand first,
``C[i, j] += cast(B[k, j]) * cast(A[i, k])``, because tensorize matches expressions
operand by operand and a legalized conv2d multiplies (data, weight) in that order: the rule
makes the weights the row operand A[M = channels, K] and the im2col'ed data the column
operand B[K, N = pixels] (so C[channel, pixel] is NCHW's own order).
"""

from __future__ import annotations

from tvm.script import tirx as T
from tvm.s_tir import TensorIntrin

FRAG = 16  # m = n = k of the fragments
IN_DTYPE, ACC_DTYPE = "float16", "float32"
SHARED = "shared.dyn"  # the operand slabs
RESULT_SHARED = "shared"  # the result tile: another scope, so that no pass folds it into a slab

LOAD_A = "mulayer_wmma_load_a_f16_16x16x16"
LOAD_B = "mulayer_wmma_load_b_f16_16x16x16"
FILL = "mulayer_wmma_fill_f32_16x16x16"
MMA = "mulayer_wmma_mma_f16f16f32_16x16x16"
STORE = "mulayer_wmma_store_f32_16x16x16"


def _fragment_index(buf, stride):
    """Index of the 16x16 fragment that starts at ``buf``'s element offset, in a fragment
    array whose rows are ``stride`` elements long."""
    return buf.elem_offset // stride // FRAG * (stride // FRAG) + buf.elem_offset % stride // FRAG


def _load(scope: str):
    """shared [16, 16] float16 -> wmma fragment ``scope`` (row-major for A and for B)."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (FRAG, FRAG), IN_DTYPE, align=64, offset_factor=FRAG, scope=SHARED)
        C = T.match_buffer(c, (FRAG, FRAG), IN_DTYPE, align=64, offset_factor=FRAG, scope=scope)
        with T.sblock("root"):
            T.reads(A[0:FRAG, 0:FRAG])
            T.writes(C[0:FRAG, 0:FRAG])
            for i, j in T.grid(FRAG, FRAG):
                with T.sblock("load"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    C[vi, vj] = A[vi, vj]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        s1, s0, d1, d0 = T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (FRAG, FRAG), IN_DTYPE, align=64, offset_factor=FRAG, scope=SHARED,
                           strides=[s1, s0])
        C = T.match_buffer(c, (FRAG, FRAG), IN_DTYPE, align=64, offset_factor=FRAG, scope=scope,
                           strides=[d1, d0])
        with T.sblock("root"):
            T.reads(A[0:FRAG, 0:FRAG])
            T.writes(C[0:FRAG, 0:FRAG])
            T.evaluate(T.tvm_load_matrix_sync(C.data, FRAG, FRAG, FRAG, _fragment_index(C, d1),
                                              A.access_ptr("r", ptr_type=IN_DTYPE), s1, "row_major",
                                              dtype="void"))

    return desc, impl


def _fill():
    @T.prim_func(s_tir=True)
    def desc(c: T.handle) -> None:
        C = T.match_buffer(c, (FRAG, FRAG), ACC_DTYPE, align=64, offset_factor=FRAG, scope="wmma.accumulator")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:FRAG, 0:FRAG])
            for i, j in T.grid(FRAG, FRAG):
                with T.sblock("init"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    C[vi, vj] = T.float32(0)

    @T.prim_func(s_tir=True)
    def impl(c: T.handle) -> None:
        d1, d0 = T.int32(), T.int32()
        C = T.match_buffer(c, (FRAG, FRAG), ACC_DTYPE, align=64, offset_factor=FRAG, scope="wmma.accumulator",
                           strides=[d1, d0])
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:FRAG, 0:FRAG])
            T.evaluate(T.tvm_fill_fragment(C.data, FRAG, FRAG, FRAG, _fragment_index(C, d1), T.float32(0),
                                           dtype="void"))

    return desc, impl


def _mma():
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (FRAG, FRAG), IN_DTYPE, align=64, offset_factor=FRAG, scope="wmma.matrix_a")
        B = T.match_buffer(b, (FRAG, FRAG), IN_DTYPE, align=64, offset_factor=FRAG, scope="wmma.matrix_b")
        C = T.match_buffer(c, (FRAG, FRAG), ACC_DTYPE, align=64, offset_factor=FRAG, scope="wmma.accumulator")
        with T.sblock("root"):
            T.reads(C[0:FRAG, 0:FRAG], B[0:FRAG, 0:FRAG], A[0:FRAG, 0:FRAG])
            T.writes(C[0:FRAG, 0:FRAG])
            for i, j, k in T.grid(FRAG, FRAG, FRAG):
                with T.sblock(""):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.Cast(ACC_DTYPE, B[vk, vj]) * T.Cast(ACC_DTYPE, A[vi, vk])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        a1, a0, b1, b0, c1, c0 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (FRAG, FRAG), IN_DTYPE, align=64, offset_factor=FRAG, scope="wmma.matrix_a",
                           strides=[a1, a0])
        B = T.match_buffer(b, (FRAG, FRAG), IN_DTYPE, align=64, offset_factor=FRAG, scope="wmma.matrix_b",
                           strides=[b1, b0])
        C = T.match_buffer(c, (FRAG, FRAG), ACC_DTYPE, align=64, offset_factor=FRAG, scope="wmma.accumulator",
                           strides=[c1, c0])
        with T.sblock("root"):
            T.reads(C[0:FRAG, 0:FRAG], B[0:FRAG, 0:FRAG], A[0:FRAG, 0:FRAG])
            T.writes(C[0:FRAG, 0:FRAG])
            T.evaluate(T.tvm_mma_sync(C.data, _fragment_index(C, c1), A.data, _fragment_index(A, a1),
                                      B.data, _fragment_index(B, b1), C.data, _fragment_index(C, c1),
                                      dtype="void"))

    return desc, impl


def _store():
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (FRAG, FRAG), ACC_DTYPE, align=64, offset_factor=FRAG, scope="wmma.accumulator")
        C = T.match_buffer(c, (FRAG, FRAG), ACC_DTYPE, align=64, offset_factor=FRAG, scope=RESULT_SHARED)
        with T.sblock("root"):
            T.reads(A[0:FRAG, 0:FRAG])
            T.writes(C[0:FRAG, 0:FRAG])
            for i, j in T.grid(FRAG, FRAG):
                with T.sblock("store"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    C[vi, vj] = A[vi, vj]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        s1, s0, d1, d0 = T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (FRAG, FRAG), ACC_DTYPE, align=64, offset_factor=FRAG, scope="wmma.accumulator",
                           strides=[d1, d0])
        C = T.match_buffer(c, (FRAG, FRAG), ACC_DTYPE, align=64, offset_factor=FRAG, scope=RESULT_SHARED,
                           strides=[s1, s0])
        with T.sblock("root"):
            T.reads(A[0:FRAG, 0:FRAG])
            T.writes(C[0:FRAG, 0:FRAG])
            T.evaluate(T.tvm_store_matrix_sync(A.data, FRAG, FRAG, FRAG, _fragment_index(A, d1),
                                               C.access_ptr("w", ptr_type=ACC_DTYPE), s1, "row_major",
                                               dtype="void"))

    return desc, impl


def register() -> None:
    """Register the intrinsics once per process (a no-op afterwards)."""
    if TensorIntrin.get(MMA, allow_missing=True) is not None:
        return
    for name, (desc, impl) in ((LOAD_A, _load("wmma.matrix_a")), (LOAD_B, _load("wmma.matrix_b")),
                               (FILL, _fill()), (STORE, _store()), (MMA, _mma())):
        TensorIntrin.register(name, desc, impl, override=True)
