"""Latency predictor: XGBoost regressors of kernel time per processor, plus a copy model.

Kernel time is predicted from the layer's shape (what one side of a split computes) in log
space, so errors are relative. Copies are a line, seconds = latency + bytes / bandwidth,
per direction. A predictor is saved as one JSON file: XGBoost's own JSON model per
processor, embedded as text, with the processors it was measured on, the data it was
trained on and its held-out accuracy. It loads without pickle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .errors import MulayerError
from .layers import Layer

PREDICTOR_FORMAT = "tvm-mulayer-predictor/1"
FEATURES = ("dense", "depthwise", "in_channels", "out_channels", "height", "width", "out_height", "out_width",
            "kernel", "stride", "groups", "log_macs", "log_input_bytes", "log_weight_bytes", "log_output_bytes")


def features(layer: Layer) -> list[float]:
    bytes_per = 4 if layer.dtype == "float32" else 2 if layer.dtype == "float16" else 1
    size = lambda shape: float(np.prod(shape))  # noqa: E731
    spatial = lambda shape: (shape[2], shape[3]) if len(shape) == 4 else (1, 1)  # noqa: E731
    (h, w), (oh, ow) = spatial(layer.input_shape), spatial(layer.output_shape)
    kernel = layer.weight_shape[2] if layer.op == "conv2d" else 1
    return [
        float(layer.op == "dense"), float(layer.groups > 1 and layer.channels_per_unit == 1),
        float(layer.input_shape[1]), float(layer.channels), float(h), float(w), float(oh), float(ow),
        float(kernel), float(layer.strides[0]), float(layer.groups), math.log(max(layer.macs, 1)),
        math.log(size(layer.input_shape) * bytes_per), math.log(size(layer.weight_shape) * bytes_per),
        math.log(size(layer.output_shape) * bytes_per),
    ]


def _accuracy(predicted, actual) -> dict:
    rel = np.abs(np.asarray(predicted) - np.asarray(actual)) / np.asarray(actual)
    return {"samples": int(len(rel)), "within_10pct": float(np.mean(rel <= 0.10)),
            "median_error": float(np.median(rel)), "p90_error": float(np.quantile(rel, 0.9))}


class Predictor:
    def __init__(self, boosters: dict, copy_model: dict, meta: dict):
        self.boosters = boosters  # role -> xgboost.Booster
        self.copy_model = copy_model  # "h2d"/"d2h" -> [seconds_fixed, seconds_per_byte]
        self.meta = meta

    @property
    def gpu_async(self) -> bool:
        """Whether GPU kernels run asynchronously to the host thread (not when emulated)."""
        return bool(self.meta.get("gpu_async", False))

    def kernel_times(self, layers: list[Layer], role: str) -> np.ndarray:
        import xgboost as xgb

        if not layers:
            return np.zeros(0)
        matrix = xgb.DMatrix(np.array([features(layer) for layer in layers]), feature_names=list(FEATURES))
        return np.exp(self.boosters[role].predict(matrix))

    def copy_time(self, nbytes: float, direction: str) -> float:
        if nbytes <= 0:
            return 0.0
        fixed, per_byte = self.copy_model[direction]
        return fixed + per_byte * nbytes

    def save(self, path) -> None:
        data = {"format": PREDICTOR_FORMAT, "meta": self.meta, "copy_model": self.copy_model,
                "boosters": {role: bytes(b.save_raw("json")).decode() for role, b in self.boosters.items()}}
        Path(path).write_text(json.dumps(data))

    @staticmethod
    def load(path) -> "Predictor":
        import xgboost as xgb

        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise MulayerError(f"cannot read predictor {path}: {err}") from None
        if data.get("format") != PREDICTOR_FORMAT:
            raise MulayerError(f"{path} is not a tvm-mulayer predictor (format {data.get('format')!r})")
        boosters = {}
        for role, text in data["boosters"].items():
            booster = xgb.Booster()
            booster.load_model(bytearray(text.encode()))
            boosters[role] = booster
        return Predictor(boosters, data["copy_model"], data["meta"])

    def check_processors(self, cpu, gpu) -> None:
        """A predictor measured on other processors predicts nothing useful: refuse it."""
        measured = (self.meta.get("cpu_target"), self.meta.get("gpu_target"))
        if measured != (cpu.target, gpu.target):
            raise MulayerError(
                f"the predictor was measured on CPU {json.dumps(measured[0])} + GPU {json.dumps(measured[1])}, "
                f"not on {json.dumps(cpu.target)} + {json.dumps(gpu.target)}; run `mulayer profile` and "
                "`mulayer train` for these processors")


def train(rows: list[dict], cpu, gpu, *, holdout: float = 0.2, seed: int = 0, rounds: int = 300) -> Predictor:
    """Fit per-processor boosters on profiler rows; accuracy is measured on held-out configs."""
    import xgboost as xgb

    from .profiler import layer_from_key

    meta = {"cpu_target": cpu.target, "gpu_target": gpu.target, "gpu_async": gpu.device_type != "cpu",
            "gpu_label": gpu.label(), "cpu_label": cpu.label(), "accuracy": {}, "devices": {}}
    boosters = {}
    rng = np.random.default_rng(seed)
    for role in ("cpu", "gpu"):
        kernel_rows = [r for r in rows if r["kind"] == "kernel" and r["role"] == role]
        if len(kernel_rows) < 10:
            raise MulayerError(f"only {len(kernel_rows)} {role} kernel measurements; profile more configurations")
        meta["devices"][role] = sorted({r["device"] for r in kernel_rows})
        x = np.array([features(layer_from_key(r["config"])) for r in kernel_rows])
        y = np.log(np.array([float(r["seconds"]) for r in kernel_rows]))
        test = rng.random(len(y)) < holdout
        params = {"max_depth": 6, "eta": 0.1, "subsample": 0.9, "colsample_bytree": 0.9,
                  "min_child_weight": 1, "objective": "reg:squarederror", "seed": seed}
        held = xgb.train(params, xgb.DMatrix(x[~test], y[~test], feature_names=list(FEATURES)), rounds)
        predicted = np.exp(held.predict(xgb.DMatrix(x[test], feature_names=list(FEATURES))))
        meta["accuracy"][role] = _accuracy(predicted, np.exp(y[test]))
        boosters[role] = xgb.train(params, xgb.DMatrix(x, y, feature_names=list(FEATURES)), rounds)
    copy_model = {}
    for direction in ("h2d", "d2h"):
        points = [(float(r["bytes"]), float(r["seconds"])) for r in rows if r["kind"] == "copy" and r["config"] == direction]
        if len(points) < 2:
            raise MulayerError(f"no {direction} copy measurements in the profile; profile with copies")
        sizes, seconds = np.array(points).T
        per_byte, fixed = np.polyfit(sizes, seconds, 1)
        copy_model[direction] = [max(float(fixed), 0.0), max(float(per_byte), 0.0)]
    meta["samples"] = {role: sum(1 for r in rows if r["kind"] == "kernel" and r["role"] == role) for role in ("cpu", "gpu")}
    return Predictor(boosters, copy_model, meta)
