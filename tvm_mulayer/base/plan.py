"""The Plan: where each layer runs and how its output channels are divided.

One Plan flows through the whole system: the partitioner (or the user) writes it, the
split pass reads it, the artifact stores it and the report prints it. Per layer it holds
the placement ("cpu", "gpu" or "split"), the requested GPU fraction `ratio`, and the
resolved `gpu_channels` — the GPU takes output channels [0, gpu_channels), the CPU the
rest. Ratios are rounded to whole split units (groups for grouped convolutions) in
multiples the processors' vector kernels like, so the effective ratio can differ a little
from the requested one; the table shows both.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MulayerError

if TYPE_CHECKING:  # layers needs tvm.relax; plans must load with the TVM runtime alone
    from .layers import Layer

PLACEMENTS = ("cpu", "gpu", "split")
PLAN_FORMAT = "tvm-mulayer-plan/1"


@dataclass
class LayerPlan:
    name: str
    op: str
    input_shape: list
    output_shape: list
    channels: int
    placement: str
    ratio: float  # requested GPU fraction
    gpu_channels: int  # resolved: the GPU computes output channels [0, gpu_channels)
    source: str = ""  # ONNX node name, when known
    note: str = ""
    cpu_precision: str = "fp32"  # "int8" or "fp32": the data type the CPU slice computes in
    gpu_precision: str = "fp32"  # "fp16" or "fp32"
    input_range: list | None = None  # calibrated [lo, hi] of the input, for the int8 slice

    @property
    def effective_ratio(self) -> float:
        return self.gpu_channels / self.channels if self.channels else 0.0

    def precision(self, processor: str) -> str:
        return self.cpu_precision if processor == "cpu" else self.gpu_precision

    def parts(self) -> list[tuple[int, int, str]]:
        """(first channel, end channel, processor) of each non-empty part, GPU first."""
        out = []
        if self.gpu_channels > 0:
            out.append((0, self.gpu_channels, "gpu"))
        if self.gpu_channels < self.channels:
            out.append((self.gpu_channels, self.channels, "cpu"))
        return out


@dataclass
class Plan:
    layers: list[LayerPlan] = field(default_factory=list)
    description: str = ""

    def __getitem__(self, name: str) -> LayerPlan:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, "description": self.description,
                "layers": [asdict(layer) for layer in self.layers]}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @staticmethod
    def from_json(data: dict) -> "Plan":
        if data.get("format") != PLAN_FORMAT:
            raise MulayerError(f"not a resolved tvm-mulayer plan (format {data.get('format')!r}, "
                               f"expected {PLAN_FORMAT!r})")
        return Plan([LayerPlan(**layer) for layer in data["layers"]], data.get("description", ""))


def _check_ratio(ratio, where: str) -> float:
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise MulayerError(f"{where}: ratio {ratio!r} is not a number; give the GPU's share in [0, 1]") from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise MulayerError(f"{where}: ratio {value} is outside [0, 1]; it is the GPU's share of the "
                           "output channels (0 = all on the CPU, 1 = all on the GPU)")
    return value


def round_split(layer: Layer, ratio: float, channel_multiple: int) -> int:
    """GPU channels for `ratio`: whole units, in multiples of the vector width when the
    layer is wide enough for both parts to keep full vectors."""
    units = layer.units
    step = max(1, channel_multiple // layer.channels_per_unit)
    if units < 2 * step:
        step = 1
    # The nearest multiple of `step`, or all units (the last part may be a partial vector).
    candidates = list(range(0, units + 1, step)) + [units]
    gpu_units = min(candidates, key=lambda k: (abs(k - ratio * units), k))
    return gpu_units * layer.channels_per_unit


def _requested_ratios(layers: list[Layer], split, sources: dict) -> tuple[dict, str]:
    """Per-layer (requested ratio, exact GPU channels or None) from a global ratio, a
    placement word, or a per-layer spec (a saved Plan is one: it gives exact channels)."""
    if isinstance(split, Plan):
        split = split.to_json()
    if isinstance(split, (str, Path)) and not _looks_like_number(split) and str(split) not in ("cpu", "gpu"):
        path = Path(split)
        if not path.exists():
            raise MulayerError(f"--split {split}: no such plan file; give a ratio in [0, 1], "
                               "'cpu', 'gpu' or a plan JSON file")
        try:
            split = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise MulayerError(f"plan file {path} is not valid JSON: {err}") from None
    if isinstance(split, str) and split in ("cpu", "gpu"):
        return {layer.name: (0.0 if split == "cpu" else 1.0, None) for layer in layers}, f"all on the {split}"
    if not isinstance(split, dict):
        ratio = _check_ratio(split, "split")
        return {layer.name: (ratio, None) for layer in layers}, f"global ratio {ratio:g}"
    entries = split.get("layers", {})
    if isinstance(entries, list):
        entries = {entry["name"]: entry for entry in entries}
    by_source = {src: name for name, src in sources.items() if src}
    known = {layer.name for layer in layers}
    ratios = {}
    for key, entry in entries.items():
        name = key if key in known else by_source.get(key)
        if name is None:
            raise MulayerError(f"the plan names layer {key!r}, which this model does not have; "
                               f"its layers are {', '.join(sorted(known))}")
        if isinstance(entry, dict) and "gpu_channels" in entry:
            channels = _exact_channels(entry["gpu_channels"], layers, name, key)
            ratios[name] = (_check_ratio(entry.get("ratio", 0.0), f"layer {key}"), channels)
            continue
        if isinstance(entry, dict):
            placement = entry.get("placement")
            if placement in ("cpu", "gpu") and "ratio" not in entry:
                ratio = 0.0 if placement == "cpu" else 1.0
            else:
                ratio = entry.get("ratio")
        else:
            ratio = entry
        ratios[name] = (_check_ratio(ratio, f"layer {key}"), None)
    missing = known - set(ratios)
    if missing:
        if "default_ratio" not in split:
            raise MulayerError(f"the plan gives no ratio for {', '.join(sorted(missing))}; "
                               "list every layer or add \"default_ratio\"")
        default = _check_ratio(split["default_ratio"], "default_ratio")
        ratios.update({name: (default, None) for name in missing})
    return ratios, split.get("description", "per-layer plan")


def _exact_channels(value, layers, name: str, key: str) -> int:
    layer = next(candidate for candidate in layers if candidate.name == name)
    if not isinstance(value, int) or not 0 <= value <= layer.channels or value % layer.channels_per_unit:
        raise MulayerError(f"layer {key}: gpu_channels {value!r} must be a whole number of groups "
                           f"({layer.channels_per_unit} channels each) in [0, {layer.channels}]")
    return value


def _looks_like_number(text) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


def make_plan(layers: list[Layer], split, channel_multiple: int, sources: dict | None = None) -> Plan:
    """Resolve a split request (ratio, 'cpu', 'gpu', per-layer dict/JSON file, or Plan)."""
    sources = sources or {}
    ratios, description = _requested_ratios(layers, split, sources)
    plans = []
    for layer in layers:
        ratio, exact = ratios[layer.name]
        note = ""
        if exact is not None:
            gpu_channels = exact
        elif layer.splittable:
            gpu_channels = round_split(layer, ratio, channel_multiple)
        else:
            gpu_channels = layer.channels if ratio >= 0.5 else 0
            note = f"not split ({layer.reason}): whole on the {'gpu' if gpu_channels else 'cpu'}"
        placement = "cpu" if gpu_channels == 0 else "gpu" if gpu_channels == layer.channels else "split"
        plans.append(LayerPlan(layer.name, layer.op, list(layer.input_shape), list(layer.output_shape),
                               layer.channels, placement, ratio, gpu_channels,
                               sources.get(layer.name, ""), note))
    return Plan(plans, description)
