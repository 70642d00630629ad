"""Processor-friendly precision: which data type each slice of a layer computes in.

µLayer's second idea: the CPU computes its slices in 8-bit integers (uint8 activations,
asymmetric per tensor; int8 weights, symmetric per output channel; int32 accumulation and
bias), the GPU in float16 (float16 weights and inputs, float32 accumulation). A precision
*mode* names the pair: "native" (int8 CPU + fp16 GPU), "fp32" (both float32, for
debugging), or per-processor overrides such as "native,gpu=fp32" or "cpu=int8,gpu=fp32".

This module holds the arithmetic (quantization parameters, weight quantization) shared by
the split pass and the tests, and `assign_precision`, which writes each layer's slice
precisions into the Plan — with a note wherever a layer keeps float32 on the CPU (no
calibrated range, a degenerate range, weights that int8 cannot represent well, a layer
the split pass runs whole).

Why float32 accumulation on the GPU: a float16 accumulator has an 11-bit significand, so
a sum of n products drifts by ~sqrt(n)·2^-11 relative; the zoo's reductions run to
n = 4608 (VGG's 3×3×512) and 9216 (AlexNet's FC), where that reaches ~3% — far outside
the 1e-3 float16 storage gives (measured in tests/test_quantization.py). Tensor cores
take float16 inputs with float32 accumulation at full rate, so nothing is lost.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import MulayerError

CPU_PRECISIONS = ("int8", "fp32")
GPU_PRECISIONS = ("fp16", "fp32")
MODES = {"native": {"cpu": "int8", "gpu": "fp16"}, "fp32": {"cpu": "fp32", "gpu": "fp32"}}
DEFAULT_MODE = "native"

# Per-output-channel symmetric int8 leaves ~0.5-1.5% relative RMS error on conv weights
# (a step of peak/127 against weights of a few standard deviations); above this some
# channel has an outlier that squeezes its other weights into a few levels, and the layer
# stays float32 on the CPU.
MAX_WEIGHT_ERROR = 0.03
# A CPU int8 slice of a layer whose outputs sum fewer products than this (a 1x1 conv reading
# 1-3 channels) stays float32: int8's gain is the dot products' packed multiply-adds, which
# need 4 products, while its rounding (1/255 of the input's range) is not averaged down, so
# chains of such layers (the fuzzer's 1-channel Fire modules) drifted 5% from float32.
MIN_INT8_PRODUCTS = 4
UINT8_MAX = 255
INT8_MAX = 127
CALIBRATION_FORMAT = "tvm-mulayer-calibration/1"
CALIBRATION_FILE = "calibration.json"


def parse_precision(text: str | dict | None) -> dict:
    """{"cpu": ..., "gpu": ...} from a mode ("native", "fp32"), per-processor overrides
    ("cpu=int8,gpu=fp32"), or both ("native,gpu=fp32")."""
    if isinstance(text, dict):
        text = ",".join(f"{key}={value}" for key, value in text.items())
    text = DEFAULT_MODE if text is None else str(text)
    chosen = dict(MODES[DEFAULT_MODE])
    for item in (part.strip() for part in text.split(",") if part.strip()):
        processor, sep, value = item.partition("=")
        if not sep:
            if item not in MODES:
                raise MulayerError(f"precision {item!r}: give 'native' (int8 CPU + fp16 GPU), 'fp32', "
                                   "and/or per-processor overrides such as cpu=int8,gpu=fp32")
            chosen = dict(MODES[item])
            continue
        allowed = {"cpu": CPU_PRECISIONS, "gpu": GPU_PRECISIONS}.get(processor)
        if allowed is None or value not in allowed:
            raise MulayerError(f"precision {item!r}: the CPU computes in {' or '.join(CPU_PRECISIONS)}, "
                               f"the GPU in {' or '.join(GPU_PRECISIONS)} (write cpu=int8,gpu=fp16)")
        chosen[processor] = value
    return chosen


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of asymmetric uint8 for values in [lo, hi]. The range is widened
    to include 0 so that 0 (ReLU's floor, zero padding) is represented exactly."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / UINT8_MAX
    if not scale > 0 or not math.isfinite(scale):
        raise MulayerError(f"activation range [{lo}, {hi}] is degenerate; it cannot be quantized")
    zero_point = int(np.clip(round(-lo / scale), 0, UINT8_MAX))
    return scale, zero_point


@dataclass(frozen=True)
class Form:
    """How a slice reads its input: float32 as computed, float16, or uint8 with a scale
    and zero point (x ≈ (q - zero_point) · scale)."""

    dtype: str = "float32"
    scale: float = 0.0
    zero_point: int = 0


FLOAT32_FORM = Form()


def input_form(precision: str, input_range) -> Form:
    """The form a slice computing in `precision` reads its input in (int8: uint8 over
    `input_range`). Here, not in the split pass, because the profiler's runtime-only half
    needs it where Relax is not installed."""
    if precision == "int8":
        return Form("uint8", *activation_qparams(*input_range))
    return Form("float16") if precision == "fp16" else FLOAT32_FORM


def quantize_weights(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scale per output channel along `axis`), symmetric: w ≈ q · scale.
    An all-zero channel gets scale 1 (its weights are exactly 0 either way)."""
    w = np.asarray(weight, dtype=np.float64)
    reduce_axes = tuple(a for a in range(w.ndim) if a != axis % w.ndim)
    peak = np.max(np.abs(w), axis=reduce_axes, keepdims=True)
    scale = np.where(peak > 0, peak / INT8_MAX, 1.0)
    q = np.clip(np.round(w / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale.reshape(-1).astype(np.float32)


def weight_error(weight: np.ndarray, axis: int) -> float:
    """Relative RMS error of the int8 weights, ||w - q·s|| / ||w||, with each channel's
    largest magnitude left out of ||w||: that one is exact by construction, and an
    outlier would otherwise hide the damage it does to the rest of its channel."""
    q, scale = quantize_weights(weight, axis)
    w = np.moveaxis(np.asarray(weight, dtype=np.float64), axis, 0).reshape(q.shape[axis], -1)
    approx = np.moveaxis(q, axis, 0).reshape(w.shape) * scale.astype(np.float64)[:, None]
    rest = np.abs(w)
    rest[np.arange(len(w)), np.argmax(rest, axis=1)] = 0.0
    norm = float(np.linalg.norm(rest))
    return float(np.linalg.norm(w - approx) / norm) if norm else 0.0


def weight_axis(op: str) -> int:
    """The output-channel axis of a layer's weight: OIHW for conv2d, [K, O] for dense."""
    return 1 if op == "dense" else 0


def requested_precisions(split) -> dict:
    """Per-layer precision overrides a per-layer plan (dict or its JSON) carries:
    layer key -> {"cpu": ..., "gpu": ...}."""
    if not isinstance(split, dict):
        return {}
    entries = split.get("layers", {})
    if isinstance(entries, list):
        entries = {entry["name"]: entry for entry in entries}
    found = {}
    for key, entry in entries.items():
        if isinstance(entry, dict):
            chosen = {p: entry[f"{p}_precision"] for p in ("cpu", "gpu") if entry.get(f"{p}_precision") is not None}
            if chosen:
                parse_precision(chosen)  # validates
                found[key] = chosen
    return found


def assign_precision(plan, layers: dict, weights: dict, mode: dict, ranges: dict | None,
                     overrides: dict | None = None) -> None:
    """Write each LayerPlan's `cpu_precision`, `gpu_precision` and `input_range`.

    `layers` maps layer name -> Layer, `weights` name -> float weight array, `ranges` name ->
    calibrated (lo, hi) of the layer's input (needed for int8), `overrides` layer name or
    ONNX node name -> {"cpu"/"gpu": precision}.
    """
    overrides = overrides or {}
    for lp in plan.layers:
        chosen = dict(mode)
        chosen.update(overrides.get(lp.name) or overrides.get(lp.source) or {})
        layer = layers[lp.name]
        lp.gpu_precision = chosen["gpu"] if layer.splittable and layer.dtype == "float32" else "fp32"
        lp.cpu_precision, lp.input_range = "fp32", None
        if chosen["cpu"] != "int8" or not lp.on("cpu"):
            continue
        reason = _int8_obstacle(layer, weights[lp.name], ranges)
        if reason:
            lp.note = "; ".join(filter(None, [lp.note, f"CPU slice stays fp32: {reason}"]))
            continue
        lp.cpu_precision = "int8"
        lp.input_range = [float(v) for v in ranges[lp.name]]


def _int8_obstacle(layer, weight, ranges) -> str:
    """Why a layer's CPU slice cannot compute in int8, or "" when it can."""
    if not layer.splittable:
        return layer.reason
    if layer.dtype != "float32":
        return f"input is {layer.dtype}"
    if ranges is None or layer.name not in ranges:
        return "no calibrated input range"
    products = math.prod(layer.weight_shape) // max(layer.channels, 1)
    if products < MIN_INT8_PRODUCTS:
        return f"{products} product(s) per output, too few for int8 to gain anything"
    lo, hi = ranges[layer.name]
    if not (math.isfinite(lo) and math.isfinite(hi)) or min(lo, 0.0) == max(hi, 0.0):
        return f"calibrated input range [{lo:g}, {hi:g}] is degenerate"
    error = weight_error(weight, weight_axis(layer.op))
    if error > MAX_WEIGHT_ERROR:
        return f"int8 weights would be {error:.1%} off (outlier weights; limit {MAX_WEIGHT_ERROR:.0%})"
    return ""


@dataclass
class Calibration:
    """The calibrated input range of each layer an int8 slice reads (`tvm_mulayer.compiler.calibration`
    computes it; artifacts keep it as calibration.json)."""

    method: str
    samples: int
    source: str
    ranges: dict = field(default_factory=dict)  # layer name -> [lo, hi] of its input
    percentile: float | None = None

    def to_json(self) -> dict:
        return {"format": CALIBRATION_FORMAT, **asdict(self)}

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @staticmethod
    def load(path) -> "Calibration":
        path = Path(path)
        if path.is_dir():
            path = path / CALIBRATION_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise MulayerError(f"{path}: cannot read a calibration ({err})") from None
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise MulayerError(f"{path} is not a tvm-mulayer calibration (format {CALIBRATION_FORMAT})")
        data.pop("format")
        return Calibration(**data)
