"""LiftWeights: turn tensor constants into parameters that live on the device using them.

IRModule -> IRModule. The Relax VM loads every constant onto its first device, so a CPU
kernel reading a weight that lives on the GPU (or the other way round) would fault, and
copying weights per inference would cost more than the split saves. This pass replaces
each tensor constant argument of a call in `main` by a new trailing parameter whose type
carries the vdevice of that call's result; the values go, in parameter order, into the
function attribute "params" (TVM's convention, see `relax.frontend.detach_params`), and
"num_input" keeps counting only the real inputs. A constant used on two devices becomes
two parameters.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm_mulayer.base.layers import is_tensor_constant

from .functions import replace_function
from .vdevices import first_vdevice


@tvm.transform.module_pass(opt_level=0, name="LiftWeights")
class LiftWeights:
    def __init__(self, func_name: str = "main"):
        self.func_name = func_name

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod[self.func_name]
        lifted: dict = {}  # (constant, vdevice) -> Var
        values = []

        def lift(expr, vdevice, inline_scalars=True):
            if isinstance(expr, relax.Tuple):  # call_tir's arguments: nothing inlines their 0-d constants
                return relax.Tuple([lift(field, vdevice, False) for field in expr.fields])
            if not is_tensor_constant(expr) or (inline_scalars and expr.ty.ndim == 0):  # 0-d: legalization inlines it
                return expr
            key = (expr, str(vdevice))
            if key not in lifted:
                ty = expr.ty
                var = relax.Var(f"w{len(values)}", relax.TensorType(ty.shape, ty.dtype, vdevice))
                lifted[key] = var
                values.append(expr.value)
            return lifted[key]

        new_blocks = []
        for block in func.body.blocks:
            bindings = []
            for binding in block.bindings:
                value = binding.value
                if isinstance(value, relax.Call):
                    vdevice = first_vdevice(binding.var.ty)
                    value = relax.Call(value.op, [lift(arg, vdevice) for arg in value.args],
                                       value.attrs, value.ty_args)
                bindings.append(relax.VarBinding(binding.var, value))
            new_blocks.append(type(block)(bindings))
        attrs = dict(func.attrs) if func.attrs else {}
        attrs.setdefault("num_input", len(func.params))
        if values:
            attrs["params"] = list(attrs.get("params", [])) + values
        return replace_function(mod, self.func_name, list(func.params) + list(lifted.values()), new_blocks, attrs)
