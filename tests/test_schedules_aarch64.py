"""CPU int8 rules on aarch64: the i8mm usdot dot product chosen by target, the quantized
conv and dense slices cross-compiled (usdot in the assembly with i8mm, from mattr or an Armv9
mcpu; the generic path with dotprod only), and, under user-mode QEMU, the aarch64 kernels
bit-exact against the numpy int64 references of test_schedules_int8.

The numeric tests need qemu-aarch64, aarch64-linux-gnu-gcc and the aarch64 Python + TVM runtime
of `python scripts/aarch64_qemu_check.py setup`; without them they are skipped.
"""

import functools
import sys
from pathlib import Path

import numpy as np
import pytest

from tvm.target import Target

from tvm_mulayer.runtime.cross import export_fcompile
from tvm_mulayer.base.processors import cpu_processor
from tvm_mulayer.schedules.target import num_vector_registers, vector_bits
from tvm_mulayer.schedules.cpu.dot_intrin import I8MM, dot_product_for

from test_schedules_int8 import CONV_CASES, compile_scheduled, qconv_case, qdense_case

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import aarch64_qemu_check  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.cross  # full tier: aarch64 codegen, run under QEMU where installed

# glibc triples: QEMU runs them with Debian's arm64 Python (an Android build would need bionic)
TARGETS = {
    "i8mm": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod", "+i8mm"],
             "num-cores": 2},
    # Armv9.0: i8mm from the mcpu, and SVE2, which LLVM also uses in the generic loops
    "cortex-a710": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a710", "num-cores": 2},
    "dotprod": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"], "num-cores": 2},
}
WITH_USDOT = ("i8mm", "cortex-a710")

# lanes = 4: output channel tails of every size (1, 2, 3 channels short of a 4-lane block;
# 1 and 5 channels in all), weight blocks that FB = 4, 2, 1 divide, width tails
CONV_CASES_AARCH64 = {
    **CONV_CASES,
    "cout_5_width_7": (dict(cin=8, cout=5, hw=7, k=3, pad=1), "dot"),
    "cout_1": (dict(cin=4, cout=1, hw=6, k=1), "dot"),
    "cout_6_stride2": (dict(cin=12, cout=6, hw=9, k=3, stride=2), "dot"),
}
DENSE_CASES = {"n13": (64, 13), "k30_n37": (30, 37), "k256_n200": (256, 200), "k6_n5": (6, 5)}


@functools.lru_cache(maxsize=None)
def compiled(kind: str, case: str, isa: str):
    """(executable for TARGETS[isa], input, numpy reference) of a conv or dense case, scheduled
    as the build schedules it (weight repacks hoisted to compile time)."""
    if kind == "conv":
        mod, x, ref = qconv_case(**CONV_CASES_AARCH64[case][0])
    else:
        mod, x, ref = qdense_case(*DENSE_CASES[case])
    return compile_scheduled(mod, Target(TARGETS[isa]))[0], x, ref


def kernel_asm(executable) -> str:
    return "\n".join(lib.inspect_source("asm") for lib in executable.mod.imports if lib.kind == "llvm")


def test_dot_product_by_aarch64_target():
    assert dot_product_for(Target(TARGETS["i8mm"])) == I8MM
    assert I8MM.lanes == 4
    for mcpu in ("cortex-a710", "cortex-x2"):  # Armv9.0 cores: i8mm implied by the mcpu
        assert dot_product_for(Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": mcpu})) == I8MM
    # no exact u8 x s8 instruction without i8mm: sdot/udot multiply same-sign bytes
    assert dot_product_for(Target(TARGETS["dotprod"])) is None
    assert dot_product_for(Target(cpu_processor("arm64-android").target)) is None
    assert dot_product_for(Target(cpu_processor("arm64-android-i8mm").target)) == I8MM
    for mcpu in ("cortex-a76", "cortex-a55"):
        assert dot_product_for(Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": mcpu})) is None
    assert dot_product_for(Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})) is None
    # 32-bit Arm with i8mm: its vusdot is not the aarch64 intrinsic
    assert dot_product_for(Target({"kind": "llvm", "mtriple": "armv8.6a-linux-gnueabihf",
                                   "mattr": ["+neon", "+i8mm"]})) is None
    assert dot_product_for(Target({"kind": "llvm", "mtriple": "arm64-apple-macos", "mcpu": "apple-m2"})) == I8MM


def test_aarch64_register_file():
    """The register tiles assume NEON's 32 x 128-bit registers."""
    for spec in (TARGETS["i8mm"], {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-x2"}):
        assert (vector_bits(Target(spec)), num_vector_registers(Target(spec))) == (128, 32)


@pytest.mark.parametrize("case", list(CONV_CASES_AARCH64), ids=list(CONV_CASES_AARCH64))
def test_int8_conv_aarch64_codegen(case):
    on_dot_product = CONV_CASES_AARCH64[case][1] == "dot"
    for isa in TARGETS:
        assert ("usdot" in kernel_asm(compiled("conv", case, isa)[0])) == (on_dot_product and isa in WITH_USDOT), isa


@pytest.mark.parametrize("case", list(DENSE_CASES), ids=list(DENSE_CASES))
def test_int8_dense_aarch64_codegen(case):
    for isa in TARGETS:
        assert ("usdot" in kernel_asm(compiled("dense", case, isa)[0])) == (isa in WITH_USDOT), isa


NUMERIC_RUNS = [("conv", case, isa) for case in CONV_CASES_AARCH64 for isa in TARGETS] + \
    [("dense", case, isa) for case in DENSE_CASES for isa in TARGETS]


@pytest.fixture(scope="module")
def emulated_outputs(tmp_path_factory):
    """Every NUMERIC_RUNS executable, linked for aarch64 and run in one QEMU session."""
    problem = aarch64_qemu_check.emulator_problem()
    if problem is not None:
        pytest.skip(f"aarch64 kernels cannot run here: {problem}")
    out_dir = tmp_path_factory.mktemp("aarch64")
    runs = {}
    for kind, case, isa in NUMERIC_RUNS:
        executable, x, _ = compiled(kind, case, isa)
        lib = out_dir / f"{kind}-{case}-{isa}.so"
        executable.export_library(str(lib), fcompile=export_fcompile(cpu_processor(TARGETS[isa])))
        runs[f"{kind}-{case}-{isa}"] = (lib, [x])
    return aarch64_qemu_check.run_executables(runs)


@pytest.mark.parametrize("kind,case,isa", NUMERIC_RUNS, ids=["-".join(run) for run in NUMERIC_RUNS])
def test_int8_aarch64_exact_under_qemu(emulated_outputs, kind, case, isa):
    (out,) = emulated_outputs[f"{kind}-{case}-{isa}"]
    np.testing.assert_array_equal(out, compiled(kind, case, isa)[2])
