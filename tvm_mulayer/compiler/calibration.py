"""Calibration: the range of each layer's input, from sample inputs, for the int8 CPU slices.

The float32 model is compiled for the compiling machine's CPU with every layer's input
added to its outputs and run on the samples:

* ``minmax``: the exact range seen;
* ``percentile`` (default): the range holding all but the outer (100 - p)% of the values
  on each side (p = 99.99), from a 2048-bin histogram per tensor built in a second pass
  over the samples — a few outliers then no longer stretch the uint8 step for everyone.

Samples come from ``--calib``: an ``.npz`` (one array per model input, samples stacked on
the batch axis), a directory of ``.npy`` files (single-input models), a saved
``calibration.json`` or an artifact holding one (reused as it is), or — last resort, with
a warning — seeded random inputs. The result is a `Calibration` (JSON), saved in the
artifact.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from pathlib import Path

import numpy as np

from ..base.errors import MulayerError
from ..base.quantization import CALIBRATION_FILE, Calibration

METHODS = ("percentile", "minmax")
DEFAULT_PERCENTILE = 99.99
HISTOGRAM_BINS = 2048
RANDOM_SAMPLES = 8


def obtain_calibration(mod, info, calib, method: str, percentile: float, log=None) -> Calibration:
    """The saved calibration `calib` names, or a new one from its samples (random without)."""
    if calib is not None:
        path = Path(calib)
        if path.suffix == ".json" or (path.is_dir() and (path / CALIBRATION_FILE).is_file()):
            return Calibration.load(path)
    samples, source = calibration_samples(calib, info.inputs, warn=log)
    return _CALIBRATED.calibration(mod, info, samples, source, method, percentile)


class _Calibrated:
    """The calibrations this process computed, by float model, samples and method.

    Calibrating builds and runs the whole float32 model; compiling several plans of one
    model in a process (a ratio sweep, `scripts/gpu_host_run.py pack`, the tests) did that
    once per plan. The key hashes the model's structure and weights (TVM's structural hash
    covers constants' data) and the samples' bytes, so an entry is only ever reused for
    the same inputs; a copy is returned, so a caller's edits stay its own."""

    LIMIT = 32

    def __init__(self):
        self._lock = threading.Lock()
        self._found: dict = {}

    def calibration(self, mod, info, samples: list, source: str, method: str, percentile: float) -> Calibration:
        from tvm_ffi import structural_hash

        digest = hashlib.sha256()
        for sample in samples:
            for name in sorted(sample):
                digest.update(name.encode() + np.ascontiguousarray(sample[name]).tobytes())
        key = (structural_hash(mod), digest.hexdigest(), source, method, percentile)
        with self._lock:
            found = self._found.get(key)
        if found is None:
            found = calibrate(mod, info, samples, source, method, percentile)
            with self._lock:
                if len(self._found) >= self.LIMIT:
                    self._found.pop(next(iter(self._found)))
                self._found[key] = found
        return copy.deepcopy(found)


_CALIBRATED = _Calibrated()


def _samples_of(array, name: str, shape: tuple, where: str) -> list:
    """Split one calibration array into samples of the input's `shape`."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise MulayerError(f"{where}: calibration data for input {name!r} is {array.dtype}; give float arrays "
                           "preprocessed exactly as the model's inputs (float32)")
    if tuple(array.shape) == shape:
        stacked = array[None]
    elif shape and shape[0] == 1 and tuple(array.shape[1:]) == shape[1:]:
        stacked = array[:, None]  # samples stacked on the batch axis
    elif tuple(array.shape[1:]) == shape:
        stacked = array
    else:
        raise MulayerError(f"{where}: calibration array for input {name!r} has shape {list(array.shape)}; the "
                           f"input is {list(shape)} — give {list(shape)} or N samples as "
                           f"[N, {', '.join(map(str, shape[1:]))}]")
    finite = np.isfinite(stacked.reshape(len(stacked), -1)).all(axis=1)
    if not finite.all():
        raise MulayerError(f"{where}: calibration sample {int(np.argmin(finite))} of input {name!r} contains "
                           "NaN or Inf; remove it")
    return list(stacked.astype(np.float32))


def calibration_samples(spec, inputs: dict, warn=None) -> tuple[list, str]:
    """(list of input dicts, description) from `spec` (see the module docstring)."""
    from ..runtime.inputs import random_inputs

    if spec is None:
        if warn:
            warn(f"no calibration data given: calibrating the int8 slices on {RANDOM_SAMPLES} seeded random "
                 "inputs; accuracy on real data needs real samples (--calib FILE.npz or a directory of .npy)")
        return [random_inputs(inputs, seed) for seed in range(RANDOM_SAMPLES)], f"{RANDOM_SAMPLES} random inputs"
    path = Path(spec)
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise MulayerError(f"--calib {path}: the directory has no .npy files (nor a {CALIBRATION_FILE})")
        if len(inputs) != 1:
            raise MulayerError(f"--calib {path}: a directory of .npy suits single-input models; this one has inputs "
                               f"{sorted(inputs)} — give an .npz with one array per input")
        name, (shape, _) = next(iter(inputs.items()))
        samples = [s for f in files for s in _samples_of(_load_npy(f), name, shape, str(f))]
        return [{name: s} for s in samples], f"{len(samples)} samples from {path}"
    if not path.is_file():
        raise MulayerError(f"--calib {path}: no such file or directory")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as err:
        raise MulayerError(f"--calib {path}: not an .npz of arrays ({err})") from None
    if len(inputs) == 1 and len(arrays) == 1:
        arrays = {next(iter(inputs)): next(iter(arrays.values()))}
    if set(arrays) != set(inputs):
        raise MulayerError(f"--calib {path}: holds arrays {sorted(arrays)}; the model's inputs are {sorted(inputs)}")
    per_input = {name: _samples_of(arrays[name], name, shape, str(path)) for name, (shape, _) in inputs.items()}
    counts = {len(s) for s in per_input.values()}
    if len(counts) != 1:
        raise MulayerError(f"--calib {path}: the inputs have different sample counts {sorted(counts)}")
    samples = [{name: per_input[name][i] for name in inputs} for i in range(counts.pop())]
    return samples, f"{len(samples)} samples from {path}"


def _load_npy(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise MulayerError(f"--calib: cannot read {path} as .npy ({err})") from None


def _with_layer_inputs(mod):
    """`mod` whose main also returns each layer's input (one output per distinct input),
    and the layer names of each added output."""
    from tvm import relax

    from ..base.layers import layer_bindings

    mod = relax.transform.ToNonDataflow()(mod)
    func = mod["main"]
    taps: dict = {}
    for var, layer in layer_bindings(func).items():
        data = next(b.value.args[0] for block in func.body.blocks for b in block.bindings if b.var.same_as(var))
        taps.setdefault(data, []).append(layer.name)
    result = func.body.body
    if isinstance(result, relax.Tuple):
        results = list(result.fields)
    elif isinstance(result.ty, relax.TupleType):  # a variable bound to the output tuple
        results = [relax.TupleGetItem(result, i) for i in range(len(result.ty.fields))]
    else:
        results = [result]
    body = relax.BlockBuilder().normalize(relax.SeqExpr(func.body.blocks, relax.Tuple(results + list(taps))))
    new_func = relax.Function(func.params, body, None, func.is_pure, func.attrs)
    new_mod = mod.clone()
    new_mod["main"] = new_func
    return new_mod, len(results), list(taps.values())


def calibrate(mod, info, samples: list, source: str, method: str = "percentile",
              percentile: float = DEFAULT_PERCENTILE) -> Calibration:
    """Ranges of every layer's input over `samples`, running the float32 model on this machine."""
    from .lowering import build_executable
    from .frontend import ModelInfo
    from ..base.layers import find_layers
    from ..base.plan import make_plan
    from ..base.processors import cpu_processor, gpu_processor

    if method not in METHODS:
        raise MulayerError(f"calibration method {method!r}: choose one of {', '.join(METHODS)}")
    if not 50.0 < percentile <= 100.0:
        raise MulayerError(f"calibration percentile {percentile}: give a value in (50, 100], such as 99.99")
    tapped, skip, names = _with_layer_inputs(mod)
    tap_info = ModelInfo(info.inputs, [f"out{i}" for i in range(skip)] + [f"tap{i}" for i in range(len(names))])
    host = cpu_processor("host")
    plan = make_plan(find_layers(tapped["main"]), "cpu", 1)
    executable = build_executable(tapped, tap_info, plan, host, gpu_processor("emulated", host))

    def layer_inputs():
        for sample in samples:
            outputs = executable.run(sample)
            yield [outputs[f"tap{i}"] for i in range(len(names))]

    lows = highs = None
    for values in layer_inputs():
        mins = np.array([float(v.min()) for v in values])
        maxs = np.array([float(v.max()) for v in values])
        lows = mins if lows is None else np.minimum(lows, mins)
        highs = maxs if highs is None else np.maximum(highs, maxs)
    if method == "percentile" and percentile < 100.0:
        histograms = np.zeros((len(names), HISTOGRAM_BINS))
        for values in layer_inputs():
            for i, v in enumerate(values):
                histograms[i] += np.histogram(v, HISTOGRAM_BINS, (lows[i], max(highs[i], lows[i] + 1e-30)))[0]
        lows, highs = _percentile_ranges(histograms, lows, highs, percentile)
    ranges = {name: [float(lo), float(hi)] for group, lo, hi in zip(names, lows, highs) for name in group}
    return Calibration(method, len(samples), source, ranges, percentile if method == "percentile" else None)


def _percentile_ranges(histograms, lows, highs, percentile: float):
    """Per tensor, the bin edges enclosing all but (100 - p)% of the values on each side."""
    tail = (100.0 - percentile) / 100.0
    new_lows, new_highs = [], []
    for counts, lo, hi in zip(histograms, lows, highs):
        edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
        cumulative = np.cumsum(counts) / max(counts.sum(), 1.0)
        first = int(np.searchsorted(cumulative, tail, side="right"))
        last = int(np.searchsorted(cumulative, 1.0 - tail, side="left"))
        new_lows.append(edges[min(first, HISTOGRAM_BINS - 1)])
        new_highs.append(edges[min(last + 1, HISTOGRAM_BINS)])
    return np.array(new_lows), np.array(new_highs)
