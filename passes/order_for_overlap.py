"""OrderForOverlap: issue GPU work before CPU work, and cross-device copies last.

IRModule -> IRModule, reordering the bindings of each dataflow block of `main` (only
within what their data dependences allow). The VM runs bindings in order on one host
thread: CPU kernels run on that thread, GPU kernels are queued and run asynchronously, and
a copy between the devices waits for the GPU queue. So the two processors overlap only if,
at each step, the GPU's kernels are queued first, the CPU's kernels run while the GPU
works, and the copies that exchange the step's results come after both.

A step ("level") is one round of that: the CPU's light kernels that only prepare data for
the GPU (slices, float16/uint8 conversions: no reduction, every user a copy to the GPU),
copies to the GPU of what the CPU made in the previous step, the GPU's kernels, the CPU's
kernels, then copies back to the CPU. A copy to the GPU — with its preparing kernels —
opens the step after the one its data was made in; whatever reads a copy back to the CPU
belongs to the next step. Bindings are issued by (level, kind, original position) among
those whose inputs are ready, kinds in the order just given. The first vdevice of the
module is the host CPU; every other one counts as the GPU.
"""

from __future__ import annotations

import heapq

import tvm
from tvm import relax, s_tir, tirx

from .functions import replace_function
from .vdevices import first_vdevice, vdevice_key
from tvm_mulayer.schedules.analysis import child_blocks, iter_kinds

TO_VDEVICE = tvm.ir.Op.get("relax.to_vdevice")
CPU_FEED, TO_GPU, GPU_COMPUTE, CPU_COMPUTE, TO_CPU = 0, 1, 2, 3, 4


def _is_copy(value) -> bool:
    return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.same_as(TO_VDEVICE)


def binding_kind(binding, host_vdevice) -> int:
    vdevice = first_vdevice(binding.var.ty)
    on_host = vdevice is None or host_vdevice is None or vdevice_key(vdevice) == vdevice_key(host_vdevice)
    if _is_copy(binding.value):
        return TO_CPU if on_host else TO_GPU
    return CPU_COMPUTE if on_host else GPU_COMPUTE


def _has_reduction(func) -> bool:
    if not isinstance(func, tirx.PrimFunc):
        return True  # not a kernel we can look into: treat it as real work
    sch = s_tir.Schedule(func)
    return any("R" in iter_kinds(sch, block) for block in child_blocks(sch))


def _light_kernel(binding, mod) -> bool:
    """A call_tir of a kernel without reductions (elementwise, slicing, conversion)."""
    value = binding.value
    if not (isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir"):
        return False
    return not _has_reduction(mod[value.args[0]])


def order_bindings(bindings: list, host_vdevice, is_light=lambda binding: False) -> list:
    """The bindings in overlap order (a topological order of their dependences);
    `is_light(binding)` says whether a CPU binding is cheap enough to prepare GPU data."""
    index_of = {b.var: i for i, b in enumerate(bindings)}
    deps = [[index_of[v] for v in relax.analysis.free_vars(b.value) if v in index_of] for b in bindings]
    kinds = [binding_kind(b, host_vdevice) for b in bindings]
    users = [[] for _ in bindings]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    for i, binding in enumerate(bindings):
        if kinds[i] == CPU_COMPUTE and users[i] and all(kinds[u] == TO_GPU for u in users[i]) and is_light(binding):
            kinds[i] = CPU_FEED
    level = [0] * len(bindings)
    for i, ds in enumerate(deps):
        for d in ds:
            opens_step = kinds[i] == CPU_FEED or (kinds[i] == TO_GPU and kinds[d] != CPU_FEED)
            after = 1 if kinds[d] == TO_CPU or opens_step else 0
            level[i] = max(level[i], level[d] + after)
    waiting = [len(set(ds)) for ds in deps]
    ready = [(level[i], kinds[i], i) for i in range(len(bindings)) if waiting[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, i = heapq.heappop(ready)
        order.append(bindings[i])
        for user in set(users[i]):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, (level[user], kinds[user], user))
    return order


@tvm.transform.module_pass(opt_level=0, name="OrderForOverlap")
class OrderForOverlap:
    def __init__(self, func_name: str = "main"):
        self.func_name = func_name

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod[self.func_name]
        vdevices = mod.global_infos.get("vdevice", []) if mod.global_infos else []
        host = vdevices[0] if len(vdevices) else None
        blocks = []
        for block in func.body.blocks:
            if isinstance(block, relax.DataflowBlock):
                block = relax.DataflowBlock(order_bindings(list(block.bindings), host,
                                                           lambda binding: _light_kernel(binding, mod)))
            blocks.append(block)
        return replace_function(mod, self.func_name, func.params, blocks, dict(func.attrs) if func.attrs else {})
