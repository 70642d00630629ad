"""Where `--split auto` gets its latency predictor when none is given.

First a shipped predictor measured on exactly these processors (`tvm_mulayer/predictors/`).
Every other machine is measured on first use: a quick profile of the layer parts the
partitioner will ask about for this model — each splittable layer cut at quarters (halves
for a model with many layers) of its channels, in the slice precisions asked for, and each layer the split pass runs
whole, in float32 — on both processors, then a predictor trained on those rows. Rows and
predictor are cached per processor pair in the user's cache directory
($TVM_MULAYER_CACHE, else $XDG_CACHE_HOME/tvm-mulayer, else ~/.cache/tvm-mulayer), so a
later call for the same model measures nothing and one for another model measures only the
shapes it adds. Parts the quick profile skipped (the other eighths) are answered by the
regressor, trained on this model's own layers; the measured parts are answered exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

from ..base.layers import Layer
from ..base.records import FLOAT32, config_key, read_rows
from .predictor import Predictor

# Where the layers are cut: quarters (both parts of each: 1/4..4/4 of a layer), or halves
# where quarters give more than QUICK_MAX_PARTS distinct parts (GoogLeNet: 165 at quarters).
# Compiling dominates a first profile (~0.6 s of CPU per kernel, one kernel per part and
# processor): ~100 parts keep it within ~3 minutes on 2 cores.
QUICK_FRACTIONS = ((0.25, 0.5, 0.75, 1.0), (0.5, 1.0))
QUICK_MAX_PARTS = 100
PROFILE_NAME = "profile.csv"
PREDICTOR_NAME = "predictor.json"


def shipped_predictor(cpu, gpu) -> Predictor | None:
    """The shipped predictor measured on exactly these processors, if there is one."""
    for path in sorted((Path(__file__).parent.parent / "predictors").glob("*.zip")):
        predictor = Predictor.load(path)
        if (predictor.meta.get("cpu_target"), predictor.meta.get("gpu_target")) == (cpu.target, gpu.target):
            return predictor
    return None


def cache_root() -> Path:
    if os.environ.get("TVM_MULAYER_CACHE"):
        return Path(os.environ["TVM_MULAYER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tvm-mulayer"


def cache_dir(cpu, gpu) -> Path:
    """The cache directory of this processor pair: named after both, told apart by a digest
    of their exact targets (the thread count is the CPU target's `num-cores`)."""
    targets = json.dumps({"cpu": cpu.target, "gpu": gpu.target}, sort_keys=True)
    digest = hashlib.sha256(targets.encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cpu.name}+{gpu.name}")
    return cache_root() / f"{readable}-{digest}"


def quick_configs(layers: list[Layer], channel_multiple: int, precision: dict) -> list[tuple[dict, list[Layer]]]:
    """[(role -> precisions, layer parts)] to profile for `layers`: the splittable layers'
    parts at QUICK_FRACTIONS (the first with at most QUICK_MAX_PARTS parts, else the last)
    in `precision` (role -> precision), the layers the split pass runs whole in float32
    (`KernelTimes` predicts those in float32)."""
    from .profiler import split_parts

    splittable = [layer for layer in layers if layer.splittable]
    for fractions in QUICK_FRACTIONS:
        parts = split_parts(splittable, fractions, channel_multiple)
        if len(parts) <= QUICK_MAX_PARTS:
            break
    whole = {config_key(layer): layer for layer in layers if not layer.splittable}
    groups = [({role: (value,) for role, value in precision.items()}, parts)]
    if whole:
        groups.append(({"cpu": (FLOAT32,), "gpu": (FLOAT32,)}, list(whole.values())))
    return groups


def measured_predictor(layers: list[Layer], cpu, gpu, channel_multiple: int, precision: dict, log=None) -> Predictor:
    """A predictor for `cpu` + `gpu` that has measured `layers`' parts (see the module
    docstring): the cached one when the cache holds every part, else one trained after
    measuring the missing parts. `log` (default: stderr) is told what is measured or reused."""
    from .predictor import train
    from .profiler import profile

    say = log or (lambda message: print(message, file=sys.stderr))
    directory = cache_dir(cpu, gpu)
    csv_path, predictor_path = directory / PROFILE_NAME, directory / PREDICTOR_NAME
    done = {(row["role"], row["config"]) for row in read_rows(csv_path) if row["kind"] == "kernel"} \
        if csv_path.exists() else set()
    groups = quick_configs(layers, channel_multiple, precision)
    missing = [(precisions, [layer for layer in parts if any((role, config_key(layer, value)) not in done
                                                              for role, values in precisions.items()
                                                              for value in values)])
               for precisions, parts in groups]
    count = sum(len(parts) for _, parts in missing)
    if count == 0 and predictor_path.exists():
        say(f"--split auto: using the measurements of {cpu.label()} + {gpu.label()} cached in {directory}")
        return Predictor.load(predictor_path)
    if count:
        say(f"--split auto: no shipped latency predictor for CPU {cpu.label()} + GPU {gpu.label()}; measuring "
            f"{count} layer parts on both (once: cached in {directory}; `mulayer profile` and `mulayer train` "
            "measure more shapes, for --predictor)")
        directory.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        for precisions, parts in missing:
            if parts:
                profile(csv_path, cpu, gpu, parts, precisions=precisions)
        say(f"--split auto: measured in {time.perf_counter() - start:.0f} s")
    predictor = train(read_rows(csv_path), cpu, gpu)
    written = predictor_path.with_suffix(f".{os.getpid()}.tmp")
    predictor.save(written)
    os.replace(written, predictor_path)  # another process reading it sees a whole file
    return predictor
