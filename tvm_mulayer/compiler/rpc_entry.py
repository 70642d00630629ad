"""The executable's RPC entry, added at compile time for `mulayer deploy`."""

from __future__ import annotations

from ..runtime.deploy import RPC_ENTRY, WEIGHT_PREFIX


def add_rpc_entry(mod):
    """Add `mulayer_rpc_main(inputs...)`: main, its weights taken from the VM's tensor cache.

    Over RPC the VM can receive tensors only through `set_input`, which moves every argument
    to its first device, so weights meant for the GPU cannot be passed in. The entry instead
    binds each weight parameter to `vm.builtin.tensor_cache.get("tvm_mulayer.wI")`, which
    `deploy` fills on the right device first. Same kernels, same order as main.
    """
    from tvm import relax

    func = mod["main"]
    num_inputs = int(func.attrs["num_input"])
    bindings = [relax.VarBinding(param, relax.call_pure_packed("vm.builtin.tensor_cache.get",
                                                              f"{WEIGHT_PREFIX}{index}", ty_args=param.ty))
                for index, param in enumerate(func.params[num_inputs:])]
    body = relax.SeqExpr([relax.BindingBlock(bindings)] + list(func.body.blocks), func.body.body)
    entry = relax.Function(list(func.params[:num_inputs]), body, func.ret_ty, func.is_pure)
    mod[RPC_ENTRY] = entry.with_attr("global_symbol", RPC_ENTRY)
    return mod
