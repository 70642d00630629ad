"""The Python API's compile: an ONNX model to a two-device `Executable`, the plan given or
chosen by the partitioner (`split="auto"`), optionally verified by measurement."""

from __future__ import annotations

from .base.errors import MulayerError
from .compiler.build import ModelCompiler
from .compiler.calibration import DEFAULT_PERCENTILE
from .planning.partitioner import DIMS, auto_plan


def compile_model(model, cpu="host", gpu=None, split=0.5, shapes=None, predictor=None, verify=False,
                  log=None, precision=None, calib=None, calib_method="percentile",
                  calib_percentile=DEFAULT_PERCENTILE, dims=DIMS):
    """Build an `Executable` for `model` (ONNX path or ModelProto) split per `split`:
    a ratio, 'cpu', 'gpu', a per-layer spec or Plan, or 'auto' (the partitioner, with
    `predictor`, splitting layers along `dims`; `verify` then measures the auto plan against both single-processor
    plans and keeps the fastest, reporting through `log`). `precision` and `calib*`: see
    `ModelCompiler`; a per-layer plan may also set `cpu_precision`/`gpu_precision`."""
    compiler = ModelCompiler.from_onnx(model, shapes, cpu=cpu, gpu=gpu, precision=precision, calib=calib,
                                       calib_method=calib_method, calib_percentile=calib_percentile, log=log)
    chosen = compiler.build(*resolve_split(compiler, split, predictor, log, dims))
    if split != "auto" or not verify:
        return chosen
    candidates = {"auto": chosen, **{single: compiler.executable(single) for single in ("cpu", "gpu")}}
    measured = {name: exe.benchmark(repeat=10)["median"] for name, exe in candidates.items()}
    best = min(measured, key=measured.get)
    if log:
        times = ", ".join(f"{name} {seconds * 1e3:.3f} ms" for name, seconds in measured.items())
        log(f"--verify measured {times}: keeping the {best} plan")
    candidates[best].plan.description += f" [verified: {best} fastest of {sorted(measured)}]"
    return candidates[best]


def resolve_split(compiler: ModelCompiler, split, predictor=None, log=None, dims=DIMS) -> tuple:
    """(Plan, per-layer precision overrides a plan spec sets) of a split request for the
    model `compiler` holds: a ratio, 'cpu', 'gpu', a per-layer spec or Plan, or 'auto' (the
    partitioner's plan, with `predictor`, splitting along `dims`; its warnings through `log`)."""
    if not (isinstance(split, str) and split == "auto"):
        return compiler.plan_and_overrides(split)
    if not compiler.layers:
        raise MulayerError("the model has no conv or dense layer with constant weights, so "
                           "there is nothing to split between the processors")
    # the partitioner predicts the slices in the precision they will be built in
    plan = auto_plan(compiler.mod["main"], compiler.cpu, compiler.gpu, predictor, compiler.info.sources,
                     compiler.channel_multiple, precision=compiler.mode, log=log, dims=dims)[0]
    return plan, {}
