"""Cross-compiling artifacts: link model.so with the toolchain of the CPU it will run on.

`Executable.export` links the kernels into `model.so`. For the machine we are on the system
compiler does it; for another CPU (`--cpu arm64-android`: a phone's TVM runtime) the objects
LLVM produced must be linked by a compiler for that CPU:

1. the Android NDK: `TVM_NDK_CC` (the NDK's clang for the target, e.g.
   `.../toolchains/llvm/prebuilt/linux-x86_64/bin/aarch64-linux-android28-clang`), or
   `ANDROID_NDK_HOME` (the NDK's root; its clang for the target is picked);
2. otherwise a generic cross gcc on PATH (`aarch64-linux-gnu-gcc`, Debian/Ubuntu package
   `gcc-aarch64-linux-gnu`). For an Android target it links with `-nostdlib`, so the library
   names no glibc library and its libc/libm symbols resolve from the Android process (the TVM
   runtime that loads it links them);
3. otherwise a `MulayerError` that says what to install and which variable to set.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
from pathlib import Path

from ..base.errors import MulayerError
from ..base.processors import Processor

# ELF e_machine of each LLVM architecture we cross-compile for
ELF_MACHINE = {"aarch64": 183, "arm": 40, "x86_64": 62, "i686": 3, "riscv64": 243}
# (generic gcc prefix, NDK clang prefix) per architecture
_TOOL_PREFIX = {
    "aarch64": ("aarch64-linux-gnu", "aarch64-linux-android"),
    "arm": ("arm-linux-gnueabihf", "armv7a-linux-androideabi"),
    "x86_64": ("x86_64-linux-gnu", "x86_64-linux-android"),
    "riscv64": ("riscv64-linux-gnu", "riscv64-linux-android"),
}
_ARCH_ALIASES = {"arm64": "aarch64", "armv7": "arm", "armv7a": "arm", "thumbv7": "arm", "amd64": "x86_64"}
NDK_MIN_API = 24  # Android 7.0: the oldest OpenCL-capable phones the TVM RPC app supports


def target_triple(cpu: Processor) -> str | None:
    """The LLVM triple the CPU target names, or None (the machine we are on)."""
    triple = cpu.target.get("mtriple")
    return str(triple) if triple else None


def triple_arch(triple: str) -> str:
    arch = triple.split("-", 1)[0].lower()
    return _ARCH_ALIASES.get(arch, arch)


def _host_arch() -> str:
    machine = platform.machine().lower()
    return _ARCH_ALIASES.get(machine, machine)


def is_cross(cpu: Processor) -> bool:
    """True when the CPU target is not this machine (another architecture, or Android)."""
    triple = target_triple(cpu)
    if triple is None:
        return False
    return triple_arch(triple) != _host_arch() or "android" in triple


def find_cross_compiler(triple: str) -> tuple[str, str]:
    """(compiler path, "ndk" | "gcc") for `triple`, or a MulayerError saying what to install."""
    arch = triple_arch(triple)
    gcc_prefix, ndk_prefix = _TOOL_PREFIX.get(arch, (f"{arch}-linux-gnu", f"{arch}-linux-android"))
    ndk_cc = os.environ.get("TVM_NDK_CC")
    if ndk_cc:
        path = shutil.which(ndk_cc)
        if path is None:
            raise MulayerError(f"TVM_NDK_CC={ndk_cc} is not an executable compiler; set it to the NDK's "
                               f"clang for this target, e.g. $ANDROID_NDK_HOME/toolchains/llvm/prebuilt/"
                               f"linux-x86_64/bin/{ndk_prefix}{NDK_MIN_API}-clang")
        return path, "ndk"
    ndk_home = os.environ.get("ANDROID_NDK_HOME")
    if ndk_home:
        path = _ndk_clang(Path(ndk_home), ndk_prefix)
        if path is None:
            raise MulayerError(f"ANDROID_NDK_HOME={ndk_home} has no {ndk_prefix}<API>-clang under "
                               "toolchains/llvm/prebuilt/*/bin; point it at an Android NDK (r21 or newer) "
                               "or set TVM_NDK_CC to the compiler")
        return path, "ndk"
    path = shutil.which(f"{gcc_prefix}-gcc")
    if path is not None:
        return path, "gcc"
    raise MulayerError(
        f"exporting for {triple} needs a cross compiler and none was found: install the Android NDK "
        f"(https://developer.android.com/ndk/downloads) and set ANDROID_NDK_HOME to its directory "
        f"(or TVM_NDK_CC to its {ndk_prefix}{NDK_MIN_API}-clang), or install a generic cross compiler "
        f"({gcc_prefix}-gcc; on Debian/Ubuntu: apt-get install gcc-{gcc_prefix}) and put it on PATH")


def _ndk_clang(ndk_home: Path, ndk_prefix: str) -> str | None:
    """The NDK clang for the lowest API level >= NDK_MIN_API (or the highest there is)."""
    found = {}
    for path in glob.glob(str(ndk_home / "toolchains" / "llvm" / "prebuilt" / "*" / "bin" / f"{ndk_prefix}*-clang")):
        level = Path(path).name[len(ndk_prefix):-len("-clang")]
        if level.isdigit() and os.access(path, os.X_OK):
            found[int(level)] = path
    if not found:
        return None
    usable = [level for level in found if level >= NDK_MIN_API]
    return found[min(usable)] if usable else found[max(found)]


def elf_machine(path) -> int:
    """e_machine of an ELF file (its CPU architecture: 183 is aarch64)."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise MulayerError(f"{path} is not an ELF file")
    byteorder = "little" if header[5] == 1 else "big"
    return int.from_bytes(header[18:20], byteorder)


def export_fcompile(cpu: Processor):
    """The `fcompile` that `export_library` links model.so with: None on this machine's CPU."""
    if not is_cross(cpu):
        return None
    triple = target_triple(cpu)
    compiler, kind = find_cross_compiler(triple)
    base_options = ["-lm"] if kind == "ndk" else (["-nostdlib"] if "android" in triple else [])
    expected_machine = ELF_MACHINE.get(triple_arch(triple))

    def fcompile(output, objects, options=None, **_kwargs):
        from tvm.support import cc

        try:
            cc.create_shared(output, list(objects), options=base_options + list(options or []), cc=compiler)
        except RuntimeError as err:
            raise MulayerError(f"linking model.so for {triple} with {compiler} failed: "
                               f"{str(err).strip()[-1500:]}") from None
        if expected_machine is not None and elf_machine(output) != expected_machine:
            raise MulayerError(f"{compiler} produced a library for ELF machine {elf_machine(output)}, not "
                               f"{triple} ({expected_machine}); use a compiler for {triple}")

    fcompile.output_format = "so"
    return fcompile
