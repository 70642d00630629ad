"""PropagateDevices: after legalization, put every kernel back on the device its data is on.

IRModule -> IRModule. Stock `LegalizeOps` (TVM 0.27) drops the vdevice of many `call_tir`
results (conv2d, pooling, casts...) and leaves their PrimFuncs without a `target`, and it
shares one PrimFunc between a CPU call and a GPU call of the same shape. The VM would then
allocate a GPU kernel's output on the CPU, and the build would compile GPU kernels for the
host (see shared/TVM-NOTES.md). This pass walks `main` in order and, for each `call_tir`:

* takes the vdevice of its tensor arguments (they must agree: data crosses devices only
  through `to_vdevice`) and writes it into the call's output type;
* gives the callee that vdevice's target, cloning the PrimFunc when it is already used
  with another target.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from .vdevices import vdevice_key

CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _vdevices(expr) -> list:
    ty = expr.ty
    if isinstance(ty, relax.TensorType):
        return [ty.vdevice] if ty.vdevice is not None else []
    if isinstance(ty, relax.TupleType):
        found = []
        for field in ty.fields:
            found += [field.vdevice] if isinstance(field, relax.TensorType) and field.vdevice is not None else []
        return found
    return []


def _with_vdevice(ty, vdevice):
    if isinstance(ty, relax.TensorType):
        return relax.TensorType(ty.shape, ty.dtype, vdevice)
    if isinstance(ty, relax.TupleType):
        return relax.TupleType([_with_vdevice(field, vdevice) for field in ty.fields])
    return ty


@mutator
class _DevicePropagator(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod
        self.kernel_for: dict = {}  # (GlobalVar, target text) -> GlobalVar

    def _kernel(self, gvar: tvm.ir.GlobalVar, target: tvm.target.Target) -> tvm.ir.GlobalVar:
        key = (gvar, str(target))
        if key not in self.kernel_for:
            func = self.mod[gvar]
            current = func.attrs.get("target") if func.attrs else None
            users = [k for k in self.kernel_for if k[0].same_as(gvar)]
            if not users and (current is None or str(current) == str(target)):
                self.builder_.update_func(gvar, func.with_attr("target", target))
                self.kernel_for[key] = gvar
            else:  # with its own variables: one defined in two PrimFuncs makes the module ill-formed
                clone = s_tir.renew_defs(func).with_attr("target", target)
                self.kernel_for[key] = self.builder_.add_func(clone, f"{gvar.name_hint}_{target.kind.name}")
        return self.kernel_for[key]

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = self.visit_expr_post_order(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(CALL_TIR)):
            return call
        devices = []
        for arg in call.args[1].fields:
            devices += _vdevices(arg)
        if not devices:
            return call
        vdevice = devices[0]
        if len({vdevice_key(d) for d in devices}) > 1:
            raise ValueError(f"call_tir {call.args[0].name_hint} reads tensors on different devices "
                             f"{sorted({str(d) for d in devices})}; insert to_vdevice before it")
        gvar = call.args[0]
        if isinstance(self.mod[gvar], tirx.PrimFunc):
            gvar = self._kernel(gvar, vdevice.target)
        out_ty = [_with_vdevice(ty, vdevice) for ty in call.ty_args]
        return relax.Call(call.op, [gvar, *call.args[1:]], call.attrs, out_ty)


@tvm.transform.module_pass(opt_level=0, name="PropagateDevices")
class PropagateDevices:
    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        propagator = _DevicePropagator(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                propagator.builder_.update_func(gvar, propagator.visit_expr(func))
        return propagator.builder_.get()
