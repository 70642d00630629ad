"""PooledCopies: cross-device copies into buffers of the VM's pooled allocator, without a sync.

IRModule -> IRModule. TVM 0.27 runs each `R.to_vdevice` as `Tensor::CopyTo`: a fresh, unpooled
allocation on the destination (on CUDA `cudaMemGetInfo` + `cudaMalloc`, and `cudaFree` when
the tensor dies), the copy, then `cudaStreamSynchronize` of the whole device. This pass
rewrites every `to_vdevice` binding of `main` into a destination-passing call

    lv = R.call_dps_packed("runtime.TVMTensorCopyFromTo", (x,), out_sinfo=<lv's type>)

so the destination comes from the VM's pooled allocator on the destination vdevice (reused
from the second inference on) and the copy is queued on the device's stream with nothing
waiting for it. The ordering that remains is the one the data needs, and the device stream
gives it: kernels and copies of one device run in the order the VM issues them, a copy to
the GPU runs after the GPU work queued before it, and a copy from the GPU into pageable host
memory returns once it is done (CUDA finishes such a copy before returning), so the CPU
kernels after it read complete data. Run it last, after OrderForOverlap has placed the
copies: the other passes recognise copies as `to_vdevice`.
"""

from __future__ import annotations

import tvm
from tvm import relax

from tvm_mulayer.runtime.devices import EXCHANGE_COPY

from .functions import replace_function

TO_VDEVICE = tvm.ir.Op.get("relax.to_vdevice")


@tvm.transform.module_pass(opt_level=0, name="PooledCopies")
class PooledCopies:
    """Rewrite `main`'s `to_vdevice` bindings into destination-passing copies (see the module
    docstring)."""

    def __init__(self, func_name: str = "main"):
        self.func_name = func_name

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod[self.func_name]
        blocks = []
        for block in func.body.blocks:
            bindings = []
            for binding in block.bindings:
                value = binding.value
                if isinstance(value, relax.Call) and value.op.same_as(TO_VDEVICE):
                    value = relax.call_dps_packed(relax.ExternFunc(EXCHANGE_COPY), relax.Tuple([value.args[0]]),
                                                  binding.var.ty)
                    binding = relax.VarBinding(binding.var, value)
                bindings.append(binding)
            blocks.append(type(block)(bindings))
        return replace_function(mod, self.func_name, func.params, blocks, dict(func.attrs) if func.attrs else {})
