"""Rebuilding a function with new bindings, shared by the passes that rewrite `main` in place."""

from __future__ import annotations

import tvm
from tvm import relax


def replace_function(mod: tvm.IRModule, name: str, params: list, blocks: list, attrs: dict) -> tvm.IRModule:
    """A copy of `mod` whose function `name` has `params`, binding `blocks` (same result
    expression) and `attrs`, with its types inferred as BlockBuilder-made functions have."""
    func = mod[name]
    new_func = relax.Function(list(params), relax.SeqExpr(blocks, func.body.body), func.ret_ty,
                              func.is_pure).with_attrs(attrs)
    new_mod = mod.clone()
    new_mod.update_func(mod.get_global_var(name), new_func)
    return relax.transform.Normalize()(new_mod)
