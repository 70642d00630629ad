"""The Plan: where each layer runs and how its output is divided.

One Plan flows through the whole system: the partitioner (or the user) writes it, the
split pass reads it, the artifact stores it and the report prints it. Per layer it holds
the placement ("cpu", "gpu" or "split"), the requested GPU fraction `ratio`, and the
dimension the split divides (`dim`):

* "channel" (µLayer): the GPU computes output channels [0, gpu_channels), the CPU the rest;
  both read the whole input. Ratios are rounded to whole split units (groups for grouped
  convolutions) in multiples the processors' vector kernels like, so the effective ratio
  can differ a little from the requested one; the table shows both.
* "height" (CoDL, conv layers only): the GPU computes output rows [0, gpu_rows) with
  gpu_rows = ceil(rows * ratio), the CPU the rest, each reading only the input rows its
  rows need. Consecutive height-split layers form *operator chains* (`Plan.chains`): inside
  a chain each processor keeps its own rows, computing the extra rows (halo) the next
  layer needs, so data crosses only at the chain's ends. The build records each layer's
  chain and halo.
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
DIMS = ("channel", "height")
PLAN_FORMAT = "tvm-mulayer-plan/1"
UNASSIGNED_OMITTED = ("cpu_precision", "gpu_precision")  # left out of a plan's JSON until assigned


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
    # the data type each slice computes in — CPU "int8" or "fp32", GPU "fp16" or "fp32" — once
    # the build assigns it; None before (a plan from the planner leaves it to the compile's
    # --precision, and its JSON omits it: a saved precision is a request the compile obeys)
    cpu_precision: str | None = None
    gpu_precision: str | None = None
    input_range: list | None = None  # calibrated [lo, hi] of the input, for the int8 slice
    dim: str = "channel"  # what the split divides: "channel" or "height" (output rows)
    gpu_rows: int = 0  # height splits: the GPU computes output rows [0, gpu_rows), the CPU the rest
    chain: str = ""  # height splits: the operator chain the layer is in (resolved by the build)
    # height splits in a chain: the output rows each processor computes beyond its own
    # (GPU, CPU) for the chain's next layers — rows both compute
    halo_rows: list = field(default_factory=lambda: [0, 0])

    @property
    def rows(self) -> int:
        """Output rows (height) of a conv layer's output, 0 for others."""
        return int(self.output_shape[2]) if len(self.output_shape) == 4 else 0

    @property
    def effective_ratio(self) -> float:
        if self.dim == "height":
            return self.gpu_rows / self.rows if self.rows else 0.0
        return self.gpu_channels / self.channels if self.channels else 0.0

    def precision(self, processor: str) -> str:
        """The precision `processor`'s slice computes in; fp32 where none was assigned."""
        return (self.cpu_precision if processor == "cpu" else self.gpu_precision) or "fp32"

    def on(self, processor: str) -> bool:
        """Whether `processor` computes a part of the layer."""
        if processor == "gpu":
            return self.placement != "cpu"
        return self.placement != "gpu"

    def parts(self) -> list[tuple[int, int, str]]:
        """(first, end, processor) of each non-empty part along the split's dimension —
        channels, or output rows for a height split — GPU first."""
        size, gpu = (self.rows, self.gpu_rows) if self.dim == "height" else (self.channels, self.gpu_channels)
        out = []
        if gpu > 0:
            out.append((0, gpu, "gpu"))
        if gpu < size:
            out.append((gpu, size, "cpu"))
        return out


@dataclass
class Plan:
    layers: list[LayerPlan] = field(default_factory=list)
    description: str = ""
    # operator chains of height-split layers: "auto" (consecutive height-split layers with
    # equal ratios chain), False (none: each height split exchanges its output), or lists of
    # layer names (each list one chain)
    chains: str | bool | list = "auto"

    def __getitem__(self, name: str) -> LayerPlan:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, "description": self.description, "chains": self.chains,
                "layers": [{key: value for key, value in asdict(layer).items()
                            if value is not None or key not in UNASSIGNED_OMITTED} for layer in self.layers]}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @staticmethod
    def from_json(data: dict) -> "Plan":
        if data.get("format") != PLAN_FORMAT:
            raise MulayerError(f"not a resolved tvm-mulayer plan (format {data.get('format')!r}, "
                               f"expected {PLAN_FORMAT!r})")
        return Plan([LayerPlan(**layer) for layer in data["layers"]], data.get("description", ""),
                    data.get("chains", "auto"))


def _check_ratio(ratio, where: str) -> float:
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise MulayerError(f"{where}: ratio {ratio!r} is not a number; give the GPU's share in [0, 1]") from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise MulayerError(f"{where}: ratio {value} is outside [0, 1]; it is the GPU's share of the "
                           "output channels (0 = all on the CPU, 1 = all on the GPU)")
    return value


def round_rows(rows: int, ratio: float) -> int:
    """GPU rows of a height split at `ratio`: ceil(rows * ratio), a hair of float error forgiven
    (0.3 * 10 is 3, not 4)."""
    return math.ceil(round(rows * ratio, 9))


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


@dataclass(frozen=True)
class _Request:
    """One layer's split request: the GPU's share, the dimension, and exact channels or rows
    where a saved plan gives them."""

    ratio: float
    dim: str = "channel"
    gpu_channels: int | None = None
    gpu_rows: int | None = None


def _load_spec(split):
    """A split request as a Plan dict, a placement word or a number (a plan file read)."""
    if isinstance(split, Plan):
        return split.to_json()
    if isinstance(split, (str, Path)) and not _looks_like_number(split) and str(split) not in ("cpu", "gpu"):
        path = Path(split)
        if not path.exists():
            raise MulayerError(f"--split {split}: no such plan file; give a ratio in [0, 1], "
                               "'cpu', 'gpu' or a plan JSON file")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise MulayerError(f"plan file {path} is not valid JSON: {err}") from None
    return split


def _check_dim(dim, where: str) -> str:
    if dim not in DIMS:
        raise MulayerError(f"{where}: dim {dim!r} is not one of {', '.join(DIMS)} (what the split divides: output "
                           "channels, or output rows)")
    return dim


def _requested(layers: list[Layer], split, sources: dict) -> tuple[dict, str, object]:
    """Per-layer `_Request`s, the plan's description and its chains, from a global ratio, a
    placement word, or a per-layer spec (a saved Plan is one: it gives exact channels/rows)."""
    split = _load_spec(split)
    if isinstance(split, str) and split in ("cpu", "gpu"):
        ratio = 0.0 if split == "cpu" else 1.0
        return {layer.name: _Request(ratio) for layer in layers}, f"all on the {split}", "auto"
    if not isinstance(split, dict):
        ratio = _check_ratio(split, "split")
        return {layer.name: _Request(ratio) for layer in layers}, f"global ratio {ratio:g}", "auto"
    default_dim = _check_dim(split.get("default_dim", "channel"), "default_dim")
    entries = split.get("layers", {})
    if isinstance(entries, list):
        entries = {entry["name"]: entry for entry in entries}
    by_source = {src: name for name, src in sources.items() if src}
    known = {layer.name for layer in layers}
    requests = {}
    for key, entry in entries.items():
        name = key if key in known else by_source.get(key)
        if name is None:
            raise MulayerError(f"the plan names layer {key!r}, which this model does not have; "
                               f"its layers are {', '.join(sorted(known))}")
        if not isinstance(entry, dict):
            requests[name] = _Request(_check_ratio(entry, f"layer {key}"), default_dim)
            continue
        dim = _check_dim(entry.get("dim", default_dim), f"layer {key}")
        if "gpu_channels" in entry:  # a saved plan: exact parts
            requests[name] = _Request(_check_ratio(entry.get("ratio", 0.0), f"layer {key}"), dim,
                                      _exact_channels(entry["gpu_channels"], layers, name, key),
                                      entry.get("gpu_rows") if dim == "height" else None)
            continue
        placement = entry.get("placement")
        if placement in ("cpu", "gpu") and "ratio" not in entry:
            ratio = 0.0 if placement == "cpu" else 1.0
        else:
            ratio = entry.get("ratio")
        requests[name] = _Request(_check_ratio(ratio, f"layer {key}"), dim)
    missing = known - set(requests)
    if missing:
        if "default_ratio" not in split:
            raise MulayerError(f"the plan gives no ratio for {', '.join(sorted(missing))}; "
                               "list every layer or add \"default_ratio\"")
        default = _check_ratio(split["default_ratio"], "default_ratio")
        requests.update({name: _Request(default, default_dim) for name in missing})
    chains = _check_chains(split.get("chains", "auto"), known, by_source)
    return requests, split.get("description", "per-layer plan"), chains


def _check_chains(chains, known: set, by_source: dict):
    """The plan's chains: "auto", False, or lists of layer names (ONNX node names resolved)."""
    if chains == "auto" or chains is False:
        return chains
    if not isinstance(chains, list) or not all(isinstance(chain, list) for chain in chains):
        raise MulayerError(f"\"chains\" is {chains!r}: give \"auto\" (consecutive height-split layers with equal "
                           "ratios chain), false (no chains), or a list of chains, each a list of layer names")
    resolved = []
    for chain in chains:
        names = [name if name in known else by_source.get(name) for name in chain]
        unknown = [given for given, name in zip(chain, names) if name is None]
        if unknown:
            raise MulayerError(f"the plan's chains name {', '.join(map(repr, unknown))}, which this model does not "
                               f"have; its layers are {', '.join(sorted(known))}")
        resolved.append(names)
    return resolved


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
    requests, description, chains = _requested(layers, split, sources)
    plans = []
    for layer in layers:
        request = requests[layer.name]
        note, dim, gpu_rows = "", request.dim, 0
        if dim == "height" and not (layer.splittable and layer.op == "conv2d"):
            note, dim = f"{layer.op} splits by channel, not height", "channel"
        if request.gpu_channels is not None:
            gpu_channels = request.gpu_channels
        elif not layer.splittable:
            gpu_channels = layer.channels if request.ratio >= 0.5 else 0
            note = f"not split ({layer.reason}): whole on the {'gpu' if gpu_channels else 'cpu'}"
        elif dim == "height":
            gpu_channels = layer.channels
        else:
            gpu_channels = round_split(layer, request.ratio, channel_multiple)
        if dim == "height":
            rows = int(layer.output_shape[2])
            gpu_rows = request.gpu_rows if request.gpu_rows is not None else round_rows(rows, request.ratio)
            if not 0 <= gpu_rows <= rows:
                raise MulayerError(f"layer {layer.name}: gpu_rows {gpu_rows} is outside [0, {rows}]")
            placement = "cpu" if gpu_rows == 0 else "gpu" if gpu_rows == rows else "split"
            gpu_channels = layer.channels if placement != "cpu" else 0
        else:
            placement = "cpu" if gpu_channels == 0 else "gpu" if gpu_channels == layer.channels else "split"
        plans.append(LayerPlan(layer.name, layer.op, list(layer.input_shape), list(layer.output_shape),
                               layer.channels, placement, request.ratio, gpu_channels,
                               sources.get(layer.name, ""), note, dim=dim, gpu_rows=gpu_rows))
    return Plan(plans, description, chains)
