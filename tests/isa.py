"""The CPU this test run executes on, probed once, and the ISAs the tests compile for.

Code compiled for an instruction set the CPU lacks dies with SIGILL and takes the whole
test process with it (seen: cascadelake kernels on an AVX2-only AMD EPYC). So tests execute
kernels compiled for `HOST` (LLVM's name for this machine's CPU, as `--cpu host` compiles)
or for a target `runs_here` accepts, and compile the fixed ISAs below on every machine,
checking their assembly instead (`require_runs_here` skips the execution, saying why).
"""

from __future__ import annotations

import functools
import re

import pytest
from tvm.target import Target
from tvm.target.codegen import llvm_get_cpu_features, llvm_get_system_cpu, llvm_get_system_triple

# The x86 kinds CI lands on: AVX2 + FMA only (Haswell, Zen 3), AVX-512 without VNNI
# (Skylake-SP) and AVX-512 with VNNI (Cascade Lake and later, Zen 4).
AVX2 = Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell", "num-cores": 2})
AVX512 = Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512", "num-cores": 2})
VNNI = Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake", "num-cores": 2})
GENERIC = Target("llvm")  # SSE2 on x86-64: the stand-in a GPU-less host may use for the "GPU"
FIXED_ISAS = {"avx2": AVX2, "avx512": AVX512, "avx512-vnni": VNNI}

HOST_CPU = llvm_get_system_cpu()
HOST = Target({"kind": "llvm", "mcpu": HOST_CPU, "num-cores": 2} if HOST_CPU != "generic"
              else {"kind": "llvm", "num-cores": 2})

# Instruction-set features (not LLVM's tuning flags such as "slow-3ops-lea", which differ
# between CPUs that run the same code).
_ISA_FEATURE = re.compile(r"^(sse|ssse3|avx|amx|fma|f16c|bmi|gfni|vaes|vpclmulqdq|neon|dotprod|i8mm|sve|"
                          r"fullfp16|bf16|sme)")


@functools.lru_cache(maxsize=None)
def _isa_features(target_json: str) -> frozenset:
    target = Target(target_json)
    return frozenset(str(f) for f in llvm_get_cpu_features(target) if _ISA_FEATURE.match(str(f)))


def _arch(target: Target) -> str:
    triple = str(target.attrs.get("mtriple", "")) or llvm_get_system_triple()
    return triple.split("-", 1)[0]


def missing_features(target: Target) -> list:
    """The instruction-set features `target`'s code may use that this CPU lacks ([] when it
    runs here; a foreign architecture is missing itself)."""
    if _arch(target) != _arch(HOST):
        return [_arch(target)]
    return sorted(_isa_features(str(target)) - _isa_features(str(HOST)))


def runs_here(target: Target) -> bool:
    return not missing_features(target)


def require_runs_here(target: Target) -> None:
    """Skip the rest of the test, with the reason, when this CPU cannot run `target`'s code."""
    missing = missing_features(target)
    if missing:
        pytest.skip(f"compiled for {target.attrs.get('mcpu', 'llvm')} only: this CPU ({HOST_CPU}) lacks "
                    f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}, so its code is not run")


def vector_registers(assembly: str) -> set:
    """The x86 vector register kinds ("xmm", "ymm", "zmm") an assembly listing uses."""
    return set(re.findall(r"%(xmm|ymm|zmm)\d+", assembly))
