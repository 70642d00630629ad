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

# device type -> the process that opened it: an OpenCL or CUDA context does not survive fork
# (the driver's threads stay in the parent; pocl's child waits on them forever)
_OPENED_BY: dict[str, int] = {}


def check_not_forked(processor: Processor) -> None:
    """Refuse a GPU device this process inherited through fork from the process that opened it."""
    opener = _OPENED_BY.get(processor.device_type)
    if opener is None or opener == os.getpid():
        return
    raise MulayerError(
        f"this process was forked from process {opener} after that process opened the {processor.device_type} "
        f"device ({processor.name}); a {processor.device_type} context does not survive fork, so the GPU part "
        "cannot run here. Start workers with multiprocessing's 'spawn' or 'forkserver' start method and "
        "load the artifact in each (tvm_mulayer.load), or fork before the first compile, load or run")


def tvm_device(processor: Processor, index: int):
    """The runtime device of a processor; index is its position in the VM's device list."""
    import tvm

    if processor.device_type == "cpu":
        return tvm.cpu(index)
    check_not_forked(processor)
    where = f"this executable runs its GPU part on {processor.device_type} ({processor.name}), but"
    if processor.device_type == "opencl" and tvm.get_global_func("device_api.opencl", allow_missing=True) is None:
        raise MulayerError(
            f"{where} this TVM runtime has no OpenCL support (the apache-tvm wheel is built without it): "
            f"build TVM's OpenCL runtime plugin, libtvm_runtime_opencl.so, into {Path(tvm.__file__).parent / 'lib'} "
            "or a folder on LD_LIBRARY_PATH (README: \"OpenCL\"), or compile with --gpu emulated")
    available = True
    if processor.device_type == "cuda":
        try:
            enable_cuda_runtime()
        except OSError:  # libcuda.so missing: no NVIDIA driver on this machine
            available = False
    device = tvm.device(processor.device_type, 0)
    if not available or not device.exist:
        driver = (" (an OpenCL driver: the GPU vendor's, or pocl-opencl-icd to run OpenCL on the CPU)"
                  if processor.device_type == "opencl" else "")
        raise MulayerError(
            f"{where} this machine has no {processor.device_type} device{driver}; run it where there is one, "
            "or compile with --gpu emulated to run both parts on this CPU")
    _OPENED_BY.setdefault(processor.device_type, os.getpid())
    return device


def device_label(processor: Processor, index: int) -> str:
    """Which runtime device a processor's kernels run on, in words: `opencl:0, <device name>
    (OpenCL 3.0, driver 3.1)`, `cuda:0, NVIDIA H200 (compute 9.0)`, `cpu:1 (...)`."""
    device = tvm_device(processor, index)
    if processor.device_type == "cpu":
        return f"cpu:{index}" + (" (the emulated GPU: a second LLVM device on this CPU)" if processor.emulated else "")
    if processor.device_type == "opencl":
        details = f"OpenCL {device.compute_version}, driver {device.driver_version}"
    else:
        details = f"compute {device.compute_version}"
    return f"{processor.device_type}:{device.index}, {device.device_name} ({details})"


# OpenCL C's half type needs one of these device extensions
FLOAT16_EXTENSIONS = ("cl_khr_fp16", "cl_amd_fp16")


def check_kernels_build(processor: Processor, device, module) -> None:
    """Refuse, before any kernel runs, float16 OpenCL kernels on a device without half
    support (Debian's pocl 3.1, some desktop drivers), which would fail at their first launch
    deep inside TVM; `module` is the executable's runtime module."""
    if processor.device_type != "opencl":
        return
    root = getattr(module, "mod", module)  # a relax VMExecutable holds its runtime module
    sources = [m.inspect_source() for m in imported_modules(root) if m.kind == "opencl"]
    if not any("OPENCL EXTENSION cl_khr_fp16" in source for source in sources):
        return
    refuse_float16(device, "this executable's GPU slices compute", "compile")


def refuse_float16(device, what: str, remedy: str) -> None:
    """One clear error where the OpenCL `device` has no half-precision support: `what`
    computes in float16; `remedy` is the command to rerun with float32 GPU slices."""
    extensions = opencl_extensions(device.device_name)
    if extensions is not None and not extensions.intersection(FLOAT16_EXTENSIONS):
        raise MulayerError(
            f"{what} in float16, but the OpenCL device {device.device_name!r} has no half-precision support "
            f"(no cl_khr_fp16); {remedy} with --precision native,gpu=fp32 (or fp32) for this device")


def imported_modules(module) -> list:
    """`module` and every module it imports, depth first."""
    found = [module]
    for imported in module.imports:
        found += imported_modules(imported)
    return found


def opencl_extensions(device_name: str) -> frozenset | None:
    """The extensions of the OpenCL device named `device_name`, asked of the OpenCL ICD loader
    (TVM's runtime does not report them); None where the loader or the device is not found."""
    import ctypes

    for name in ("libOpenCL.so.1", "libOpenCL.so"):
        try:
            opencl = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return None
    opencl.clGetPlatformIDs.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    opencl.clGetDeviceIDs.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p,
                                      ctypes.POINTER(ctypes.c_uint32)]
    opencl.clGetDeviceInfo.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t, ctypes.c_void_p,
                                       ctypes.POINTER(ctypes.c_size_t)]

    def listed(query, *args) -> list:
        count = ctypes.c_uint32()
        if query(*args, 0, None, ctypes.byref(count)) != 0 or not count.value:
            return []
        items = (ctypes.c_void_p * count.value)()
        return list(items) if query(*args, count.value, items, None) == 0 else []

    def text(device, param: int) -> str:
        size = ctypes.c_size_t()
        opencl.clGetDeviceInfo(device, param, 0, None, ctypes.byref(size))
        value = ctypes.create_string_buffer(size.value)
        opencl.clGetDeviceInfo(device, param, size.value, value, None)
        return value.value.decode(errors="replace")

    cl_device_name, cl_device_extensions, cl_device_type_all = 0x102B, 0x1030, 0xFFFFFFFF
    for platform in listed(opencl.clGetPlatformIDs):
        for device in listed(opencl.clGetDeviceIDs, platform, cl_device_type_all):
            if text(device, cl_device_name) == device_name:
                return frozenset(text(device, cl_device_extensions).split())
    return None


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
