"""Profiler: measure layer kernels on each processor, and host<->device copies.

A *configuration* is a layer (conv2d or dense) computing some number of output channels —
exactly what one side of a split runs. Configurations come from the zoo models' layers at
224×224 with their output channels cut to the fractions a split produces, so the data covers
what the partitioner will ask about. Kernels of one processor are compiled into ONE module
(a Relax function per configuration, built with the project's schedules) so a remote device
or the GPU host loads one file and times everything; rows go to a CSV that records the
device and software versions and lets an interrupted run resume.
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

FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)
COPY_SIZES = tuple(2**k for k in range(10, 25, 2))  # 1 KiB .. 16 MiB
CSV_FIELDS = ("kind", "role", "processor", "config", "bytes", "seconds", "device", "tvm", "recorded")


def config_key(layer: Layer) -> str:
    fields = asdict(layer)
    fields.pop("name")
    return json.dumps(fields, sort_keys=True)


def layer_from_key(key: str) -> Layer:
    fields = json.loads(key)
    return Layer(name="", **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def zoo_configs(models=None, fractions=FRACTIONS, image_size: int = 224, width: float = 1.0) -> list[Layer]:
    """Every splittable layer of the zoo models, at each fraction of its output channels."""
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
                channels = round_split(layer, fraction, 1) or layer.channels_per_unit
                part = layer.part(channels)
                key = config_key(part)
                if key not in seen:
                    seen.add(key)
                    configs.append(part)
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


def measure_kernels(module, configs: list[Layer], device, *, min_repeat_ms: int = 10, repeat: int = 7,
                    progress=None) -> list[float]:
    """Seconds of each configuration's kernel on `device` (inputs already there): the
    fastest of `repeat` timings, since other load on the machine only ever adds time."""
    import tvm
    import tvm.runtime.vm

    vm = tvm.runtime.vm.VirtualMachine(module, device)
    rng = np.random.default_rng(0)
    times = []
    for index, layer in enumerate(configs):
        bias_shape = (1, layer.channels, 1, 1) if layer.op == "conv2d" else (1, layer.channels)
        args = [tvm.runtime.tensor(rng.standard_normal(shape).astype(layer.dtype), device)
                for shape in (layer.input_shape, layer.weight_shape, bias_shape)]
        timer = vm.time_evaluator(f"k{index}", device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
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


def _device_description(processor) -> str:
    import tvm

    if processor.device_type == "cpu":
        text = f"{platform.machine()} {processor.target.get('mcpu', 'generic')}"
        return text + (" (emulated GPU)" if processor.emulated else "")
    device = tvm.device(processor.device_type, 0)
    return f"{processor.device_type} {getattr(device, 'device_name', '')}".strip()


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _kernel_row(role, processor, layer, seconds, stamp) -> dict:
    import tvm

    return {"kind": "kernel", "role": role, "processor": processor.label(), "config": config_key(layer),
            "bytes": "", "seconds": f"{seconds:.9g}", "device": _device_description(processor),
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


def _measure_into(csv_path, cpu, gpu, configs: list[Layer], devices: list, kernels, *, resume: bool = True,
                  quiet: bool = False) -> Path:
    """Time `configs` on devices [cpu, gpu] and copies between them, appending rows to
    `csv_path`. `kernels(role, processor, todo)` gives the module holding `todo`'s kernels;
    with `resume`, configurations the CSV already holds are skipped."""
    path = Path(csv_path)
    done = {(row["kind"], row["role"], row["config"]) for row in read_rows(path)} if resume else set()
    handle, writer = _open_csv(path)
    with handle:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        for role, processor, device in (("cpu", cpu, devices[0]), ("gpu", gpu, devices[1])):
            todo = [c for c in configs if ("kernel", role, config_key(c)) not in done]
            if not todo:
                continue
            module = kernels(role, processor, todo)
            times = measure_kernels(module, todo, device, progress=None if quiet else progress_bar(f"{role} kernels"))
            writer.writerows(_kernel_row(role, processor, layer, t, stamp) for layer, t in zip(todo, times))
            handle.flush()
        if ("copy", "gpu", "h2d") not in done:
            writer.writerows(_copy_rows(gpu, stamp, devices))
    return path


def profile(csv_path, cpu, gpu, configs: list[Layer], *, quiet: bool = False) -> Path:
    """Measure `configs` on both processors of this machine and copies between them; append
    to `csv_path`, skipping what it already holds (so an interrupted run resumes)."""
    from .runtime import tvm_device

    devices = [tvm_device(cpu, 0), tvm_device(gpu, 1)]
    return _measure_into(csv_path, cpu, gpu, configs, devices,
                         lambda role, processor, todo: build_kernels(todo, processor, cpu), quiet=quiet)


def profile_remote(session, csv_path, cpu, gpu, configs: list[Layer], *, quiet: bool = False) -> Path:
    """Like `profile`, on the devices of a TVM RPC session (`tvm_mulayer.deploy.connect`):
    kernels are compiled here, uploaded, and timed there."""
    import tempfile

    from .deploy import remote_devices

    with tempfile.TemporaryDirectory() as tmp:
        def upload(role, processor, todo):
            local = Path(tmp) / f"{role}-{time.strftime('%Y%m%dT%H%M%S')}.so"
            build_kernels(todo, processor, cpu).export_library(str(local))
            session.upload(str(local), local.name)
            return session.load_module(local.name)

        return _measure_into(csv_path, cpu, gpu, configs, remote_devices(session, cpu, gpu), upload, quiet=quiet)


def export_kernels(directory, cpu, gpu, configs: list[Layer]) -> Path:
    """Compile the kernels for both processors into `directory` (cpu.so, gpu.so and
    configs.json), to be measured where the processors are with `measure_exported`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for role, processor in (("cpu", cpu), ("gpu", gpu)):
        build_kernels(configs, processor, cpu).export_library(str(out / f"{role}.so"))
    (out / "configs.json").write_text(json.dumps({"cpu": cpu.to_json(), "gpu": gpu.to_json(),
                                                  "configs": [config_key(c) for c in configs]}))
    return out


def measure_exported(directory, csv_path, *, quiet: bool = False) -> Path:
    """Measure kernels exported by `export_kernels` (needs only the TVM runtime)."""
    import tvm

    from .processors import Processor
    from .runtime import tvm_device

    src = Path(directory)
    spec = json.loads((src / "configs.json").read_text())
    cpu, gpu = Processor.from_json(spec["cpu"]), Processor.from_json(spec["gpu"])
    configs = [layer_from_key(key) for key in spec["configs"]]
    # no resume: the exported modules hold kernels for exactly these configurations, by index
    return _measure_into(csv_path, cpu, gpu, configs, [tvm_device(cpu, 0), tvm_device(gpu, 1)],
                         lambda role, processor, todo: tvm.runtime.load_module(str(src / f"{role}.so")),
                         resume=False, quiet=quiet)
