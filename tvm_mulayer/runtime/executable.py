"""Run and ship executables: the in-memory result of compile, exported artifacts, loading.

This module needs only the TVM *runtime* (no `tvm.relax`), so an artifact runs on a host
that has just `libtvm_runtime` — the GPU host, a phone's RPC server. An artifact directory
holds:

* `model.so`      the VM executable with CPU and GPU kernels (TVM `export_library`)
* `weights.npz`   weights in parameter order (`w0`, `w1`, ...; plain arrays, no pickle)
* `plan.json`     the Plan it was built with
* `manifest.json` format, versions, processors, inputs/outputs, the device of each weight,
                  and the SHA-256 of every file (checked on load)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..base.errors import MulayerError
from ..base.plan import Plan
from ..base.processors import Processor
from ..base.quantization import CALIBRATION_FILE, Calibration
from .devices import EXCHANGE_COPY, check_kernels_build, check_not_forked, cpu_threads, tvm_device

ARTIFACT_FORMAT = "tvm-mulayer-artifact/1"
# the VM calls that copy between the devices: passes.PooledCopies' destination-passing copy, and
# R.to_vdevice's builtin (artifacts built before it)
COPY_SYMBOLS = (EXCHANGE_COPY, "vm.builtin.to_device")
FILES = ("model.so", "weights.npz", "plan.json")


def _manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's content but this digest itself (so an edit is detected)."""
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def concurrent_runs() -> int:
    """How many VM calls run at once in this process (TVM_MULAYER_CONCURRENT_RUNS, default the
    CPU count up to 4); more callers wait for a free runner thread."""
    value = os.environ.get("TVM_MULAYER_CONCURRENT_RUNS") or str(min(4, os.cpu_count() or 1))
    if not value.isdigit() or int(value) < 1:
        raise MulayerError(f"TVM_MULAYER_CONCURRENT_RUNS={value!r}: give a whole number of at least 1")
    return int(value)


class _Runners:
    """The process's threads that run every Executable's VMs, started on first use.

    TVM gives each thread that runs a parallel kernel a thread pool of its own
    (TVM_NUM_THREADS workers) and never reclaims it when the thread ends: VM calls on the
    callers' threads would leave that many threads behind for every short-lived caller (a
    thread per request) and oversubscribe the cores with many callers. On a fixed set of
    runner threads the pools are made once and the calls in flight are bounded."""

    def __init__(self):
        self._lock = threading.Lock()
        self._executor = None
        self._here = threading.local()  # .runner is True on a runner thread
        # a forked child has none of the parent's threads: its calls would wait forever on them
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self):
        self._lock = threading.Lock()
        self._executor = None

    def call(self, work):
        """`work()` on a runner thread; the caller waits for its result or exception. A runner
        calling in (a nested call) runs it itself: waiting on its peers could deadlock."""
        if getattr(self._here, "runner", False):
            return work()
        with self._lock:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(concurrent_runs(), thread_name_prefix="mulayer-runner",
                                                    initializer=setattr, initargs=(self._here, "runner", True))
            executor = self._executor
        return executor.submit(work).result()


_RUNNERS = _Runners()


class Executable:
    """A two-device model ready to run: `.run(inputs)`, `.benchmark(...)`, `.export(dir)`.

    `run`, `benchmark` and `trace` may be called from several threads at once. The calls run
    on the process's runner threads (`concurrent_runs()` at once; see `_Runners`), each with a
    VM of its own for this executable — a Relax VM keeps a call's frames and registers, so two
    calls cannot share one — and all the VMs share the weights, put on their devices once."""

    def __init__(self, module, plan: Plan, cpu: Processor, gpu: Processor, inputs: dict, outputs: list,
                 sources: dict, weights: list, weight_devices: list, manifest: dict | None = None):
        self.module = module  # relax VMExecutable or a loaded runtime.Module
        self.plan = plan
        self.cpu = cpu
        self.gpu = gpu
        self.inputs = {name: (tuple(shape), dtype) for name, (shape, dtype) in inputs.items()}
        self.outputs = list(outputs)
        self.sources = dict(sources)
        self.weights = weights
        self.weight_devices = weight_devices
        self.manifest = manifest
        self._lock = threading.Lock()  # guards the set-up below
        self._devices = None
        self._weight_args = None  # the weights on their devices, shared by every VM
        self._runner_vm = threading.local()  # .vm: each runner thread's VM of this executable
        self.calibration = None  # the int8 slices' Calibration, saved with the artifact
        self.crossing = (manifest or {}).get("crossing_bytes")  # see build.crossing_bytes

    # ---- running -----------------------------------------------------------------
    def _setup(self):
        """Open the devices and put the weights on them, once."""
        check_not_forked(self.gpu)  # devices opened before a fork are dead in the child
        with self._lock:
            if self._weight_args is not None:
                return
            cpu_threads(self.cpu, self.gpu)
            import tvm

            devices = [tvm_device(self.cpu, 0), tvm_device(self.gpu, 1)]
            check_kernels_build(self.gpu, devices[1], self.module)
            self._weight_args = [tvm.runtime.tensor(w, devices[d]) for w, d in zip(self.weights, self.weight_devices)]
            self._devices = devices

    def _new_vm(self):
        import tvm.runtime.vm  # not imported by `import tvm` in runtime-only mode

        self._setup()
        return tvm.runtime.vm.VirtualMachine(self.module, self._devices)

    def _on_runner(self, work):
        """`work(vm)` on a runner thread, with that thread's VM of this executable."""
        def with_vm():
            vm = getattr(self._runner_vm, "vm", None)
            if vm is None:
                vm = self._runner_vm.vm = self._new_vm()
            return work(vm)

        return _RUNNERS.call(with_vm)

    def input_tensors(self, inputs, device=None) -> list:
        """The VM's input arguments on `device` (default: the CPU device the VM runs with), after
        checking `inputs` (dict, one array, or None: seeded random data) against the model's."""
        import tvm

        if device is None:
            self._setup()
            device = self._devices[0]
        if inputs is None:
            from .inputs import random_inputs

            inputs = random_inputs(self.inputs)
        if isinstance(inputs, np.ndarray):
            if len(self.inputs) != 1:
                raise MulayerError(f"the model has inputs {sorted(self.inputs)}; pass a dict name -> array")
            inputs = {next(iter(self.inputs)): inputs}
        unknown = set(inputs) - set(self.inputs)
        missing = set(self.inputs) - set(inputs)
        if unknown or missing:
            raise MulayerError(f"inputs do not match the model: unknown {sorted(unknown)}, missing "
                               f"{sorted(missing)}; the model's inputs are {sorted(self.inputs)}")
        args = []
        for name, (shape, dtype) in self.inputs.items():
            array = np.asarray(inputs[name])
            if tuple(array.shape) != shape:
                raise MulayerError(f"input {name!r} has shape {list(array.shape)}, the model wants {list(shape)}")
            if array.dtype != np.dtype(dtype):
                if not np.can_cast(array.dtype, dtype, casting="same_kind"):
                    raise MulayerError(f"input {name!r} has dtype {array.dtype}, the model wants {dtype}")
                array = array.astype(dtype)
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                raise MulayerError(f"input {name!r} contains NaN or Inf; tvm-mulayer refuses non-finite inputs "
                                   "(its Relu/Clip kernels map NaN to numbers where onnxruntime keeps NaN)")
            # reshape: np.ascontiguousarray makes a 0-d (scalar) input 1-d
            args.append(tvm.runtime.tensor(np.ascontiguousarray(array).reshape(array.shape), device))
        return args

    def _invoke(self, vm, args) -> list:
        result = vm["main"](*args, *self._weight_args)
        return list(result) if not hasattr(result, "numpy") else [result]

    def run(self, inputs=None) -> dict:
        """Outputs keyed by the ONNX output names; `inputs` is a dict, one array, or None (random).
        Safe to call from several threads at once (see the class)."""
        args = self.input_tensors(inputs)
        results = self._on_runner(lambda vm: [value.numpy() for value in self._invoke(vm, args)])
        return dict(zip(self.outputs, results))

    def benchmark(self, inputs=None, repeat: int = 10, warmup: int = 2) -> dict:
        """Latency in seconds over `repeat` runs (outputs back on the host each time)."""
        args = self.input_tensors(inputs)

        def timed(vm):
            for _ in range(warmup):
                self._invoke(vm, args)[0].numpy()
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                self._invoke(vm, args)[0].numpy()
                times.append(time.perf_counter() - start)
            return times

        times = self._on_runner(timed)  # timed on the runner thread: the hand-over is not in it
        return {"median": statistics.median(times), "min": min(times), "times": times}

    def trace(self, inputs=None) -> list:
        """One run with every VM call timed on the host: dicts with symbol, lane ("cpu",
        "gpu" — by the device of the call's output — or "copy"), start and end seconds.
        On a real GPU each GPU kernel is synchronised to time it, so the trace shows each
        kernel's duration but not the overlap an untraced run has."""
        import tvm

        vm = self._new_vm()  # of its own: the instrument stays off the VMs `run` uses
        gpu = self._devices[1]
        asynchronous = gpu.dlpack_device_type() != tvm.cpu(0).dlpack_device_type()
        calls, started = [], {}

        def instrument(func, symbol, before_run, ret_value, *args):
            if symbol.startswith("vm.builtin") and symbol not in COPY_SYMBOLS:
                return 0
            if before_run:
                started[symbol] = time.perf_counter()
                return 0
            output = args[-1] if args else None
            on_gpu = getattr(output, "device", None) is not None and output.device.index == gpu.index and (
                output.device.dlpack_device_type() == gpu.dlpack_device_type())
            if symbol in COPY_SYMBOLS:
                lane = "copy"
            else:
                lane = "gpu" if on_gpu else "cpu"
            if lane == "gpu" and asynchronous:
                gpu.sync()
            calls.append({"symbol": symbol, "lane": lane, "start": started.pop(symbol), "end": time.perf_counter()})
            return 0

        vm.set_instrument(instrument)
        args = self.input_tensors(inputs)
        _RUNNERS.call(lambda: vm["main"](*args, *self._weight_args))
        return calls

    # ---- shipping ----------------------------------------------------------------
    def export(self, directory) -> Path:
        """Write the artifact directory (atomically: a failed export leaves nothing loadable)."""
        import tvm

        from ..base import __version__

        target = Path(directory)
        if target.exists() and (not target.is_dir() or not (target / "manifest.json").exists() and any(target.iterdir())):
            raise MulayerError(f"{target} exists and is not a tvm-mulayer artifact; choose a new directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            from .cross import export_fcompile  # cross targets (phones) link with their toolchain

            self.module.export_library(str(staging / "model.so"), fcompile=export_fcompile(self.cpu))
            np.savez(staging / "weights.npz", **{f"w{i}": w for i, w in enumerate(self.weights)})
            self.plan.save(staging / "plan.json")
            files = list(FILES)
            if self.calibration is not None:
                self.calibration.save(staging / CALIBRATION_FILE)
                files.append(CALIBRATION_FILE)
            manifest = {
                "format": ARTIFACT_FORMAT,
                "tvm_mulayer": __version__,
                "tvm": tvm.__version__,
                "cpu": self.cpu.to_json(),
                "gpu": self.gpu.to_json(),
                "inputs": {name: {"shape": list(shape), "dtype": dtype} for name, (shape, dtype) in self.inputs.items()},
                "outputs": self.outputs,
                "sources": self.sources,
                "weight_devices": self.weight_devices,
                "weight_shapes": [[list(w.shape), str(w.dtype)] for w in self.weights],
                "crossing_bytes": self.crossing,
                "files": {name: _sha256(staging / name) for name in files},
            }
            manifest["manifest_sha256"] = _manifest_digest(manifest)
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
            backup = None
            if target.exists():  # set aside, not deleted, until the new artifact is in place
                backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / "previous"
                os.rename(target, backup)
            try:
                os.replace(staging, target)
            except BaseException:
                if backup is not None:
                    os.rename(backup, target)
                raise
            finally:
                if backup is not None:
                    shutil.rmtree(backup.parent, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.manifest = manifest
        return target


def read_manifest(directory, unchecked=()) -> dict:
    """The manifest of an artifact directory, after checking its format, TVM version and the
    checksums of its files (but those named in `unchecked`)."""
    import tvm

    root = Path(directory)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise MulayerError(f"{root} is not a tvm-mulayer artifact (no manifest.json); "
                           "make one with `mulayer compile MODEL.onnx -o DIR`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise MulayerError(f"{manifest_path} is corrupt ({err}); recompile the artifact") from None
    if not isinstance(manifest, dict):
        raise MulayerError(f"{manifest_path} is corrupt (not a JSON object); recompile the artifact")
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise MulayerError(f"{root} has artifact format {manifest.get('format')!r}, this tvm-mulayer reads "
                           f"{ARTIFACT_FORMAT!r}; recompile it with this version")
    if manifest.get("tvm") != tvm.__version__:
        raise MulayerError(f"{root} was built with TVM {manifest.get('tvm')}, this runtime is TVM "
                           f"{tvm.__version__}; recompile it or use the matching runtime")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise MulayerError(f"{manifest_path} was edited or is damaged (its checksum does not match); "
                           "recompile the artifact")
    for name in dict.fromkeys([*FILES, *manifest.get("files", {})]):
        path = root / name
        if name in unchecked:
            continue
        if not path.is_file() or _sha256(path) != manifest["files"].get(name):
            raise MulayerError(f"{path} is missing or does not match its checksum; the artifact is "
                               "damaged — recompile it")
    return manifest


class _LoadedCode:
    """Each distinct model.so this process has loaded, by its checksum.

    TVM's runtime keeps part of every `load_module` for the life of the process, even once
    the module is released (measured: 0.2 MiB per load of a 1.3 MB SqueezeNet library on the
    CPU, 2.2 MiB with its CUDA kernels): a service reloading an artifact grew without bound.
    An artifact's code never changes, so it is loaded once and shared by every Executable
    made from it (each makes its own VMs and holds its own weights)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._modules = {}

    def module(self, path: Path, sha256: str):
        import tvm

        with self._lock:
            if sha256 not in self._modules:
                self._modules[sha256] = tvm.runtime.load_module(str(path))
            return self._modules[sha256]


_LOADED_CODE = _LoadedCode()


def load_artifact(directory, weights: list | None = None) -> Executable:
    """Load an exported artifact, checking its format, version and file checksums.

    `weights` replaces the artifact's weights.npz with arrays of the same shapes and dtypes
    (other trained values, or random ones where only latency matters)."""
    root = Path(directory)
    manifest = read_manifest(root, unchecked=("weights.npz",) if weights is not None else ())
    cpu = Processor.from_json(manifest["cpu"])
    gpu = Processor.from_json(manifest["gpu"])
    tvm_device(gpu, 1)  # fails clearly, before loading kernels, where the GPU is missing
    module = _LOADED_CODE.module(root / "model.so", manifest["files"]["model.so"])
    if weights is None:
        with np.load(root / "weights.npz", allow_pickle=False) as data:
            weights = [data[f"w{i}"] for i in range(len(data.files))]
    elif [[list(np.shape(w)), str(np.asarray(w).dtype)] for w in weights] != manifest.get("weight_shapes"):
        raise MulayerError(f"the given weights do not match the shapes and dtypes {root} was built for")
    plan = Plan.from_json(json.loads((root / "plan.json").read_text()))
    inputs = {name: (tuple(v["shape"]), v["dtype"]) for name, v in manifest["inputs"].items()}
    executable = Executable(module, plan, cpu, gpu, inputs, manifest["outputs"], manifest.get("sources", {}),
                            weights, manifest["weight_devices"], manifest)
    if CALIBRATION_FILE in manifest["files"]:
        executable.calibration = Calibration.load(root / CALIBRATION_FILE)
    return executable
