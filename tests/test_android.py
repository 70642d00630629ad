"""Phone artifacts, compile-only: `--cpu arm64-android --gpu adreno|mali|opencl`.

Nothing here can run them (no phone, no OpenCL): the tests check what is shipped. model.so
must be an aarch64 ELF shared library that names no glibc library (the Android runtime loads
it), its OpenCL kernels must be OpenCL C (`half` for a float16 model) and travel inside it,
and the manifest must ask the remote for an OpenCL GPU. A missing cross toolchain must give
a clear error.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess

import pytest

import tvm_mulayer
from tvm_mulayer import MulayerError
from tvm_mulayer.base import zoo
from tvm_mulayer.runtime.cross import ELF_MACHINE, elf_machine, export_fcompile, find_cross_compiler, is_cross
from tvm_mulayer.base.processors import cpu_processor

pytestmark = pytest.mark.cross  # full tier: phone cross-compilation

MODEL = "alexnet"  # small variant: conv, LRN, pools, dense; compiles in seconds
TRIPLE = "aarch64-linux-android"


def _toolchain_or_skip():
    try:
        return find_cross_compiler(TRIPLE)
    except MulayerError as err:
        pytest.skip(f"no cross compiler for {TRIPLE}: {err}")


@pytest.fixture(scope="module")
def model():
    return zoo.build(MODEL, **zoo.small(MODEL))


@pytest.mark.parametrize("gpu", ["adreno", "mali", "opencl"])
def test_android_artifact_is_aarch64_with_opencl_kernels(model, gpu, tmp_path):
    compiler, kind = _toolchain_or_skip()
    executable = tvm_mulayer.compile(model, cpu="arm64-android", gpu=gpu, split=0.5)
    kernels = [m for m in executable.module.mod._collect_from_import_tree(lambda m: m.kind == "opencl")]
    assert len(kernels) == 1
    source = kernels[0].inspect_source()
    assert "__kernel void" in source and "__global float*" in source  # OpenCL C, not CUDA or PTX
    assert "blockIdx" not in source and "__global__" not in source

    path = executable.export(tmp_path / gpu)
    library = path / "model.so"
    assert elf_machine(library) == ELF_MACHINE["aarch64"] == 183
    header = library.read_bytes()[:20]
    assert header[4] == 2 and header[5] == 1  # ELFCLASS64, little-endian
    assert int.from_bytes(header[16:18], "little") == 3  # ET_DYN: a shared library
    assert b"__kernel void" in library.read_bytes()  # the OpenCL kernels travel inside model.so
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["cpu"]["target"]["mtriple"] == TRIPLE
    assert manifest["gpu"]["device_type"] == "opencl"
    if gpu != "opencl":
        assert manifest["gpu"]["target"]["device"] == gpu
    readelf = shutil.which("aarch64-linux-gnu-readelf") or shutil.which("readelf")
    if kind == "gcc" and readelf:
        dynamic = subprocess.run([readelf, "-d", str(library)], capture_output=True, text=True, timeout=60).stdout
        assert "libc.so.6" not in dynamic and "libm.so.6" not in dynamic  # no glibc: Android has none


def test_fp16_model_gets_half_opencl_kernels(tmp_path):
    """A float16 model: the phone's GPU kernels compute in OpenCL `half` (cl_khr_fp16)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    _toolchain_or_skip()
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype("float16"), "w")
    bias = numpy_helper.from_array(rng.standard_normal((16,)).astype("float16"), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["y"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT16, [1, 16, 16, 16])], [weight, bias])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    executable = tvm_mulayer.compile(onnx_model, cpu="arm64-android", gpu="adreno", split=0.5)
    source = executable.module.mod._collect_from_import_tree(lambda m: m.kind == "opencl")[0].inspect_source()
    assert "#pragma OPENCL EXTENSION cl_khr_fp16 : enable" in source
    assert "__kernel void" in source and "__global half*" in source
    path = executable.export(tmp_path / "fp16")
    assert elf_machine(path / "model.so") == 183


def test_missing_cross_compiler_says_what_to_install(model, monkeypatch, tmp_path):
    for name in ("TVM_NDK_CC", "ANDROID_NDK_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler at all
    with pytest.raises(MulayerError) as err:
        find_cross_compiler(TRIPLE)
    message = str(err.value)
    assert "ANDROID_NDK_HOME" in message and "TVM_NDK_CC" in message
    assert "apt-get install gcc-aarch64-linux-gnu" in message and "developer.android.com/ndk" in message
    # and `export` fails with it, leaving no half-written artifact
    executable = tvm_mulayer.compile(model, cpu="arm64-android", gpu="adreno", split=0.5)
    with pytest.raises(MulayerError, match="needs a cross compiler"):
        executable.export(tmp_path / "artifact")
    assert not (tmp_path / "artifact").exists()


def _fake_compiler(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_ndk_is_preferred_and_its_clang_found(monkeypatch, tmp_path):
    bin_dir = tmp_path / "ndk" / "toolchains" / "llvm" / "prebuilt" / "linux-x86_64" / "bin"
    for level in (21, 24, 30):
        _fake_compiler(bin_dir / f"aarch64-linux-android{level}-clang")
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    monkeypatch.setenv("ANDROID_NDK_HOME", str(tmp_path / "ndk"))
    assert find_cross_compiler(TRIPLE) == (str(bin_dir / "aarch64-linux-android24-clang"), "ndk")
    explicit = _fake_compiler(tmp_path / "cc" / "my-clang")
    monkeypatch.setenv("TVM_NDK_CC", str(explicit))
    assert find_cross_compiler(TRIPLE) == (str(explicit), "ndk")
    monkeypatch.setenv("TVM_NDK_CC", str(tmp_path / "missing-clang"))
    with pytest.raises(MulayerError, match="TVM_NDK_CC"):
        find_cross_compiler(TRIPLE)
    monkeypatch.delenv("TVM_NDK_CC")
    monkeypatch.setenv("ANDROID_NDK_HOME", str(tmp_path / "empty"))
    with pytest.raises(MulayerError, match="ANDROID_NDK_HOME"):
        find_cross_compiler(TRIPLE)


def test_host_targets_need_no_cross_compiler():
    host = cpu_processor("host")
    assert not is_cross(host) and export_fcompile(host) is None
    assert not is_cross(cpu_processor("x86-avx512"))
    assert is_cross(cpu_processor("arm64-android"))


def test_i8mm_preset_int8_slices_use_usdot(model):
    """`--cpu arm64-android-i8mm` (Armv8.6+ phones): the int8 CPU slices' dot products are
    usdot; plain `arm64-android` (dotprod only, no mixed-sign instruction) has none."""

    def cpu_asm(cpu):
        executable = tvm_mulayer.compile(model, cpu=cpu, gpu="adreno", split=0.5, precision="native")
        return "\n".join(m.inspect_source("asm")
                         for m in executable.module.mod._collect_from_import_tree(lambda m: m.kind == "llvm"))

    assert "usdot\t" in cpu_asm("arm64-android-i8mm")
    assert "usdot" not in cpu_asm("arm64-android")
