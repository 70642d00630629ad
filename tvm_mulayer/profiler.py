"""Profiler: measure layer kernels on each processor, and host<->device copies.

A *configuration* is a layer (conv2d or dense) computing some number of output channels —
exactly what one side of a split runs. Configurations come from the zoo models' layers at
224×224 with their output channels cut to both parts of every split the partitioner can
choose, plus shapes sampled around them (other channel counts, sizes), so the data covers
what the partitioner will ask about and what lies between. Kernels of one processor are
compiled into ONE module (a Relax function per configuration, built with the project's
schedules) so a remote device or the GPU host loads one file and times everything; rows go
to a CSV that records the device, the CPU threads and software versions and lets an
interrupted run resume.

Each kernel is timed alone (`kernel` rows) and, for a sample, with the other processor busy
(`kernel-concurrent` rows): the CPU kernel while GPU kernels queued before it run, the GPU
kernel while another thread keeps the CPU's thread pool computing.
"""

from __future__ import annotations

import csv
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .layers import Layer

FRACTIONS = tuple(i / 8 for i in range(1, 9))  # the partitioner's ratios
COPY_SIZES = tuple(2**k for k in range(10, 25, 2))  # 1 KiB .. 16 MiB
KERNEL_KINDS = {False: "kernel", True: "kernel-concurrent"}
CSV_FIELDS = ("kind", "role", "processor", "config", "bytes", "seconds", "device", "tvm", "recorded")


def config_key(layer: Layer) -> str:
    fields = asdict(layer)
    fields.pop("name")
    return json.dumps(fields, sort_keys=True)


def layer_from_key(key: str) -> Layer:
    fields = json.loads(key)
    return Layer(name="", **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def zoo_configs(models=None, fractions=FRACTIONS, image_size: int = 224, width: float = 1.0,
                channel_multiple: int = 1) -> list[Layer]:
    """Every splittable layer of the zoo models, cut to both parts of each split at
    `fractions` (rounded as the partitioner rounds them, to `channel_multiple`)."""
    from . import zoo
    from .frontend import import_onnx
    from .layers import find_layers
    from .plan import round_split

    seen, configs = set(), []
    for name in models or zoo.NAMES:
        mod, _ = import_onnx(zoo.build(name, width=width, image_size=image_size))
        for layer in find_layers(mod["main"]):
            if not layer.splittable:
                continue
            for fraction in fractions:
                channels = round_split(layer, fraction, channel_multiple) or layer.channels_per_unit
                for part in {channels, layer.channels - channels} - {0}:
                    config = layer.part(part)
                    if config_key(config) not in seen:
                        seen.add(config_key(config))
                        configs.append(config)
    return configs


def sampled_configs(around: list[Layer], count: int, seed: int = 0) -> list[Layer]:
    """`count` layers near those of `around`: each takes one of them and draws its input
    channels, output channels and size anew (any count, not only multiples of a vector),
    keeping its kernel, stride, padding and kind (dense, grouped, depthwise)."""
    import dataclasses

    rng = np.random.default_rng(seed)
    seen, configs = {config_key(layer) for layer in around}, []
    while len(configs) < count:
        base = around[int(rng.integers(len(around)))]
        scale = lambda n: max(1, int(round(n * 2 ** rng.uniform(-1.2, 1.2))))  # noqa: E731
        out_channels = scale(base.channels)
        if base.op == "dense":
            in_features = scale(base.input_shape[1])
            layer = dataclasses.replace(base, input_shape=(1, in_features), output_shape=(1, out_channels),
                                        weight_shape=(in_features, out_channels))
        else:
            depthwise = base.groups > 1 and base.weight_shape[1] == 1
            in_channels = out_channels if depthwise else (base.input_shape[1] if base.groups > 1 else scale(base.input_shape[1]))
            groups = out_channels if depthwise else base.groups
            if in_channels % groups or out_channels % groups:
                continue
            size = max(base.weight_shape[2], scale(base.input_shape[2]))
            (kh, kw), (sh, sw), pad = base.weight_shape[2:], base.strides, base.padding
            out_h = (size + pad[0] + pad[2] - kh) // sh + 1
            out_w = (size + pad[1] + pad[3] - kw) // sw + 1
            layer = dataclasses.replace(base, input_shape=(1, in_channels, size, size),
                                        output_shape=(1, out_channels, out_h, out_w),
                                        weight_shape=(out_channels, in_channels // groups, kh, kw), groups=groups)
        # keep each kernel's tensors within what one timing pass can allocate quickly
        if layer.macs > 2e9 or np.prod(layer.weight_shape) > 3e7 or config_key(layer) in seen:
            continue
        seen.add(config_key(layer))
        configs.append(layer)
    return configs


def kernel_module(configs: list[Layer]):
    """One Relax function `k{i}(x, w, b)` = relu(layer(x, w) + b) per configuration."""
    from tvm import relax
    from tvm.relax import op

    bb = relax.BlockBuilder()
    for index, layer in enumerate(configs):
        x = relax.Var("x", relax.TensorType(layer.input_shape, layer.dtype))
        w = relax.Var("w", relax.TensorType(layer.weight_shape, layer.dtype))
        bias_shape = (1, layer.channels, 1, 1) if layer.op == "conv2d" else (1, layer.channels)
        b = relax.Var("b", relax.TensorType(bias_shape, layer.dtype))
        with bb.function(f"k{index}", [x, w, b]):
            with bb.dataflow():
                if layer.op == "conv2d":
                    y = bb.emit(op.nn.conv2d(x, w, strides=layer.strides, padding=layer.padding,
                                             dilation=layer.dilation, groups=layer.groups))
                else:
                    y = bb.emit(op.matmul(x, w))
                out = bb.emit_output(op.nn.relu(op.add(y, b)))
            bb.emit_func_output(out)
    return bb.get()


def build_kernels(configs: list[Layer], processor, host):
    """Compile the configurations' kernels for one processor (host = the CPU processor)."""
    import tvm
    from tvm import relax

    from .build import vm_pipeline
    from .schedules import ScheduleForTargets

    target = processor.tvm_target(host)
    with target:
        mod = tvm.transform.Sequential([
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FuseOps(), relax.transform.FuseTIR(),
            _bind_target(target),
            ScheduleForTargets(),
        ])(kernel_module(configs))
    return tvm.compile(mod, target=target, relax_pipeline=vm_pipeline())


def _bind_target(target):
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="BindKernelTarget")
    def bind(mod, _ctx):
        for gvar, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc) and "target" not in func.attrs:
                mod.update_func(gvar, func.with_attr("target", target))
        return mod

    return bind


def _kernel_args(layer: Layer, device) -> list:
    """Input, weight and bias of a configuration on `device`. Constant values: a kernel's
    speed does not depend on them (no denormals), and drawing VGG's 100M random weights
    would take longer than timing them."""
    import tvm

    bias_shape = (1, layer.channels, 1, 1) if layer.op == "conv2d" else (1, layer.channels)
    return [tvm.runtime.tensor(np.full(shape, 0.5, layer.dtype), device)
            for shape in (layer.input_shape, layer.weight_shape, bias_shape)]


class _BusyLoop:
    """Keeps the CPU busy from a second thread (TVM releases the GIL in kernels) by running
    one kernel over and over (`with` starts and stops it), while this thread times GPU
    kernels."""

    def __init__(self, function, args, device):
        import threading

        self.function, self.args, self.device = function, args, device
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.function(*self.args)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class _QueuedLoad:
    """Keeps an asynchronous GPU busy while this thread times a CPU kernel, as the executor
    does (it queues the GPU's part, then computes the CPU's): `count` launches of one GPU
    kernel are queued before the timing and awaited after it. (A second thread that
    launched and awaited GPU kernels shared the pinned main thread's core and slowed CPU
    kernels 6-300x, which no plan does.)"""

    def __init__(self, function, args, device, count: int):
        self.function, self.args, self.device, self.count = function, args, device, count

    def __enter__(self):
        for _ in range(self.count):
            self.function(*self.args)
        return self

    def __exit__(self, *exc):
        self.device.sync()


def measure_kernels(vm, names: list[str], configs: list[Layer], device, *, min_repeat_ms: int = 5, repeat: int = 7,
                    load=None, progress=None) -> list[float]:
    """Seconds of the kernels `names` of `vm` (computing `configs`) on `device`, inputs
    already there: the fastest of `repeat` timings, since other load on the machine only
    ever adds time. `load()`, when given, is entered around each timing (`_QueuedLoad`)."""
    import contextlib

    times = []
    for index, (name, layer) in enumerate(zip(names, configs)):
        args = _kernel_args(layer, device)
        timer = vm.time_evaluator(name, device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
        with load() if load else contextlib.nullcontext():
            times.append(float(np.min(timer(*args).results)))
        if progress:
            progress(index + 1, len(configs))
    return times


def measure_copies(device, sizes=COPY_SIZES, repeat: int = 20, host_device=None) -> list[tuple]:
    """(bytes, seconds host->device, seconds device->host) for each size."""
    import tvm

    rows = []
    for size in sizes:
        host = tvm.runtime.tensor(np.zeros(size // 4, "float32"), host_device or tvm.cpu(0))
        remote = tvm.runtime.empty((size // 4,), "float32", device)
        timings = []
        for src, dst in ((host, remote), (remote, host)):
            samples = []
            for _ in range(repeat):
                start = time.perf_counter()
                src.copyto(dst)
                device.sync()
                samples.append(time.perf_counter() - start)
            timings.append(float(np.min(samples)))
        rows.append((size, *timings))
    return rows


def progress_bar(label: str):
    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _device_description(processor, threads: int | None = None) -> str:
    import tvm

    if processor.device_type == "cpu":
        text = f"{platform.machine()} {processor.target.get('mcpu', 'generic')}"
        text += " (emulated GPU)" if processor.emulated else ""
        return text + (f", {threads} threads" if threads else "")
    device = tvm.device(processor.device_type, 0)
    return f"{processor.device_type} {getattr(device, 'device_name', '')}".strip()


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _kernel_row(kind, role, processor, layer, seconds, stamp, threads) -> dict:
    import tvm

    return {"kind": kind, "role": role, "processor": processor.label(), "config": config_key(layer),
            "bytes": "", "seconds": f"{seconds:.9g}", "device": _device_description(processor, threads),
            "tvm": tvm.__version__, "recorded": stamp}


def _copy_rows(gpu, stamp, devices) -> list:
    import tvm

    rows = []
    for size, h2d, d2h in measure_copies(devices[1], host_device=devices[0]):
        for direction, seconds in (("h2d", h2d), ("d2h", d2h)):
            rows.append({"kind": "copy", "role": "gpu", "processor": gpu.label(), "config": direction, "bytes": size,
                         "seconds": f"{seconds:.9g}", "device": _device_description(gpu), "tvm": tvm.__version__,
                         "recorded": stamp})
    return rows


def _open_csv(path: Path):
    new_file = not path.exists()
    handle = open(path, "a", newline="")
    writer = csv.DictWriter(handle, CSV_FIELDS)
    if new_file:
        writer.writeheader()
    return handle, writer


def _measure_into(csv_path, cpu, gpu, configs: list[Layer], devices: list, kernels, *, threads: int | None,
                  concurrent_share: float = 0.2, resume: bool = True, quiet: bool = False) -> Path:
    """Time `configs` on devices [cpu, gpu] (every one alone; a `concurrent_share` of them
    also with the other processor busy, where the GPU is a real, asynchronous one) and
    copies between them, appending rows to `csv_path`. `kernels(role, processor, indices)`
    gives a module holding the kernels of configs[indices] and their names by index; with
    `resume`, measurements the CSV already holds are skipped. `threads`: the CPU thread
    pool's size, recorded with each row (None where unknown)."""
    import contextlib

    import tvm.runtime.vm

    path = Path(csv_path)
    done = {(row["kind"], row["role"], row["config"]) for row in read_rows(path)} if resume else set()
    step = max(1, round(1 / concurrent_share)) if concurrent_share and not gpu.emulated else 0
    sampled = set(range(0, len(configs), step)) if step else set()
    roles = (("cpu", cpu, devices[0]), ("gpu", gpu, devices[1]))
    todo = {role: [(i, concurrent) for concurrent in (False, True) for i in range(len(configs))
                   if (not concurrent or i in sampled)
                   and (KERNEL_KINDS[concurrent], role, config_key(configs[i])) not in done]
            for role, _, _ in roles}
    handle, writer = _open_csv(path)
    with handle:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        if any(todo.values()):
            # the other processor is kept busy with its largest kernel
            load = max(range(len(configs)), key=lambda i: configs[i].macs)
            loaded = {}
            for role, processor, device in roles:
                module, names = kernels(role, processor, sorted({i for i, _ in todo[role]} | {load}))
                loaded[role] = (tvm.runtime.vm.VirtualMachine(module, device), names)
            cpu_vm, cpu_names = loaded["cpu"]
            gpu_vm, gpu_names = loaded["gpu"]
            gpu_load = (gpu_vm[gpu_names[load]], _kernel_args(configs[load], devices[1]), devices[1])
            if sampled:  # enough launches to outlast a timing (repeat x min_repeat_ms and more)
                launch_seconds = gpu_vm.time_evaluator(gpu_names[load], devices[1], number=10)(*gpu_load[1]).mean
                launches = min(1000, int(0.08 / max(launch_seconds, 1e-6)) + 1)
            for role, processor, device in roles:
                vm, names = loaded[role]
                for concurrent in (False, True):
                    items = [i for i, c in todo[role] if c == concurrent]
                    if not items:
                        continue
                    each = (lambda: _QueuedLoad(*gpu_load, launches)) if concurrent and role == "cpu" else None
                    phase = _BusyLoop(cpu_vm[cpu_names[load]], _kernel_args(configs[load], devices[0]), devices[0]) \
                        if concurrent and role == "gpu" else contextlib.nullcontext()
                    label = f"{role} kernels{' (other processor busy)' if concurrent else ''}"
                    with phase:
                        times = measure_kernels(vm, [names[i] for i in items], [configs[i] for i in items], device,
                                                load=each, progress=None if quiet else progress_bar(label))
                    writer.writerows(_kernel_row(KERNEL_KINDS[concurrent], role, processor, configs[i], t, stamp,
                                                 threads) for i, t in zip(items, times))
                    handle.flush()
        if ("copy", "gpu", "h2d") not in done:
            writer.writerows(_copy_rows(gpu, stamp, devices))
    return path


def _built(cpu, configs: list[Layer], processor, indices: list[int]):
    """(module, names by index) of the kernels of configs[indices], compiled here."""
    module = build_kernels([configs[i] for i in indices], processor, cpu)
    return module, {i: f"k{n}" for n, i in enumerate(indices)}


def profile(csv_path, cpu, gpu, configs: list[Layer], *, quiet: bool = False) -> Path:
    """Measure `configs` on both processors of this machine and copies between them; append
    to `csv_path`, skipping what it already holds (so an interrupted run resumes)."""
    from .runtime import cpu_threads, tvm_device

    threads = cpu_threads(cpu, gpu)
    devices = [tvm_device(cpu, 0), tvm_device(gpu, 1)]
    return _measure_into(csv_path, cpu, gpu, configs, devices,
                         lambda role, processor, indices: _built(cpu, configs, processor, indices), threads=threads,
                         quiet=quiet)


def profile_remote(session, csv_path, cpu, gpu, configs: list[Layer], *, quiet: bool = False) -> Path:
    """Like `profile`, on the devices of a TVM RPC session (`tvm_mulayer.deploy.connect`):
    kernels are compiled here, uploaded, and timed there."""
    import tempfile

    from .deploy import remote_devices

    with tempfile.TemporaryDirectory() as tmp:
        def upload(role, processor, indices):
            local = Path(tmp) / f"{role}-{time.strftime('%Y%m%dT%H%M%S')}.so"
            module, names = _built(cpu, configs, processor, indices)
            module.export_library(str(local))
            session.upload(str(local), local.name)
            return session.load_module(local.name), names

        # the remote's thread pool is its own: its size is not known here
        return _measure_into(csv_path, cpu, gpu, configs, remote_devices(session, cpu, gpu), upload, threads=None,
                             quiet=quiet)


def export_kernels(directory, cpu, gpu, configs: list[Layer]) -> dict:
    """Compile the kernels for both processors into `directory` (cpu.so, gpu.so and
    configs.json), to be measured where the processors are with `measure_exported`.
    Returns the compiled modules by role."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    modules = {}
    for role, processor in (("cpu", cpu), ("gpu", gpu)):
        modules[role] = build_kernels(configs, processor, cpu)
        modules[role].export_library(str(out / f"{role}.so"))
    (out / "configs.json").write_text(json.dumps({"cpu": cpu.to_json(), "gpu": gpu.to_json(),
                                                  "configs": [config_key(c) for c in configs]}))
    return modules


def measure_exported(directory, csv_path, *, quiet: bool = False) -> Path:
    """Measure kernels exported by `export_kernels` (needs only the TVM runtime); appends
    to `csv_path`, skipping what it already holds."""
    import tvm

    from .processors import Processor
    from .runtime import cpu_threads, tvm_device

    src = Path(directory)
    spec = json.loads((src / "configs.json").read_text())
    cpu, gpu = Processor.from_json(spec["cpu"]), Processor.from_json(spec["gpu"])
    configs = [layer_from_key(key) for key in spec["configs"]]
    threads = cpu_threads(cpu, gpu)
    # the exported modules hold every configuration's kernel, named by its index
    return _measure_into(csv_path, cpu, gpu, configs, [tvm_device(cpu, 0), tvm_device(gpu, 1)],
                         lambda role, processor, indices: (tvm.runtime.load_module(str(src / f"{role}.so")),
                                                           {i: f"k{i}" for i in indices}),
                         threads=threads, quiet=quiet)
