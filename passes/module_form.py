"""The form SplitChannels (and so the whole pipeline) needs its Relax function in.

`require_split_form(mod, func_name)` raises one `MulayerError` naming what is missing and
how to get it: the function exists and is a Relax function; its weights are bound as
constants (a conv or dense layer is found by its constant weight — a weight passed as a
parameter leaves nothing to split); its inputs are tensors of static shape; its body is
pure dataflow (no control flow, nothing impure), so every op can be placed on a device.
TVM's ONNX frontend (`keep_params_in_input=False`, the default), its PyTorch exporter
(`keep_params_as_input=False`, the default) and TVMScript written with constants give
that form.

MulayerError is registered with TVM's FFI here: a Python pass runs under TVM's C++ pass
infrastructure, and an unregistered exception raised in it comes back to the caller of
`tvm.compile` as a RuntimeError.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax

from tvm_mulayer.base.errors import MulayerError

tvm_ffi.register_error(MulayerError)


def require_split_form(mod: tvm.IRModule, func_name: str = "main") -> relax.Function:
    """`mod[func_name]`, after checking that it is in the form the split needs."""
    names = sorted(gv.name_hint for gv in mod.get_global_vars())
    if func_name not in names:
        raise MulayerError(f"the module has no function {func_name!r} (it has {', '.join(names) or 'none'}); "
                           "the split rewrites the model's entry function: name it main or pass func_name=")
    func = mod[func_name]
    if not isinstance(func, relax.Function):
        raise MulayerError(f"{func_name!r} is a {type(func).__name__}, not a Relax function; the split needs the "
                           "model as a Relax function (from relax.frontend or @R.function)")
    where = f"{func_name!r}"
    num_input = int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else len(func.params)
    if (func.attrs and "params" in func.attrs) or num_input < len(func.params):
        raise MulayerError(
            f"{where} takes its weights as parameters ({', '.join(p.name for p in func.params[num_input:])}); "
            "the split needs them bound as constants: import with keep_params_in_input=False (ONNX) or "
            "keep_params_as_input=False (PyTorch), or bind them with relax.transform.BindParams")
    for param in func.params:
        ty = param.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None or not all(
                isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values):
            raise MulayerError(f"input {param.name!r} of {where} is {ty}; the split needs tensors of static "
                               "shape: import with fixed shapes or bind the symbolic dimensions "
                               "(relax.transform.BindSymbolicVars)")
    for block in func.body.blocks:
        for binding in block.bindings:
            value, name = binding.value, binding.var.name
            if isinstance(value, relax.If):
                problem = f"{name} is control flow (an If on {value.cond})"
            elif isinstance(value, relax.Function):
                problem = f"{name} is a nested function"
            elif relax.analysis.contains_impure_call(value):
                problem = f"{name} = {str(value).strip().splitlines()[0][:80]} is an impure call"
            else:
                continue
            raise MulayerError(f"{where} is not pure dataflow: {problem}; the split places every op of a dataflow "
                               "graph on a device — keep side effects and control flow out of the model's function")
    return func
