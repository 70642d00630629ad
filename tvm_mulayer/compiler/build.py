"""Compile one imported model for a CPU+GPU pair, plan by plan.

`ModelCompiler` holds an imported model (a Relax module with its weights bound, and its
`ModelInfo`), the two processors and the precision mode; `executable(split)` resolves a
split request into a Plan and builds it, `build(plan)` builds a Plan someone else chose
(the partitioner). The int8 slices' calibration runs once, when the first plan with an
int8 CPU slice needs it, and every later build reuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..base.layers import layer_bindings, layer_weights
from ..base.plan import Plan, make_plan
from ..base.processors import Processor, resolve_processors
from ..base.quantization import Calibration, assign_precision, parse_precision, requested_precisions
from ..runtime.executable import Executable
from .calibration import DEFAULT_PERCENTILE, obtain_calibration
from .frontend import ModelInfo, import_onnx
from .lowering import build_executable


class ModelCompiler:
    """An imported model, compiled for `cpu` + `gpu` per plan.

    `precision`: "native" (default: int8 CPU slices, fp16 GPU slices), "fp32", or overrides
    such as "native,gpu=fp32" (see `tvm_mulayer.base.quantization`). int8 slices are
    calibrated on `calib` (see `tvm_mulayer.compiler.calibration`); without it on random
    inputs, with a warning through `log`."""

    def __init__(self, mod, info: ModelInfo, cpu: Processor | str = "host", gpu: Processor | str | None = None,
                 precision=None, calib=None, calib_method: str = "percentile",
                 calib_percentile: float = DEFAULT_PERCENTILE, log=None):
        self.mod = mod
        self.info = info
        self.cpu, self.gpu = resolve_processors(cpu, gpu)
        self.mode = parse_precision(precision)
        self.calib = (calib, calib_method, calib_percentile)
        self.log = log
        self.bindings = layer_bindings(mod["main"])
        self.layers = list(self.bindings.values())
        self.channel_multiple = max(self.cpu.channel_multiple, self.gpu.channel_multiple)
        self.calibration = None

    @classmethod
    def from_onnx(cls, model, shapes: dict | None = None, **settings) -> "ModelCompiler":
        """A compiler of the ONNX model `model` (path or ModelProto); `shapes` fixes dynamic
        input dimensions; `settings` as the constructor takes them."""
        mod, info = import_onnx(model, shapes)
        return cls(mod, info, **settings)

    def plan(self, split) -> Plan:
        """The Plan of a split request: a ratio, 'cpu', 'gpu', a per-layer dict, a plan JSON
        path or a Plan."""
        return make_plan(self.layers, split, self.channel_multiple, self.info.sources)

    def plan_and_overrides(self, split) -> tuple:
        """(Plan, per-layer precisions the request sets) of a split request (see `plan`):
        a plan spec may set `cpu_precision`/`gpu_precision` per layer."""
        return self.plan(split), requested_precisions(plan_spec(split))

    def executable(self, split) -> Executable:
        """The executable of a split request (see `plan_and_overrides`)."""
        return self.build(*self.plan_and_overrides(split))

    def assign_precisions(self, plan: Plan, overrides: dict | None = None) -> Calibration | None:
        """Write into `plan` each slice's precision, the mode's (or that of `overrides`: layer
        name -> {"cpu": ..., "gpu": ...}), calibrating first where an int8 slice needs it;
        the Calibration the plan's int8 slices use (None without one)."""
        overrides = overrides or {}
        wants_int8 = any(lp.on("cpu") for lp in plan.layers) and (
            self.mode["cpu"] == "int8" or any(o.get("cpu") == "int8" for o in overrides.values()))
        if wants_int8 and self.calibration is None:
            self.calibration = obtain_calibration(self.mod, self.info, *self.calib, self.log)
        ranges = self.calibration.ranges if self.calibration is not None else None
        assign_precision(plan, {layer.name: layer for layer in self.layers},
                         layer_weights(self.mod["main"], self.bindings), self.mode, ranges, overrides)
        return self.calibration if wants_int8 else None

    def build(self, plan: Plan, overrides: dict | None = None) -> Executable:
        """The executable of `plan`, each slice in its precision (see `assign_precisions`)."""
        calibration = self.assign_precisions(plan, overrides)
        executable = build_executable(self.mod, self.info, plan, self.cpu, self.gpu)
        executable.calibration = calibration
        return executable


def plan_spec(split) -> dict | None:
    """The per-layer plan dict behind a split request, when it is one (else None)."""
    if isinstance(split, Plan):
        return split.to_json()
    if isinstance(split, dict):
        return split
    if isinstance(split, (str, Path)) and str(split).endswith(".json") and Path(split).is_file():
        try:
            return json.loads(Path(split).read_text())
        except json.JSONDecodeError:
            return None  # make_plan reports it
    return None
