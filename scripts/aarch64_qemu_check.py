#!/usr/bin/env python3
"""Run aarch64 TVM executables on an x86 machine, under user-mode QEMU.

    apt-get install -y qemu-user gcc-aarch64-linux-gnu     # QEMU >= 7 (-cpu max has i8mm)
    python scripts/aarch64_qemu_check.py setup               # once: arm64 Python + TVM runtime
    python scripts/aarch64_qemu_check.py status
    pytest tests/test_schedules_aarch64.py                   # then runs the numeric checks

`setup` builds ROOT (default ~/.cache/tvm-mulayer/aarch64-qemu, or $MULAYER_AARCH64_ROOT):

    ROOT/sysroot   Debian arm64 packages of Python and the C/C++ libraries it and TVM link,
                   unpacked (apt-get download with a private package index, so the machine's
                   dpkg architectures are left alone; dpkg -x)
    ROOT/site      the aarch64 wheels of this machine's apache-tvm, apache-tvm-ffi and numpy
                   versions, unzipped; TVM's compiler library removed (only the runtime runs)

`run_executables` (used by the tests) exports nothing itself: it takes Relax executables already
linked for aarch64 (`export_library` with aarch64-linux-gnu-gcc), runs each one's `main` in a
single emulated Python (starting it costs ~10 s under QEMU) and returns the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_ROOT = Path(os.environ.get("MULAYER_AARCH64_ROOT",
                                   Path.home() / ".cache" / "tvm-mulayer" / "aarch64-qemu"))
# the arm64 Python of this machine's apt sources (Debian bookworm: 3.11); the wheels follow it
PYTHON = "python3.11"
# Python, the libraries its interpreter and used stdlib modules link (ctypes: libffi), and the
# C++ runtime of TVM's libraries
ARM64_DEBS = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1",
              "zlib1g", "libffi8", "libbz2-1.0", "liblzma5", "libcrypt1", "libssl3", "libuuid1", "libstdc++6",
              "libgcc-s1")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
# never loaded under TVM_USE_RUNTIME_LIB=1; together 250 MB
UNUSED_TVM_LIBS = ("libtvm_compiler.so", "libtvm_runtime_cuda.so")


def _apt_options(root: Path) -> list:
    """apt-get options that resolve arm64 packages from a package index of our own."""
    state = root / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    return ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64",
            "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
            "-o", "Dir::State::status=/dev/null"]


def _host_versions() -> dict:
    """The aarch64 wheels must be this machine's versions: the kernels are built by its TVM."""
    from importlib.metadata import version  # pylint: disable=import-outside-toplevel

    return {name: version(name) for name in ("apache-tvm", "apache-tvm-ffi", "numpy", "typing_extensions")}


def setup(root: Path) -> None:
    debs, wheels, sysroot, site = root / "debs", root / "wheels", root / "sysroot", root / "site"
    # a re-run unpacks only what it downloads now (old versions would overwrite new ones)
    for old in (debs, wheels, sysroot, site):
        shutil.rmtree(old, ignore_errors=True)
    debs.mkdir(parents=True)
    apt = _apt_options(root)
    subprocess.run(["apt-get", *apt, "update"], check=True)
    subprocess.run(["apt-get", *apt, "download", *ARM64_DEBS], check=True, cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(sysroot)], check=True)

    pins = [f"{name}=={ver}" for name, ver in _host_versions().items()]
    platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *platforms,
                    "--python-version", PYTHON.removeprefix("python"), "-d", str(wheels), *pins], check=True)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    for lib in UNUSED_TVM_LIBS:
        (site / "tvm" / "lib" / lib).unlink(missing_ok=True)
    print(f"aarch64 Python + TVM runtime ready in {root}")


def emulator_problem(root: Path = DEFAULT_ROOT) -> str | None:
    """Why aarch64 executables cannot run here (None: they can)."""
    if shutil.which("qemu-aarch64") is None:
        return "qemu-aarch64 is not installed (apt-get install qemu-user)"
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        return "aarch64-linux-gnu-gcc is not installed (apt-get install gcc-aarch64-linux-gnu)"
    if not (root / "sysroot" / "usr" / "bin" / PYTHON).exists() or not (root / "site" / "tvm").is_dir():
        return f"no aarch64 Python + TVM runtime in {root} (python scripts/aarch64_qemu_check.py setup)"
    return None


def run_executables(runs: dict, root: Path = DEFAULT_ROOT, threads: int = 2) -> dict:
    """{name: (path of an aarch64 Relax executable .so, [numpy inputs of main])} ->
    {name: [numpy outputs of main]}, all run in one emulated Python on QEMU's `max` CPU (every
    Armv8/9 extension QEMU implements, i8mm included)."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory(prefix="aarch64-run-") as tmp:
        manifest = {}
        for name, (lib, inputs) in runs.items():
            paths = []
            for i, array in enumerate(inputs):
                paths.append(os.path.join(tmp, f"{name}.in{i}.npy"))
                np.save(paths[-1], array)
            manifest[name] = {"lib": str(lib), "inputs": paths, "outputs": os.path.join(tmp, f"{name}.out")}
        manifest_path = os.path.join(tmp, "manifest.json")
        with open(manifest_path, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(root / "site"),
               "TVM_USE_RUNTIME_LIB": "1", "TVM_NUM_THREADS": str(threads)}
        subprocess.run(["qemu-aarch64", "-cpu", "max", "-L", str(root / "sysroot"),
                        str(root / "sysroot" / "usr" / "bin" / PYTHON), os.path.abspath(__file__), "run-vm",
                        manifest_path], check=True, env=env, timeout=1800)
        return {name: [np.load(path) for path in sorted(Path(entry["outputs"]).glob("*.npy"),
                                                         key=lambda p: int(p.stem))]
                for name, entry in manifest.items()}


def _run_vm(manifest_path: str) -> None:
    """Inside the emulated Python: run each manifest entry's main on the TVM runtime's VM."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm.runtime.vm import VirtualMachine  # pylint: disable=import-outside-toplevel

    with open(manifest_path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    for entry in manifest.values():
        vm = VirtualMachine(tvm.runtime.load_module(entry["lib"]), tvm.cpu())
        result = vm["main"](*[tvm.runtime.tensor(np.load(path)) for path in entry["inputs"]])
        outputs = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)  # a tuple's fields
        os.makedirs(entry["outputs"], exist_ok=True)
        for i, out in enumerate(outputs):
            np.save(os.path.join(entry["outputs"], f"{i}.npy"), out.numpy())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("setup", "status", "run-vm"))
    parser.add_argument("manifest", nargs="?", help="run-vm only (internal): the runs' manifest")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args(argv)
    if args.command == "setup":
        setup(args.root)
    elif args.command == "run-vm":
        _run_vm(args.manifest)
        return 0
    problem = emulator_problem(args.root)
    print(problem or f"ready: {args.root}")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
