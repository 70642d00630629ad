"""u8 x i8 -> i32 dot-product tensor intrinsics for the CPU int8 rules.

One instruction updates LANES int32 accumulators, each with the sum of 4 products of an
unsigned byte and a signed byte:

    C[i] += A[0]*B[i,0] + A[1]*B[i,1] + A[2]*B[i,2] + A[3]*B[i,3]     i < LANES

A is 4 consecutive reduction elements of the activation (broadcast to every lane), B the
matching 4 x LANES weights, laid out lane-major so that they are one vector load. Two ISAs
have exactly this instruction, products and sums formed in 32 bits:

- x86 vpdpbusd: AVX512-VNNI 16 lanes, AVX-VNNI 8 lanes. (The AVX-512BW pmaddubsw route
  saturates at int16 and is not exact.)
- aarch64 usdot (Armv8.6 i8mm, optional from Armv8.2): 4 lanes, a 128-bit NEON register.
  Without i8mm aarch64 has no exact mixed-sign dot product: sdot/udot (dotprod) multiply
  bytes of the same signedness, and the u8 activations span 0..255. Such targets get None,
  and the rules' generic int32 path, which LLVM vectorizes with widening multiplies.

Both LLVM intrinsics take (accumulator, unsigned bytes, signed bytes) as same-width vectors,
so one builder makes both; only the intrinsic's name and the lane count differ.

TVM ships a VNNI intrinsic (s_tir.tensor_intrin.x86), but it passes the operands as
<16 x i32> while LLVM 22 (the wheel's) declares vpdpbusd on <64 x i8>, so the module fails
LLVM verification; its accumulator is also a global-scope buffer, ours is the register tile
(local scope). Its aarch64 intrinsics (arm_cpu.py) are sdot/udot, same-sign only.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import Target

from ..target import cpu_features


DEPTH = 4  # products summed into each lane per instruction


@dataclass(frozen=True)
class DotProduct:
    """A dot-product intrinsic: its TensorIntrin name, int32 lanes per instruction and the
    LLVM intrinsic it calls."""

    name: str
    lanes: int
    llvm_intrinsic: str


AVX512_VNNI = DotProduct("mulayer_vpdpbusd_16x4", 16, "llvm.x86.avx512.vpdpbusd.512")
AVX_VNNI = DotProduct("mulayer_vpdpbusd_8x4", 8, "llvm.x86.avx512.vpdpbusd.256")
I8MM = DotProduct("mulayer_usdot_4x4", 4, "llvm.aarch64.neon.usdot.v4i32.v16i8")


def _llvm_declares_byte_operands() -> bool:
    """LLVM 22 (checked) takes vpdpbusd's multiplicands as byte vectors; older versions
    declared them <N x i32>. Only the form we have verified is emitted."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    return codegen.llvm_version_major() >= 22


def _intrin_funcs(dot: DotProduct):
    """(description, implementation) PrimFuncs of `dot` on its `lanes` int32 accumulators."""
    lanes = dot.lanes
    nbytes = lanes * DEPTH

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (DEPTH,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (lanes, DEPTH), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:DEPTH], B[0:lanes, 0:DEPTH])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, DEPTH):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (DEPTH,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (lanes, DEPTH), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:DEPTH], B[0:lanes, 0:DEPTH])
            T.writes(C[0:lanes])
            quad = T.reinterpret(A.vload([0], f"uint8x{DEPTH}"), dtype="int32")
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(dot.llvm_intrinsic),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(quad, lanes), dtype=f"uint8x{nbytes}"),
                B.vload([0, 0], dtype=f"int8x{nbytes}"),
                dtype=f"int32x{lanes}",
            )

    return desc, impl


_REGISTERED: set = set()


def _registered(dot: DotProduct) -> DotProduct:
    if dot.name not in _REGISTERED:
        TensorIntrin.register(dot.name, *_intrin_funcs(dot), override=True)
        _REGISTERED.add(dot.name)
    return dot


def _is_aarch64(target: Target) -> bool:
    """32-bit Arm has i8mm too (vusdot), but not the aarch64 LLVM intrinsic we call."""
    return str(target.attrs.get("mtriple", "")).split("-", 1)[0] in ("aarch64", "arm64")


def dot_product_for(target: Target) -> DotProduct | None:
    """The widest exact u8 x i8 dot product the target's mcpu/mattr has, else None
    (aarch64 without i8mm included: see the module docstring)."""
    feats = cpu_features(target)
    if "i8mm" in feats and _is_aarch64(target):
        return _registered(I8MM)
    if not _llvm_declares_byte_operands():
        return None
    if "avx512vnni" in feats and "avx512bw" in feats:
        return _registered(AVX512_VNNI)
    if "avxvnni" in feats:
        return _registered(AVX_VNNI)
    return None


def slice_input_channels(layer, precision: str, target) -> int:
    """The input channels a slice of `layer` in `precision` reads on `target` (a TVM target;
    None: unknown). An int8 conv of one group and more input channels than the depth of the
    CPU's dot-product instruction reads them zero-padded to whole groups of that depth: the
    dot-product rule needs whole groups, and the generic int32 schedule ran such layers a
    median 4x slower on the H200 host's 15 threads (benchmarks/log/). The padded channels meet
    zero weights. A network's first layer (1-3 channels) keeps them: its padded input, one
    group of channels, is repacked by at most 4 threads sharing cache lines, and most first
    layers ran slower padded there (up to 4.6x). Every other slice reads the layer's own
    channels."""
    channels = layer.input_shape[1]
    if precision != "int8" or layer.op != "conv2d" or layer.groups != 1 or target is None:
        return channels
    if channels <= DEPTH or dot_product_for(target) is None:
        return channels
    return -(-channels // DEPTH) * DEPTH
