"""The runtime devices a plan's processors run on, and what a CUDA GPU needs to load kernels."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..base.errors import MulayerError
from ..base.processors import Processor

# The packed function that copies a tensor into a destination tensor on another device
# (destination-passing, no sync): what the VM runs for each exchange (passes.PooledCopies).
EXCHANGE_COPY = "runtime.TVMTensorCopyFromTo"


def tvm_device(processor: Processor, index: int):
    """The runtime device of a processor; index is its position in the VM's device list."""
    import tvm

    if processor.device_type == "cpu":
        return tvm.cpu(index)
    available = True
    if processor.device_type == "cuda":
        try:
            enable_cuda_runtime()
        except OSError:  # libcuda.so missing: no NVIDIA driver on this machine
            available = False
    device = tvm.device(processor.device_type, 0)
    if not available or not device.exist:
        raise MulayerError(
            f"this executable runs its GPU part on {processor.device_type} ({processor.name}), "
            f"but this machine has no {processor.device_type} device; run it where there is one, "
            "or compile with --gpu emulated to run both parts on this CPU")
    return device


def cpu_threads(cpu: Processor, gpu: Processor) -> int:
    """Size of the CPU side's thread pool, set in TVM_NUM_THREADS unless already set (TVM's
    pool reads it once, at its first parallel kernel; its own default is half the logical
    CPUs on x86). Every core the CPU target was built for, but one where a real GPU's
    kernels are issued from the same host thread: with a pool on every core, mixed plans ran
    up to 4.6x slower on the GPU host (the issuing thread starved)."""
    cores = int(cpu.target.get("num-cores") or os.cpu_count() or 1)
    os.environ.setdefault("TVM_NUM_THREADS", str(cores - 1 if not gpu.emulated and cores > 2 else cores))
    return int(os.environ["TVM_NUM_THREADS"])


def enable_cuda_runtime() -> None:
    """Make CUDA kernels loadable on a host with only the TVM runtime.

    The CUDA part of an artifact built on a machine without a GPU driver is CUDA source; it
    is compiled with nvcc for this GPU when the module loads (TVM calls the registered
    `tvm_callback_cuda_compile`). With TVM_USE_RUNTIME_LIB=1 the CUDA device API lives in
    libtvm_runtime_cuda.so, which must be loaded into the global symbol table first.
    """
    import ctypes

    import tvm

    if tvm.get_global_func("device_api.cuda", allow_missing=True) is None:
        lib = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
        if lib.exists():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    # TVM's own callback (tvm.support.nvcc) needs the compiler library's Target API, which
    # a runtime-only install lacks; ours only needs nvcc.
    tvm.register_global_func("tvm_callback_cuda_compile", cuda_compile_callback, override=True)


def fatbin_name(code: str, arch: str) -> str:
    """File name of the fatbin of CUDA source `code` for `arch` in TVM_MULAYER_FATBIN_DIR."""
    return f"{hashlib.sha256(code.encode()).hexdigest()}-{arch}.fatbin"


def nvcc_fatbin(code: str, arch: str) -> bytes:
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(code)
        cmd = ["nvcc", "-fatbin", "-O3", f"-arch={arch}", "-o", str(out), str(src)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"nvcc failed compiling the CUDA kernels:\n{result.stderr[-2000:]}")
        return out.read_bytes()


def cuda_compile_callback(code, target=None):
    """TVM's `tvm_callback_cuda_compile`: the fatbin of CUDA source `code` for this GPU (one
    compiled ahead of time in TVM_MULAYER_FATBIN_DIR when there is one, else nvcc's)."""
    import tvm

    arch = "sm_" + tvm.cuda(0).compute_version.replace(".", "") if tvm.cuda(0).exist else "sm_90"
    # kernels compiled ahead of time (scripts/gpu_host_run.py pack), named by source and arch
    fatbins = os.environ.get("TVM_MULAYER_FATBIN_DIR")
    cached = Path(fatbins or ".") / fatbin_name(str(code), arch)
    if fatbins and cached.is_file():
        return bytearray(cached.read_bytes())
    return bytearray(nvcc_fatbin(str(code), arch))
