"""tvm-mulayer as a Relax pipeline: `tvm.compile(mod, target=None, relax_pipeline=get_pipeline(...))`.

For a Relax module from any frontend (TVM's ONNX importer, its PyTorch exporter, TVMScript)
whose `main` has its weights bound as constants, static input shapes and a pure dataflow
body (see `tvm_mulayer.passes.module_form`). The pass runs what `mulayer compile` runs —
the same folding, plan (`split="auto"` included), calibration, precisions, split, weight
lifting, schedules, weight repacks and ordering, then TVM's VM lowering — so the same
model and plan give the same kernels and the same outputs.

A weight used on the GPU must live in GPU memory, and the Relax VM puts every constant on
its first device (the CPU): so, as in a module imported with `keep_params_in_input=True`,
the compiled `main` takes the model's inputs followed by its weights. The pass keeps them:

    pipeline = tvm_mulayer.get_pipeline(split=0.5, cpu="host", gpu="emulated")
    ex = tvm.compile(mod, target=None, relax_pipeline=pipeline)
    vm = relax.VirtualMachine(ex, pipeline.devices)
    outputs = vm["main"](x, *pipeline.weights)

`pipeline.weights` are already on the device each one is used on; `pipeline.plan` is the
Plan it applied. One pipeline belongs to one model: run on another, it refuses, since the
weights it holds would no longer match.
"""

from __future__ import annotations

import warnings

import tvm
import tvm_ffi

from .api import resolve_split
from .base.errors import MulayerError
from .base.processors import resolve_processors
from .compiler.build import ModelCompiler
from .compiler.calibration import DEFAULT_PERCENTILE
from .compiler.frontend import ModelInfo, prepare_for_split
from .compiler.lowering import lower, vm_pipeline
from .passes.module_form import require_split_form
from .runtime.devices import cpu_threads, tvm_device


def get_pipeline(split=0.5, cpu="host", gpu=None, precision=None, calib=None, calib_method: str = "percentile",
                 calib_percentile: float = DEFAULT_PERCENTILE, predictor=None) -> "MulayerPipeline":
    """The Relax pipeline that splits a model's layers between `cpu` and `gpu` and lowers it
    for the VM: a `tvm.transform.Pass` for `tvm.compile(mod, target=None, relax_pipeline=...)`.

    The values `mulayer compile` takes: `split` a ratio (the GPU's share of every layer),
    'cpu', 'gpu', a per-layer dict, a plan JSON file, a Plan, or 'auto' (the partitioner,
    with `predictor`); `cpu` a preset ('host', ...) or target JSON; `gpu` a preset
    ('emulated', 'cuda', 'opencl', ...) or target JSON, default CUDA when present, else
    emulated; `precision` 'native' (default: int8 CPU slices, fp16 GPU slices), 'fp32' or
    overrides; `calib` calibration samples keyed by `main`'s parameter names (see
    `mulayer compile --help`). Bad values raise MulayerError here, not inside tvm.compile."""
    cpu_proc, gpu_proc = resolve_processors(cpu, gpu)
    return MulayerPipeline(split, cpu_proc, gpu_proc, precision, (calib, calib_method, calib_percentile), predictor)


def relax_model_info(func) -> ModelInfo:
    """The interface of a Relax `main`: inputs by parameter name, outputs numbered."""
    from tvm import relax

    inputs = {param.name: (tuple(int(d) for d in param.ty.shape.values), str(param.ty.dtype))
              for param in func.params}
    count = len(func.ret_ty.fields) if isinstance(func.ret_ty, relax.TupleType) else 1
    return ModelInfo(inputs, [f"output{i}" for i in range(count)])


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=2)


@tvm.transform.module_pass(opt_level=0, name="MulayerPipeline")
class MulayerPipeline:
    """Split `main` per `split` between the `cpu` and `gpu` Processors and lower it for the
    VM (see `get_pipeline`). After it ran: `plan`, `weights`, `devices`, `calibration`
    (None without int8 slices) and `crossing` (bytes copied per inference)."""

    def __init__(self, split, cpu, gpu, precision, calib: tuple, predictor=None):
        self.split = split
        self.cpu, self.gpu = cpu, gpu
        self.precision = precision
        self.calib = calib
        self.predictor = predictor
        self.plan = None
        self.calibration = None
        self.crossing = None
        self.weight_arrays = None  # numpy, in parameter order
        self.weight_devices = None  # index into `devices` of each weight
        self._compiled = None  # the module it compiled, to refuse another
        self._devices = None
        self._weights = None

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = require_split_form(mod)
        if self._compiled is not None and not tvm_ffi.structural_equal(mod, self._compiled):
            raise MulayerError("this pipeline already compiled another module, whose weights it holds; "
                               "call tvm_mulayer.get_pipeline(...) once per model")
        compiler = ModelCompiler(prepare_for_split(mod), relax_model_info(func), self.cpu, self.gpu,
                                 self.precision, *self.calib, log=_warn)
        plan, overrides = resolve_split(compiler, self.split, self.predictor)
        calibration = compiler.assign_precisions(plan, overrides)
        lowered, weights, weight_devices, crossing = lower(compiler.mod, plan, self.cpu, self.gpu)
        self.plan, self.calibration, self.crossing = plan, calibration, crossing
        self.weight_arrays, self.weight_devices = weights, weight_devices
        self._compiled, self._weights = mod, None
        return vm_pipeline()(lowered)

    @property
    def devices(self) -> list:
        """The VM's devices: [CPU, GPU] (the emulated GPU is a second CPU device)."""
        if self._devices is None:
            cpu_threads(self.cpu, self.gpu)  # the thread pool `mulayer run` gives the CPU side
            self._devices = [tvm_device(self.cpu, 0), tvm_device(self.gpu, 1)]
        return self._devices

    @property
    def weights(self) -> list:
        """The compiled `main`'s weight arguments, each on its device, in parameter order."""
        if self.weight_arrays is None:
            raise MulayerError("the pipeline has not compiled a module yet: "
                               "tvm.compile(mod, target=None, relax_pipeline=pipeline) first")
        if self._weights is None:
            devices = self.devices
            self._weights = [tvm.runtime.tensor(w, devices[d]) for w, d in zip(self.weight_arrays, self.weight_devices)]
        return self._weights
