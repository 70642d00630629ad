"""PrepackWeights: run the CPU kernels' weight repacks once, at compile time.

The int8 rules (and the float32 Conv2d rule's channel-vectorized form) read weights in a
blocked layout and repack them in a block marked `meta_schedule.layout_rewrite_preproc`.
`relax.transform.SplitLayoutRewritePreproc()` moves each such repack into its own PrimFunc
(`<kernel>_weight_prepack`) called from `main` on the weight. This pass then evaluates every
such call whose argument is a weight (a constant, or a parameter of `main` whose value is in
its "params" attribute, as LiftWeights leaves them) and replaces it by the packed weight: a
constant, or a parameter of the packed type on the same vdevice, holding the packed value
(the unpacked parameter goes if nothing else reads it). No repack is left at run time.

IRModule -> IRModule; it only reorganizes data (the repacks are exact copies), so the
repacks are compiled for this host's plain llvm target whatever device the kernel is for.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx
from tvm.target import Target

PREPACK_SUFFIX = "_weight_prepack"


def run_repack(func: tirx.PrimFunc, value: tvm.runtime.Tensor, out_ty) -> tvm.runtime.Tensor:
    """The repack PrimFunc applied to `value` on this host."""
    func = func.without_attr("target").with_attr("global_symbol", "main")
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=Target("llvm"))
    shape = [int(d) for d in out_ty.shape]
    out = tvm.runtime.empty(shape, out_ty.dtype, tvm.cpu())
    lib["main"](tvm.runtime.tensor(value.numpy(), tvm.cpu()), out)
    return out


@tvm.transform.module_pass(opt_level=0, name="PrepackWeights")
class PrepackWeights:  # pylint: disable=too-few-public-methods
    """Fold `main`'s weight-repack calls into packed constants / parameters."""

    def __init__(self, func_name: str = "main"):
        self.func_name = func_name

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if self.func_name not in [gv.name_hint for gv in mod.get_global_vars()]:
            return mod
        func = mod[self.func_name]
        attrs = dict(func.attrs) if func.attrs else {}
        num_input = int(attrs.get("num_input", len(func.params)))
        params = list(func.params)
        values = list(attrs.get("params", []))
        weight_index = {p: i for i, p in enumerate(params) if i >= num_input and i - num_input < len(values)}

        changed = False
        blocks = []
        for block in func.body.blocks:
            bindings = []
            for binding in block.bindings:
                packed = self._packed(mod, binding.value, weight_index, values, num_input)
                if packed is None:
                    bindings.append(binding)
                    continue
                changed = True
                if isinstance(packed, tvm.ir.Constant):
                    bindings.append(relax.VarBinding(binding.var, packed))
                    continue
                source, value = packed
                ty = source.ty
                var = relax.Var(f"{source.name}_packed",
                                relax.TensorType(value.shape, value.dtype, ty.vdevice))
                params.append(var)
                values.append(value)
                bindings.append(relax.VarBinding(binding.var, var))
            blocks.append(type(block)(bindings))
        if not changed:
            return mod
        body = relax.SeqExpr(blocks, func.body.body)
        used = set(relax.analysis.free_vars(body))
        keep = [i for i, p in enumerate(params) if i < num_input or p in used]
        new_params = [params[i] for i in keep]
        attrs["params"] = [values[i - num_input] for i in keep if i >= num_input]
        new_func = relax.Function(new_params, body, func.ret_ty, func.is_pure).with_attrs(attrs)
        new_mod = mod.clone()
        new_mod.update_func(mod.get_global_var(self.func_name), new_func)
        return relax.transform.DeadCodeElimination([self.func_name])(relax.transform.Normalize()(new_mod))

    @staticmethod
    def _packed(mod, value, weight_index, values, num_input):
        """A packed Constant, or (source parameter, packed value), when `value` is a repack
        call on a weight; else None."""
        if not (isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.call_tir"))):
            return None
        g_var = value.args[0]
        if not g_var.name_hint.endswith(PREPACK_SUFFIX):
            return None
        args = value.args[1].fields
        if len(args) != 1:
            return None
        arg = args[0]
        if isinstance(arg, tvm.ir.Constant):
            return relax.const(run_repack(mod[g_var], arg.value, value.ty).numpy())
        if arg in weight_index:
            return arg, run_repack(mod[g_var], values[weight_index[arg] - num_input], value.ty)
        return None
