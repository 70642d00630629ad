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

Each configuration also carries the *precision* its slice computes in (CPU: int8 or fp32,
GPU: fp16 or fp32; see `tvm_mulayer.quantization`). Its kernel is the one the split pass
emits for that slice — built by the split pass's own `slice_layer` from the slice's input
form (uint8, float16 or float32), its weights lifted into parameters and repacked at compile
time as `build.lower` does — so an int8 configuration times exactly uint8 x int8 -> int32 plus its
dequantize, and an fp16 one float16 inputs with float32 accumulation. Converting the input
into the slice's form (quantize to uint8, cast to float16) runs on whichever processor holds
the data, before any copy; it is timed separately (`convert` rows: bytes = the float32
input's bytes) so the partitioner can charge it where data changes form. A CSV row's
config holds the precision; rows without one (older profiles) are float32.

Each kernel is timed alone (`kernel` rows) and, for a sample, with the other processor busy
(`kernel-concurrent` rows): the CPU kernel while GPU kernels queued before it run, the GPU
kernel while another thread keeps the CPU's thread pool computing.
"""

from __future__ import annotations

import collections
import csv
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from ..base.errors import MulayerError
from ..base.layers import Layer
from ..base.quantization import CPU_PRECISIONS, GPU_PRECISIONS, parse_precision
from ..base.records import CSV_FIELDS, FLOAT32, KERNEL_KINDS, config_key, layer_from_key, read_rows

FRACTIONS = tuple(i / 8 for i in range(1, 9))  # the partitioner's ratios
COPY_SIZES = tuple(2**k for k in range(10, 25, 2))  # 1 KiB .. 16 MiB
ROLE_PRECISIONS = {"cpu": CPU_PRECISIONS, "gpu": GPU_PRECISIONS}
# what an input is converted to before a slice of each precision reads it
CONVERTED_DTYPE = {"int8": "uint8", "fp16": "float16"}
# The calibrated input range an int8 configuration is built with: a ReLU'd activation's
# (zero point 0). The range changes the scale, not the kernel's work. (Inputs with negative
# values, a network's first layer, are padded with the zero point by a separate kernel.)
PROFILE_INPUT_RANGE = (0.0, 4.0)


def profile_precisions(specs=("native", "fp32")) -> dict:
    """role -> the slice precisions to profile, from one or more precision specs in
    `--precision` syntax ("native", "fp32", "cpu=int8,gpu=fp32", ...): every precision any
    of them gives that processor, so the partitioner finds data for each mode asked of it."""
    if isinstance(specs, (str, dict)):
        specs = [specs]
    chosen = {"cpu": [], "gpu": []}
    for spec in specs:
        for role, precision in parse_precision(spec).items():
            if precision not in chosen[role]:
                chosen[role].append(precision)
    return {role: tuple(values) for role, values in chosen.items()}


def zoo_configs(models=None, fractions=FRACTIONS, image_size: int = 224, width: float = 1.0,
                channel_multiple: int = 1, small: bool = False, rows: bool = False) -> list[Layer]:
    """Every splittable layer of the zoo models, cut to both parts of each split at
    `fractions` (rounded as the partitioner rounds them, to `channel_multiple`; with `rows`,
    also each conv's row parts); with `small`, of the models' small variants (`zoo.small`)
    instead of `image_size`/`width`."""
    from ..base import zoo
    from ..compiler.frontend import import_onnx
    from ..base.layers import find_layers

    layers = []
    for name in models or zoo.NAMES:
        kwargs = zoo.small(name) if small else {"width": width, "image_size": image_size}
        mod, _ = import_onnx(zoo.build(name, **kwargs))
        layers += [layer for layer in find_layers(mod["main"]) if layer.splittable]
    return split_parts(layers, fractions, channel_multiple, rows)


def split_parts(layers: list[Layer], fractions=FRACTIONS, channel_multiple: int = 1, rows: bool = False) -> list[Layer]:
    """Both parts of each of the splittable `layers` split at each of `fractions` (rounded
    as the partitioner rounds them, to `channel_multiple`), and with `rows` both row parts
    of each conv split by output rows at them (what `--split auto` predicts for height
    splits), each distinct shape once."""
    from ..base.plan import round_rows, round_split

    seen, configs = set(), []
    for layer in layers:
        parts = []
        height = int(layer.output_shape[2]) if rows and layer.op == "conv2d" else 0
        for fraction in fractions:
            channels = round_split(layer, fraction, channel_multiple) or layer.channels_per_unit
            parts += [layer.part(part) for part in {channels, layer.channels - channels} - {0}]
            if height > 1:
                gpu_rows = round_rows(height, fraction)
                parts += [layer.row_part(part) for part in {gpu_rows, height - gpu_rows} - {0}]
        for config in parts:
            if config_key(config) not in seen:
                seen.add(config_key(config))
                configs.append(config)
    return configs


def sampled_configs(around: list[Layer], count: int, seed: int = 0, spread: float = 1.2,
                    known=()) -> list[Layer]:
    """`count` layers near those of `around`: each takes one of them and draws its input
    channels, output channels and size anew, each within a factor 2**`spread` of its own (any
    count, not only multiples of a vector), keeping its kernel, stride, padding and kind
    (dense, grouped, depthwise). None is one of `around` or of the config keys `known`."""
    import dataclasses

    rng = np.random.default_rng(seed)
    seen, configs = {config_key(layer) for layer in around} | set(known), []
    for _ in range(1000 * count):  # a small spread around small layers can run out of new shapes
        if len(configs) == count:
            break
        base = around[int(rng.integers(len(around)))]
        scale = lambda n: max(1, int(round(n * 2 ** rng.uniform(-spread, spread))))  # noqa: E731
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
    if len(configs) < count:
        raise MulayerError(f"only {len(configs)} new layer shapes of {count} lie within a factor 2**{spread} "
                           "of those given; sample fewer or widen the spread")
    return configs


def kernel_module(configs: list[Layer]):
    """One Relax function `k{i}(x, w, b)` = relu(layer(x, w) + b) per configuration (float32,
    weights as inputs): the layers' shapes as TVM infers them."""
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
                y = bb.emit(_layer_call(layer, x, w))
                out = bb.emit_output(op.nn.relu(op.add(y, b)))
            bb.emit_func_output(out)
    return bb.get()


def _layer_call(layer: Layer, x, w):
    from tvm.relax import op

    if layer.op == "conv2d":
        return op.nn.conv2d(x, w, strides=layer.strides, padding=layer.padding, dilation=layer.dilation,
                            groups=layer.groups)
    return op.matmul(x, w)


def input_form(precision: str):
    """The `Form` of a profiled slice's input in `precision` (int8: over the profile's range)."""
    from ..base.quantization import input_form as slice_input_form

    return slice_input_form(precision, PROFILE_INPUT_RANGE)


def slice_function(bb, name: str, layer: Layer, precision: str, weight=None, bias=None, target=None):
    """Add `name(x)` = relu(slice) to `bb`: the layer slice the split pass emits for a layer
    configuration in `precision` on `target` — its `slice_layer` on an input already in the
    slice's form (`slice_input_shape`), constant weights, the folded bias and the dequantize
    included. Weights and bias are constants, 0.5 unless given (a kernel's speed does not
    depend on their values; no denormals)."""
    from tvm import relax
    from tvm.relax import op

    from ..passes.split_channels import slice_layer

    form = input_form(precision)
    x = relax.Var("x", relax.TensorType(slice_input_shape(layer, precision, target), form.dtype))
    # the float32 call the slice replaces: the split pass reads its attributes (strides,
    # layouts, out_dtype) and type from it
    original = bb.normalize(_layer_call(layer, relax.Var("x32", relax.TensorType(layer.input_shape, "float32")),
                                        relax.Var("w32", relax.TensorType(layer.weight_shape, "float32"))))
    weight = np.full(layer.weight_shape, 0.5, "float32") if weight is None else np.asarray(weight, "float32")
    bias = np.full(layer.channels, 0.5, "float32") if bias is None else np.asarray(bias, "float32")
    padding = list(layer.padding) if layer.op == "conv2d" else None
    with bb.function(name, [x]):
        with bb.dataflow():
            y = bb.emit(slice_layer(original, layer, layer.channels, x, weight, bias, precision, form, padding))
            out = bb.emit_output(op.nn.relu(y))
        bb.emit_func_output(out)


CONVERT_SIZES = tuple(2**k for k in range(10, 25, 2))  # float32 bytes converted: 1 KiB .. 16 MiB


def conversion_function(bb, name: str, dtype: str, nbytes: int):
    """Add `name(x)`: the split pass's conversion of `nbytes` of float32 into `dtype` (the
    quantize to uint8 with the profile's range, or the cast to float16)."""
    from tvm import relax

    from ..passes.split_channels import convert_to_form

    precision = {v: k for k, v in CONVERTED_DTYPE.items()}[dtype]
    x = relax.Var("x", relax.TensorType((1, nbytes // 4), "float32"))
    with bb.function(name, [x]):
        with bb.dataflow():
            out = bb.emit_output(convert_to_form(x, input_form(precision)))
        bb.emit_func_output(out)


def convert_name(dtype: str, nbytes: int) -> str:
    return f"convert_{dtype}_{nbytes}"


def slice_input_shape(layer: Layer, precision: str, target) -> tuple:
    """The shape of the input a slice kernel reads on `target` (`slice_input_channels`: an
    int8 conv on a dot-product CPU reads its channels padded, the pad being part of the
    input's conversion)."""
    from ..schedules.cpu.dot_intrin import slice_input_channels

    shape = list(layer.input_shape)
    shape[1] = slice_input_channels(layer, precision, target)
    return tuple(shape)


def slice_module(items: list[tuple[Layer, str]], conversions=(), values=None, target=None):
    """A Relax module with `k{n}` = the slice kernel of items[n] (layer, precision) on
    `target` and a `convert_{dtype}_{bytes}` function per (dtype, bytes) of `conversions`;
    `values`, when given, holds each item's (weight, bias) arrays."""
    from tvm import relax

    bb = relax.BlockBuilder()
    for index, (layer, precision) in enumerate(items):
        slice_function(bb, f"k{index}", layer, precision, *(values[index] if values else (None, None)), target)
    for dtype, nbytes in conversions:
        conversion_function(bb, convert_name(dtype, nbytes), dtype, nbytes)
    return bb.get()


def build_kernels(items: list[tuple[Layer, str]], processor, host, conversions=(), values=None) -> tuple:
    """Compile the slice kernels of `items` (layer, precision) and the `conversions` for one
    processor (host = the CPU processor) as `build.lower` compiles a model's: weights lifted
    into parameters, legalize, fuse, the project's schedules for prepacked weights, and the
    weight repacks run here, at compile time. Returns (module, weights, inputs):
    `k{n}(x, *weights)` takes an input x of inputs[f"k{n}"] (shape, dtype) and the
    weights[f"k{n}"] arrays (repacked, in parameter order); the module does not hold them,
    so it stays small to upload or export."""
    import tvm
    from tvm import relax

    from ..compiler.lowering import vm_pipeline
    from ..passes import LiftWeights
    from ..passes import PrepackWeights
    from ..schedules import ScheduleForTargets

    target = processor.tvm_target(host)
    mod = slice_module(items, conversions, values, target)
    names = [f"k{n}" for n in range(len(items))]
    with target:
        mod = tvm.transform.Sequential([
            *[LiftWeights(name) for name in names],
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FuseOps(), relax.transform.FuseTIR(),
            _bind_target(target),
            ScheduleForTargets(prepacked_weights=True),
            relax.transform.SplitLayoutRewritePreproc(),
            *[PrepackWeights(name) for name in names],
        ])(mod)
    weights, inputs = {}, {}
    for name in names:
        func = mod[name]
        inputs[name] = ([int(d) for d in func.params[0].ty.shape.values], str(func.params[0].ty.dtype))
        weights[name] = [w.numpy() for w in func.attrs["params"]] if "params" in func.attrs else []
        if "params" in func.attrs:
            mod.update_func(mod.get_global_var(name), func.without_attr("params"))
    return tvm.compile(mod, target=target, relax_pipeline=vm_pipeline()), weights, inputs


def parameter_specs(weights: dict, inputs: dict) -> dict:
    """name -> [(shape, dtype)] of each kernel's parameters: its input, then its weights
    (`build_kernels`' results)."""
    return {name: [inputs[name]] + [(list(w.shape), str(w.dtype)) for w in arrays] for name, arrays in weights.items()}


def _bind_target(target):
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="BindKernelTarget")
    def bind(mod, _ctx):
        for gvar, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc) and "target" not in func.attrs:
                mod.update_func(gvar, func.with_attr("target", target))
        return mod

    return bind


def _kernel_args(specs, device) -> list:
    """Arguments for a slice kernel with parameters `specs` (`parameter_specs`: its input,
    then its weights), on `device`. Constant values: a kernel's speed does not depend on them
    (no denormals), and drawing VGG's 100M random weights would take longer than timing them."""
    import tvm

    (shape, dtype), weights = specs[0], specs[1:]
    arrays = [np.full(shape, 1 if dtype == "uint8" else 0.5, dtype)]
    arrays += [np.full(shape, 1, dtype) for shape, dtype in weights]
    return [tvm.runtime.tensor(array, device) for array in arrays]


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


def measure_kernels(vm, names: list[str], device, *, specs: dict, min_repeat_ms: int = 5, repeat: int = 7,
                    load=None, progress=None) -> list[float]:
    """Seconds of the kernels `names` of `vm` (with parameters `specs` by name,
    `parameter_specs`) on `device`, inputs already there: the fastest of
    `repeat` timings, since other load on the machine only ever adds time. `load()`, when
    given, is entered around each timing (`_QueuedLoad`)."""
    import contextlib

    times = []
    for index, name in enumerate(names):
        args = _kernel_args(specs[name], device)
        timer = vm.time_evaluator(name, device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
        with load() if load else contextlib.nullcontext():
            times.append(float(np.min(timer(*args).results)))
        if progress:
            progress(index + 1, len(names))
    return times


def measure_conversions(vm, dtype: str, device, sizes=CONVERT_SIZES, repeat: int = 7,
                        min_repeat_ms: int = 2) -> list[tuple]:
    """(float32 bytes, seconds) of converting that many bytes into `dtype` on `device`."""
    import tvm

    rows = []
    for nbytes in sizes:
        x = tvm.runtime.tensor(np.full((1, nbytes // 4), 0.5, "float32"), device)
        timer = vm.time_evaluator(convert_name(dtype, nbytes), device, number=1, repeat=repeat,
                                  min_repeat_ms=min_repeat_ms)
        rows.append((nbytes, float(np.min(timer(x).results))))
    return rows


def measure_copies(device, sizes=COPY_SIZES, repeat: int = 20, host_device=None, copy=None) -> list[tuple]:
    """(bytes, seconds host->device, seconds device->host) for each size; `copy(src, dst)`
    copies between the two tensors (default: src.copyto(dst))."""
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
                copy(src, dst) if copy else src.copyto(dst)
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


def _kernel_row(kind, role, processor, layer, precision, seconds, stamp, threads) -> dict:
    import tvm

    return {"kind": kind, "role": role, "processor": processor.label(), "config": config_key(layer, precision),
            "bytes": "", "seconds": f"{seconds:.9g}", "device": _device_description(processor, threads),
            "tvm": tvm.__version__, "recorded": stamp}


def _copy_rows(gpu, stamp, devices, copy=None) -> list:
    import tvm

    rows = []
    for size, h2d, d2h in measure_copies(devices[1], host_device=devices[0], copy=copy):
        for direction, seconds in (("h2d", h2d), ("d2h", d2h)):
            rows.append({"kind": "copy", "role": "gpu", "processor": gpu.label(), "config": direction, "bytes": size,
                         "seconds": f"{seconds:.9g}", "device": _device_description(gpu), "tvm": tvm.__version__,
                         "recorded": stamp})
    return rows


def _open_csv(path: Path):
    if path.suffix == ".gz":
        raise MulayerError(f"cannot append measurements to the compressed profile {path}; profile into a .csv "
                           "(gzip it when done: train and the scripts read .csv.gz)")
    new_file = not path.exists()
    handle = open(path, "a", newline="")
    writer = csv.DictWriter(handle, CSV_FIELDS)
    if new_file:
        writer.writeheader()
    return handle, writer


def conversions_for(precisions: dict) -> tuple:
    """The dtypes inputs are converted to for slices of `precisions` (role -> precisions):
    each conversion runs on whichever processor holds the data, so both measure each."""
    return tuple(dict.fromkeys(CONVERTED_DTYPE[p] for values in precisions.values() for p in values
                               if p in CONVERTED_DTYPE))


def _check_precisions(precisions: dict) -> dict:
    for role, values in precisions.items():
        bad = [p for p in values if p not in ROLE_PRECISIONS[role]]
        if bad or not values:
            raise MulayerError(f"{role} slices compute in {' or '.join(ROLE_PRECISIONS[role])}, not {bad or 'nothing'}")
    return precisions


def _measure_into(csv_path, cpu, gpu, configs: list[Layer], devices: list, kernels, *, threads: int | None,
                  precisions: dict | None = None, concurrent_share: float = 0.2, resume: bool = True,
                  quiet: bool = False, batch: int | None = None, passes: int = 1, copy=None) -> Path:
    """Time `configs` in each of `precisions` (role -> slice precisions; default float32) on
    devices [cpu, gpu] (every one alone; a `concurrent_share` of them also with the other
    processor busy, where the GPU is a real, asynchronous one), the input conversions those
    precisions need, on both, and copies between them, appending rows to `csv_path`.
    `kernels(role, processor, items, conversions)` gives a module holding the slice kernels
    of items [(config index, precision)] and the conversion kernels [(dtype, bytes)], the
    kernels' names by item and their parameters' specs by name (`parameter_specs`).
    Kernels are compiled and timed `batch` configurations at a time
    (all at once when None), rows written after each, so an interrupted run keeps what it
    measured; with `resume`, measurements the CSV already holds are skipped. Each kernel is
    timed in `passes` separate sweeps over the compiled batch (a row each): a burst of other
    load then slows one of its timings, not all, and the predictor takes the fastest.
    `threads`: the CPU thread pool's size, recorded with each row (None where unknown); `copy`: see
    `measure_copies`."""
    import contextlib

    import tvm.runtime.vm

    precisions = _check_precisions(precisions or {"cpu": (FLOAT32,), "gpu": (FLOAT32,)})
    path = Path(csv_path)
    if passes < 1:
        raise MulayerError(f"passes must be at least 1, not {passes}")
    done = collections.Counter((row["kind"], row["role"], row["config"]) for row in read_rows(path)) \
        if resume and path.exists() else collections.Counter()
    step = max(1, round(1 / concurrent_share)) if concurrent_share and not gpu.emulated else 0
    sampled = set(range(0, len(configs), step)) if step else set()
    roles = (("cpu", cpu, devices[0]), ("gpu", gpu, devices[1]))
    # role -> {((config index, precision), concurrent): timings the CSV already holds}, for
    # each kernel with fewer than `passes`
    todo = {role: {((i, precision), concurrent): count for precision in precisions[role]
                   for concurrent in (False, True) for i in range(len(configs)) if not concurrent or i in sampled
                   for count in [done[KERNEL_KINDS[concurrent], role, config_key(configs[i], precision)]]
                   if count < passes}
            for role, _, _ in roles}
    converting = {role: [dtype for dtype in conversions_for(precisions) if ("convert", role, dtype) not in done]
                  for role, _, _ in roles}
    handle, writer = _open_csv(path)
    with handle:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        loads = {}
        if sampled and any(concurrent for role in todo for _, concurrent in todo[role]):
            # the other processor is kept busy with its largest kernel (in its first precision)
            largest = max(range(len(configs)), key=lambda i: configs[i].macs)
            for role, processor, device in roles:
                item = (largest, precisions[role][0])
                module, names, specs = kernels(role, processor, [item], [])
                vm = tvm.runtime.vm.VirtualMachine(module, device)
                loads[role] = (vm[names[item]], _kernel_args(specs[names[item]], device),
                               device)
            # enough GPU launches to outlast a timing (repeat x min_repeat_ms and more)
            gpu_function, gpu_args, gpu_device = loads["gpu"]
            start = time.perf_counter()
            for _ in range(10):
                gpu_function(*gpu_args)
            gpu_device.sync()
            launches = min(1000, int(0.08 / max((time.perf_counter() - start) / 10, 1e-6)) + 1)
        for role, processor, device in roles:
            if converting[role]:
                module, _, _ = kernels(role, processor, [], [(d, size) for d in converting[role]
                                                             for size in CONVERT_SIZES])
                vm = tvm.runtime.vm.VirtualMachine(module, device)
                for dtype in converting[role]:
                    writer.writerows({"kind": "convert", "role": role, "processor": processor.label(), "config": dtype,
                                      "bytes": nbytes, "seconds": f"{seconds:.9g}",
                                      "device": _device_description(processor, threads),
                                      "tvm": tvm.__version__, "recorded": stamp}
                                     for nbytes, seconds in measure_conversions(vm, dtype, device))
                handle.flush()
            pending = sorted({item for item, _ in todo[role]}, key=lambda item: (item[1], item[0]))
            size = batch or max(len(pending), 1)
            for first in range(0, len(pending), size):
                chunk = pending[first:first + size]
                module, names, specs = kernels(role, processor, chunk, [])
                vm = tvm.runtime.vm.VirtualMachine(module, device)
                compiled = set(chunk)
                for sweep, concurrent in itertools.product(range(passes), (False, True)):
                    items = [item for (item, c), count in todo[role].items()
                             if c == concurrent and item in compiled and count <= sweep]
                    if not items:
                        continue
                    # a CPU kernel is timed with GPU kernels queued before it; a GPU kernel while
                    # another thread keeps the CPU busy
                    each = (lambda: _QueuedLoad(*loads["gpu"], launches)) if concurrent and role == "cpu" else None
                    busy = (lambda: _BusyLoop(*loads["cpu"])) if concurrent and role == "gpu" \
                        else contextlib.nullcontext
                    label = f"{role} kernels{' (other processor busy)' if concurrent else ''} " \
                            f"[{first + len(chunk)}/{len(pending)} compiled]" + \
                            (f" pass {sweep + 1}/{passes}" if passes > 1 else "")
                    with busy():
                        times = measure_kernels(vm, [names[item] for item in items], device, specs=specs, load=each,
                                                progress=None if quiet else progress_bar(label))
                    writer.writerows(_kernel_row(KERNEL_KINDS[concurrent], role, processor, configs[i], precision,
                                                 t, stamp, threads) for (i, precision), t in zip(items, times))
                    handle.flush()
        if ("copy", "gpu", "h2d") not in done:
            writer.writerows(_copy_rows(gpu, stamp, devices, copy))
    return path

def _built(cpu, configs: list[Layer], processor, items: list[tuple[int, str]], conversions=()):
    """(module, names by item, parameter specs by name) of the slice kernels of items [(config
    index, precision)] and the conversion kernels, compiled here."""
    module, weights, inputs = build_kernels([(configs[i], precision) for i, precision in items], processor, cpu,
                                            conversions)
    return module, {item: f"k{n}" for n, item in enumerate(items)}, parameter_specs(weights, inputs)


def profile(csv_path, cpu, gpu, configs: list[Layer], *, precisions: dict | None = None, quiet: bool = False,
            batch: int = 24, passes: int = 1) -> Path:
    """Measure `configs` in `precisions` (role -> slice precisions, see `profile_precisions`;
    default float32) on both processors of this machine, the conversions they need and
    copies between them; append to `csv_path`, skipping what it already holds (so an
    interrupted run resumes). Kernels are compiled and timed `batch` at a time, each in
    `passes` sweeps over its batch."""
    from ..runtime.devices import cpu_threads, refuse_float16, tvm_device

    threads = cpu_threads(cpu, gpu)
    devices = [tvm_device(cpu, 0), tvm_device(gpu, 1)]
    if gpu.device_type == "opencl" and "fp16" in (precisions or {}).get("gpu", ()):  # default: float32
        refuse_float16(devices[1], "the GPU kernels to profile compute", "profile")
    return _measure_into(csv_path, cpu, gpu, configs, devices,
                         lambda role, processor, items, conversions: _built(cpu, configs, processor, items,
                                                                            conversions),
                         threads=threads, precisions=precisions, quiet=quiet, batch=batch, passes=passes)


def profile_remote(session, csv_path, cpu, gpu, configs: list[Layer], *, precisions: dict | None = None,
                   quiet: bool = False, passes: int = 1) -> Path:
    """Like `profile`, on the devices of a TVM RPC session (`tvm_mulayer.deploy.connect`):
    kernels are compiled here, uploaded, and timed there."""
    import tempfile

    from ..runtime.deploy import remote_devices

    with tempfile.TemporaryDirectory() as tmp:
        uploads = []

        def upload(role, processor, items, conversions):
            local = Path(tmp) / f"{role}-{len(uploads)}.so"
            uploads.append(local)
            module, names, specs = _built(cpu, configs, processor, items, conversions)
            module.export_library(str(local))
            session.upload(str(local), local.name)
            return session.load_module(local.name), names, specs

        # the remote's thread pool is its own: its size is not known here. The copies run
        # there: TVM's client refuses a copy between remote devices of two types (cpu, opencl).
        return _measure_into(csv_path, cpu, gpu, configs, remote_devices(session, cpu, gpu), upload, threads=None,
                             precisions=precisions, quiet=quiet, passes=passes,
                             copy=session.get_function("runtime.TVMTensorCopyFromTo"))


def _exported_items(configs: list[Layer], precisions: dict, role: str) -> list[tuple[int, str]]:
    return [(i, precision) for precision in precisions[role] for i in range(len(configs))]


def export_kernels(directory, cpu, gpu, configs: list[Layer], precisions: dict | None = None) -> dict:
    """Compile the kernels for both processors into `directory` (cpu.so, gpu.so and
    configs.json) — every configuration in each of `precisions` (default float32) and the
    conversions those need — to be measured where the processors are with
    `measure_exported`. Returns the compiled modules by role."""
    precisions = _check_precisions(precisions or {"cpu": (FLOAT32,), "gpu": (FLOAT32,)})
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    modules, specs = {}, {}
    conversions = [(dtype, size) for dtype in conversions_for(precisions) for size in CONVERT_SIZES]
    for role, processor in (("cpu", cpu), ("gpu", gpu)):
        items = _exported_items(configs, precisions, role)
        modules[role], weights, inputs = build_kernels([(configs[i], p) for i, p in items], processor, cpu,
                                                       conversions)
        specs[role] = parameter_specs(weights, inputs)
        modules[role].export_library(str(out / f"{role}.so"))
    (out / "configs.json").write_text(json.dumps({"cpu": cpu.to_json(), "gpu": gpu.to_json(),
                                                  "configs": [config_key(c) for c in configs],
                                                  "precisions": {r: list(v) for r, v in precisions.items()},
                                                  "parameters": specs}))
    return modules


def measure_exported(directory, csv_path, *, quiet: bool = False, passes: int = 1) -> Path:
    """Measure kernels exported by `export_kernels` (needs only the TVM runtime), each in
    `passes` sweeps over all of them; appends to `csv_path`, skipping what it already holds."""
    import tvm

    from ..base.processors import Processor
    from ..runtime.devices import cpu_threads, tvm_device

    src = Path(directory)
    spec = json.loads((src / "configs.json").read_text())
    if "parameters" not in spec:  # older exports listed only the weights, not the inputs' shapes
        raise MulayerError(f"{src} was exported by an older tvm-mulayer; export the kernels again with this one")
    cpu, gpu = Processor.from_json(spec["cpu"]), Processor.from_json(spec["gpu"])
    configs = [layer_from_key(key) for key in spec["configs"]]
    precisions = {role: tuple(values) for role, values in spec.get("precisions", {"cpu": [FLOAT32],
                                                                                  "gpu": [FLOAT32]}).items()}
    threads = cpu_threads(cpu, gpu)
    modules = {}

    def exported(role, processor, items, conversions):
        # the exported module holds every item's kernel, named by its position in the export
        if role not in modules:
            modules[role] = tvm.runtime.load_module(str(src / f"{role}.so"))
        position = {item: n for n, item in enumerate(_exported_items(configs, precisions, role))}
        return modules[role], {item: f"k{position[item]}" for item in items}, spec["parameters"][role]

    return _measure_into(csv_path, cpu, gpu, configs, [tvm_device(cpu, 0), tvm_device(gpu, 1)], exported,
                         threads=threads, precisions=precisions, quiet=quiet, passes=passes)
