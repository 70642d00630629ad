"""Operator chains of height-split layers (CoDL): which bindings each processor computes by
output rows, and which rows.

A height-split conv layer computes output rows [0, gpu_rows) on the GPU and the rest on the
CPU, each from the input rows its rows need. A *chain* is a height-split layer and the
bindings after it that can keep working on each processor's rows — row-local ops: per-element
and per-channel ops, pooling windows, an Add or channel Concat of tensors of the same chain,
and the next height-split layer when the chain continues through it (`Plan.chains`: "auto"
joins a layer with the same requested ratio, explicit lists join the layers they name,
False joins none). Inside a chain nothing crosses between the processors: walking back from
the chain's *exits* (members read outside the chain), each member computes on each
processor the rows its chain consumers there need, so earlier members compute extra rows —
the halo, ov_{i-1} = ov_i * S_i + K_i - S_i for a window of size K and stride S, clipped at
the tensor's edges. Exits compute their own split (GPU rows [0, ceil(H * ratio)), CPU the
rest, or the layer's gpu_rows), and their readers outside gather those rows from both.

`analyze(func, bindings, plan)` returns the `Chains` of `main`; SplitChannels rewrites the
members per processor from it, and the build records each layer's chain and halo in the
plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm
from tvm import relax

from tvm_mulayer.base.layers import is_tensor_constant, static_shape
from tvm_mulayer.base.plan import round_rows

ROWS = 2  # the row (height) axis of NCHW tensors
CPU, GPU = 0, 1

ELEMENTWISE = {
    "relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.astype", "relax.nn.silu",
    "relax.nn.gelu", "relax.nn.leakyrelu", "relax.exp", "relax.sqrt", "relax.negative", "relax.abs",
}
BINARY = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.power", "relax.maximum",
          "relax.minimum"}
WINDOW_POOLS = {"relax.nn.max_pool2d", "relax.nn.avg_pool2d"}
# LRN as TVM's ONNX importer writes it: x^2 -> expand_dims -> a pool3d whose window runs over
# the channels (the D axis of an NCDHW view) -> squeeze; rows move to axis 3 and back
CHANNEL_WINDOW_POOLS = {"relax.nn.avg_pool3d", "relax.nn.max_pool3d"}
RESHAPES = {"relax.expand_dims", "relax.squeeze"}


@dataclass(frozen=True)
class Window:
    """The rows a sliding window reads: output row r reads input rows
    [r * stride - pad_top, r * stride - pad_top + extent)."""

    extent: int  # dilation * (kernel - 1) + 1
    stride: int
    pad_top: int
    in_rows: int

    def input_rows(self, lo: int, hi: int) -> tuple:
        """(first, end) input rows that output rows [lo, hi) read, clipped to the tensor, and
        the (top, bottom) padding the clipped part stands for."""
        first, end = lo * self.stride - self.pad_top, (hi - 1) * self.stride - self.pad_top + self.extent
        return max(first, 0), min(end, self.in_rows), max(-first, 0), max(end - self.in_rows, 0)



def layer_window(layer) -> Window:
    """The row window of a conv `Layer`."""
    return Window(layer.row_extent, int(layer.strides[0]), int(layer.padding[0]), int(layer.input_shape[ROWS]))


def window_of(call: relax.Call, layer=None) -> Window | None:
    """The row window of a conv layer or a 2-D pooling call (NCHW), else None."""
    attrs = call.attrs
    in_shape = static_shape(call.args[0])
    if in_shape is None or len(in_shape) != 4:
        return None
    if layer is not None:
        return layer_window(layer)
    if str(attrs.layout) != "NCHW" or str(attrs.out_layout) != "NCHW":
        return None
    kernel = int(attrs.pool_size[0])
    return Window(int(attrs.dilation[0]) * (kernel - 1) + 1, int(attrs.strides[0]), int(attrs.padding[0]),
                  in_shape[ROWS])


def _out_axis(call: relax.Call, axis: int) -> int | None:
    """The row axis of `call`'s output when its input's row axis is `axis` and the call keeps
    every row where it was (None: the call moves, reduces or windows the rows)."""
    name = call.op.name
    in_rank, out_rank = len(static_shape(call.args[0]) or ()), len(static_shape(call) or ())
    if name == "relax.expand_dims" and call.attrs.axis is not None:
        for inserted in sorted(int(a) % out_rank for a in call.attrs.axis):
            axis += inserted <= axis
        return axis
    if name == "relax.squeeze" and call.attrs.axis is not None:
        removed = {int(a) % in_rank for a in call.attrs.axis}
        return None if axis in removed else axis - sum(1 for a in removed if a < axis)
    if name in CHANNEL_WINDOW_POOLS:  # LRN's window over channels (D of NCDHW): each row stays
        attrs, h = call.attrs, axis - 2
        keeps_rows = str(attrs.layout) == "NCDHW" and 0 <= h < 3 and int(attrs.pool_size[h]) == 1 and \
            int(attrs.strides[h]) == 1 and int(attrs.padding[h]) == 0 and int(attrs.padding[h + 3]) == 0
        return axis if keeps_rows and axis == 3 else None
    if name in ELEMENTWISE or name in BINARY or name == "relax.concat":
        return axis if in_rank == out_rank or name == "relax.concat" else None
    return None


def _row_local_inputs(call, args: list, members: dict, chain: str, axes: dict) -> tuple | None:
    """(tensor arguments, output row axis) of a per-element op, window pool, binary op,
    channel concat, LRN view or window (`args`: the call's, aliases resolved), when every
    non-constant argument is a member of `chain` with the same row axis (else None: the call
    is no member)."""
    name = call.op.name
    if name in WINDOW_POOLS or name in ELEMENTWISE or name in CHANNEL_WINDOW_POOLS or name in RESHAPES:
        args = args[:1]
    elif name in BINARY and len(args) == 2:
        pass
    elif not (name == "relax.concat" and isinstance(call.args[0], relax.Tuple)):
        return None
    in_axes = {axes[arg] for arg in args if isinstance(arg, relax.Var) and arg in axes}
    if len(in_axes) != 1:
        return None
    axis = in_axes.pop()
    out = static_shape(call)
    if out is None:
        return None
    if name in WINDOW_POOLS:
        out_axis = axis if axis == ROWS and len(out) == 4 else None
    elif name == "relax.concat":
        out_axis = axis if int(call.attrs.axis) % len(out) != axis else None
    else:
        out_axis = _out_axis(call, axis)
    if out_axis is None:
        return None
    tensors = []
    for arg in args:
        if is_tensor_constant(arg):
            shape = static_shape(arg)
            offset = len(out) - len(shape) if shape is not None else 0
            rows = shape[axis - offset] if shape is not None and axis - offset >= 0 else 1
            if rows not in (1, out[out_axis]):
                return None
            continue
        if not isinstance(arg, relax.Var) or members.get(arg) != chain:
            return None
        if name not in WINDOW_POOLS and static_shape(arg)[axis] != out[out_axis]:
            return None
        tensors.append(arg)
    return (tensors, out_axis) if tensors else None


@dataclass
class Chains:
    """The chains of a function: members (var -> chain id), each member's rows per device
    (var -> {device: (first, end)}), the exits, the windows of conv/pool members, and each
    chain's height-split layers."""

    members: dict = field(default_factory=dict)
    axes: dict = field(default_factory=dict)  # member var -> its row axis (2 for NCHW, 3 in LRN's view)
    rows: dict = field(default_factory=dict)
    exits: set = field(default_factory=set)
    windows: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)  # chain id -> [layer names]

    def halo(self, var, gpu_rows: int) -> list:
        """[GPU, CPU]: the rows of `var` each processor computes beyond its own share (the
        GPU's rows [0, gpu_rows), the CPU's the rest) — rows both compute."""
        rows = self.rows.get(var, {})
        return [max(0, rows[GPU][1] - gpu_rows) if GPU in rows else 0,
                max(0, gpu_rows - rows[CPU][0]) if CPU in rows else 0]


def _joins(plan, layer_plan, chain_head_plan) -> bool:
    if plan.chains is False:
        return False
    if plan.chains == "auto":
        return layer_plan.ratio == chain_head_plan.ratio
    return any(layer_plan.name in chain and chain_head_plan.name in chain for chain in plan.chains)


def analyze(func: relax.Function, bindings: dict, plan, aliases: dict | None = None) -> Chains:
    """The chains of `func` under `plan` (`bindings`: layer var -> Layer; `aliases`: var ->
    the var it stands for, such as a bias add folded into its layer)."""
    aliases = dict(aliases or {})
    chains = Chains()
    heads: dict = {}  # chain id -> plan of its first layer
    merged: dict = {}  # chain id -> the chain it merged into (branches joined by a concat or add)
    ratios: dict = {}  # member var -> GPU share of its exit split
    order, users = [], {}

    def chain_of(var):
        chain = chains.members.get(var)
        while chain in merged:
            chain = merged[chain]
        return chain

    for block in func.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if isinstance(value, relax.Var):
                aliases[var] = aliases.get(value, value)
            if var in aliases:
                continue
            for used in relax.analysis.free_vars(value):
                users.setdefault(aliases.get(used, used), []).append(var)
            call = value if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) else None
            if call is None:
                continue
            layer = bindings.get(var)
            if layer is not None:
                lp = plan[layer.name]
                if lp.dim != "height" or lp.placement != "split":
                    continue
                data = aliases.get(call.args[0], call.args[0])
                chain = chain_of(data)
                if chain is None or not _joins(plan, lp, heads[chain]):
                    chain = f"c{len(heads) + 1}"
                    heads[chain] = lp
                chains.members[var] = chain
                chains.axes[var] = ROWS
                chains.windows[var] = (window_of(call, layer), [data])
                ratios[var] = lp.gpu_rows / lp.rows
                order.append(var)
                continue
            inputs = [aliases.get(a, a) if isinstance(a, relax.Var) else a for a in _call_args(call)]
            found = list(dict.fromkeys(chain_of(a) for a in inputs if isinstance(a, relax.Var) and chain_of(a)))
            if not found or not all(_joins(plan, heads[other], heads[found[0]]) for other in found[1:]):
                continue
            members = {a: found[0] for a in inputs if isinstance(a, relax.Var) and chain_of(a)}
            resolved = _row_local_inputs(call, inputs, members, found[0], chains.axes)
            window = window_of(call) if call.op.name in WINDOW_POOLS else None
            if resolved is None or (call.op.name in WINDOW_POOLS and window is None):
                continue
            merged.update({other: found[0] for other in found[1:]})  # the branches are one chain now
            chains.members[var] = found[0]
            chains.axes[var] = resolved[1]
            chains.windows[var] = (window, resolved[0])
            ratios[var] = heads[found[0]].gpu_rows / heads[found[0]].rows
            order.append(var)
    names = {}  # chains numbered in order of appearance, after merging
    for var in order:
        chains.members[var] = names.setdefault(chain_of(var), f"c{len(names) + 1}")
        layer = bindings.get(var)
        if layer is not None:
            chains.layers.setdefault(chains.members[var], []).append(layer.name)
    outputs = {aliases.get(v, v) for v in relax.analysis.free_vars(func.body.body)}
    for var in order:
        if var in outputs or any(chains.members.get(user) != chains.members[var] for user in users.get(var, [])):
            chains.exits.add(var)
    for var in reversed(order):
        rows = chains.rows.setdefault(var, {})
        if var in chains.exits:
            height = static_shape(var)[chains.axes[var]]
            layer = bindings.get(var)
            split = plan[layer.name].gpu_rows if layer is not None else round_rows(height, ratios[var])
            _widen(rows, GPU, (0, split))
            _widen(rows, CPU, (split, height))
        window, inputs = chains.windows[var]
        for device, (lo, hi) in list(rows.items()):
            if lo >= hi:
                continue
            needed = (lo, hi) if window is None else window.input_rows(lo, hi)[:2]
            for source in inputs:
                if chains.members.get(source) == chains.members[var]:
                    _widen(chains.rows.setdefault(source, {}), device, needed)
    return chains


def _call_args(call: relax.Call) -> list:
    if call.op.name == "relax.concat" and isinstance(call.args[0], relax.Tuple):
        return list(call.args[0].fields)
    return list(call.args)


def _widen(rows: dict, device: int, span: tuple) -> None:
    """Extend `device`'s rows to cover `span` (an empty span adds nothing)."""
    lo, hi = span
    if lo >= hi:
        return
    if device in rows:
        lo, hi = min(lo, rows[device][0]), max(hi, rows[device][1])
    rows[device] = (lo, hi)
