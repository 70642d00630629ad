"""tvm-mulayer: run one CNN on a CPU and a GPU at the same time, with Apache TVM.

`compile(model, cpu=..., gpu=..., split=...)` builds a two-device executable from an ONNX
model; `load(artifact_dir)` loads an exported one (with only the TVM runtime, too);
`get_pipeline(split=..., cpu=..., gpu=...)` is the same compilation as a Relax pipeline for
`tvm.compile(mod, target=None, relax_pipeline=...)` (see `tvm_mulayer.pipeline`).
"""

import os as _os

from .base import __version__
from .base.errors import MulayerError

# In a source checkout passes/ and schedules/ sit beside this package; installing maps them in
# as tvm_mulayer.passes and tvm_mulayer.schedules (pyproject's package-dir). Let a checkout on
# sys.path (`python -m pytest`, `python -m tvm_mulayer.cli` from the repository) find them too.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "pyproject.toml")) and _os.path.isdir(_os.path.join(_checkout, "passes")):
    __path__.append(_checkout)

__all__ = ["MulayerError", "compile", "get_pipeline", "load", "__version__"]


def compile(model, cpu="host", gpu=None, split=0.5, shapes=None, predictor=None, verify=False,  # noqa: A001
            precision=None, calib=None, calib_method="percentile", calib_percentile=99.99,
            dims=("channel", "height")):
    """Compile an ONNX model (path or ModelProto) into a two-device `Executable`.

    `split`: the GPU's share of every layer (0..1), 'cpu', 'gpu', a per-layer dict / plan
    JSON path / Plan, or 'auto' (chosen by the latency predictor). `precision`: "native"
    (default: int8 on the CPU, fp16 on the GPU), "fp32", or overrides like "native,gpu=fp32";
    `calib`: calibration samples for the int8 slices (.npz, directory of .npy, or a saved
    calibration.json / artifact). `dims`: what `auto` may split layers along — output
    channels, and a conv's output rows in operator chains (CoDL)."""
    from .api import compile_model

    return compile_model(model, cpu=cpu, gpu=gpu, split=split, shapes=shapes, predictor=predictor,
                         verify=verify, log=print, precision=precision, calib=calib, calib_method=calib_method,
                         calib_percentile=calib_percentile, dims=dims)


def load(artifact_dir, weights=None):
    """Load an exported artifact directory into an `Executable` ready to `.run()`;
    `weights` (arrays of the artifact's shapes) replaces its weights.npz."""
    from .runtime.executable import load_artifact

    return load_artifact(artifact_dir, weights=weights)


def __getattr__(name):
    # get_pipeline, passes and schedules need tvm.relax; imported on first use,
    # `import tvm_mulayer` stays light enough for a host with only the TVM runtime
    if name == "get_pipeline":
        from .pipeline import get_pipeline

        return get_pipeline
    if name in ("passes", "schedules"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
