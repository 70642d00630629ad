"""SplitChannels: divide each layer's output channels between a CPU and a GPU vdevice.

IRModule -> IRModule. The `main` function must be pure dataflow with its weights bound as
constants (what `relax.frontend.onnx.from_onnx(..., keep_params_in_input=False)` followed
by `FoldConstant` gives). The pass declares two vdevices — index 0 the CPU, index 1 the
GPU — and rewrites `main` so that:

* each layer (see `tvm_mulayer.base.layers`) computes output channels [0, k) on the GPU and
  [k, C) on the CPU with sliced constant weights (a grouped convolution splits on group
  boundaries and reads only its groups' input channels; a whole placement is one part);
* per-channel ops after a layer (unary elementwise, pooling, binary ops with a constant or
  a same-shaped operand, LRN — whose channel window reads a halo of neighbour channels)
  run part by part where the parts already live, so the tensor stays split until an op
  needs all of it;
* a channel concat of split tensors just re-labels the parts (no data moves);
* any other op runs whole, on the processor that already holds most of its input bytes;
* data crosses processors only through `R.to_vdevice` (sliced first, so only the missing
  channels move), each transfer emitted once and reused;
* each slice computes in the precision the plan gives it (see `tvm_mulayer.base.quantization`):
  an int8 CPU slice quantizes its input to uint8 with the calibrated range, multiplies
  int8 weights into int32, adds an int32 bias and dequantizes to float32 with one scale
  per channel (an int8 conv on a CPU with a dot-product instruction reads its input channels
  zero-padded to whole groups of the instruction's depth, its weights padded with zeros:
  `slice_input_channels`); an fp16 GPU slice reads float16 input and weights and
  accumulates in float32.
  A conv's bias add (its only use) is folded into the slices so the int8 bias is int32;
* what crosses to a slice crosses in the form the slice reads — uint8 or float16,
  converted on the sending side — so a compact slice also makes the copy compact;
* inputs arrive on, and outputs are returned from, the CPU.

Weights stay constants here; `LiftWeights` turns them into device-resident parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as ops

from tvm_mulayer.base.errors import MulayerError
from tvm_mulayer.base.layers import is_tensor_constant, layer_bindings, static_shape
from tvm_mulayer.base.plan import Plan, make_plan
from tvm_mulayer.base.processors import resolve_processors
from tvm_mulayer.base.quantization import (
    FLOAT32_FORM, UINT8_MAX, Form, input_form, quantize_weights, weight_axis)
from tvm_mulayer.schedules.cpu.dot_intrin import slice_input_channels

from .module_form import require_split_form
from .row_chains import ROWS, Chains, analyze

CPU, GPU = 0, 1
DEVICE_INDEX = {"cpu": CPU, "gpu": GPU}

PER_CHANNEL_UNARY = {
    "relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.astype",
    "relax.nn.silu", "relax.nn.gelu", "relax.nn.leakyrelu", "relax.exp", "relax.sqrt",
    "relax.negative", "relax.abs",
}
POOLS = {"relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d"}
# Pools over a 5-D view whose depth axis is the channel axis: LRN as the ONNX importer
# writes it (x^2 -> expand_dims -> avg_pool3d over (size,1,1) -> squeeze). Each part reads
# a halo of neighbouring channels instead of needing the whole tensor.
CHANNEL_WINDOW_POOLS = {"relax.nn.avg_pool3d", "relax.nn.max_pool3d"}
RESHAPING = {"relax.expand_dims", "relax.squeeze"}
# Reductions over other axes than the channel one (GlobalAveragePool imports as mean over H, W)
REDUCTIONS = {"relax.mean", "relax.sum", "relax.max", "relax.min"}
BINARY = {
    "relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.power",
    "relax.maximum", "relax.minimum",
}


@dataclass(frozen=True)
class Part:
    """Positions [lo, hi) along its value's split axis (channels or rows), held by `expr`
    on device `dev`."""

    lo: int
    hi: int
    dev: int
    expr: relax.Expr


@dataclass(frozen=True)
class Value:
    """A rewritten value: a tensor partitioned along `axis` — channels (1), or rows (2) for
    the members of an operator chain, whose parts may overlap by a halo — one part when
    whole; or anything else (one part, not a tensor)."""

    parts: tuple
    axis: int = 1

    @property
    def extent(self) -> int:
        return max(part.hi for part in self.parts)


def _cover(parts: tuple, lo: int, hi: int, dev: int) -> list:
    """(part, first, end) pieces covering [lo, hi) of a value, taking what `dev` holds
    wherever it holds it (overlapping row parts: no copy for rows a processor computed too)."""
    pieces, at = [], lo
    while at < hi:
        holding = [part for part in parts if part.lo <= at < part.hi]
        local = [part for part in holding if part.dev == dev]
        part = max(local or holding, key=lambda p: p.hi)
        end = min(hi, part.hi)
        if not local:  # take the other device's rows only up to where dev's own begin
            end = min([end, *(q.lo for q in parts if q.dev == dev and at < q.lo)])
        pieces.append((part, at, end))
        at = end
    return pieces



def _nbytes(expr) -> int:
    shape = static_shape(expr)
    if shape is None:
        return 0
    return int(np.prod(shape, dtype=np.int64)) * tvm.runtime.DataType(expr.ty.dtype).bits // 8


def _channel_split_ok(expr) -> bool:
    shape = static_shape(expr)
    return shape is not None and len(shape) >= 2


def convert_to_form(expr, form: Form):
    if form.dtype == "float16":
        return ops.astype(expr, "float16")
    # relax.quantize would do, but its result type drops the vdevice (TVM 0.27)
    scaled = ops.add(ops.round(ops.divide(expr, relax.const(form.scale, "float32"))),
                     relax.const(float(form.zero_point), "float32"))
    return ops.astype(ops.clip(scaled, 0, UINT8_MAX), "uint8")


def _channel_vector(vector: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along axis 1 of a rank-`rank` tensor."""
    return np.ascontiguousarray(vector).reshape((1, -1) + (1,) * (rank - 2))


def slice_layer(call: relax.Call, layer, channels: int, x, weight: np.ndarray, bias, precision: str, form: Form,
                 padding):
    """One slice of a conv2d/dense layer computing `channels` output channels from input `x`
    (already in `form`, padded unless `padding` says; a conv's input channels zero-padded
    past the weights' where `slice_input_channels` says, the weights then padded with zeros
    to match) in `precision`, its bias included; float32 out (the layer's dtype for fp32)."""
    rank = 2 if layer.op == "dense" else 4
    if layer.op == "conv2d" and layer.groups == 1 and static_shape(x)[1] > weight.shape[1]:
        weight = np.pad(weight, ((0, 0), (0, static_shape(x)[1] - weight.shape[1]), (0, 0), (0, 0)))
    if precision == "int8":
        qweight, wscale = quantize_weights(weight, weight_axis(layer.op))
        out = _layer_call(call, layer, channels, x, relax.const(qweight), padding, "int32")
        # sum((q - zp) w) = sum(q w) - zp * sum(w): the zero point folds into the int32 bias
        offset = -form.zero_point * qweight.astype(np.int64).sum(axis=tuple(
            a for a in range(qweight.ndim) if a != weight_axis(layer.op)))
        scale = form.scale * wscale.astype(np.float64)
        if bias is not None:
            offset = offset + np.round(bias.astype(np.float64) / scale).astype(np.int64)
        if np.any(offset):
            out = ops.add(out, relax.const(_channel_vector(offset.astype(np.int32), rank)))
        return ops.multiply(ops.astype(out, "float32"),
                            relax.const(_channel_vector(scale.astype(np.float32), rank)))
    if precision == "fp16":
        out = _layer_call(call, layer, channels, x, relax.const(weight.astype(np.float16)), padding, "float32")
    else:
        out = _layer_call(call, layer, channels, x, relax.const(np.ascontiguousarray(weight)), padding,
                          call.attrs.out_dtype)
    if bias is not None:
        out = ops.add(out, relax.const(_channel_vector(bias.astype(str(call.ty.dtype)), rank)))
    return out


def _layer_call(call: relax.Call, layer, channels: int, x, weight, padding, out_dtype):
    if layer.op == "dense":
        return ops.matmul(x, weight, out_dtype=out_dtype)
    attrs = call.attrs
    return ops.nn.conv2d(
        x, weight, strides=attrs.strides, padding=padding, dilation=attrs.dilation,
        groups=channels // layer.channels_per_unit if layer.groups > 1 else 1, data_layout=attrs.data_layout,
        kernel_layout=attrs.kernel_layout, out_layout=attrs.out_layout, out_dtype=out_dtype,
    )


def _window_pool(call: relax.Call, x, padding: list):
    """`call` (max_pool2d / avg_pool2d) on input rows `x` with `padding`."""
    attrs = call.attrs
    common = dict(pool_size=attrs.pool_size, strides=attrs.strides, padding=padding, dilation=attrs.dilation,
                  ceil_mode=attrs.ceil_mode, layout=attrs.layout, out_layout=attrs.out_layout)
    if call.op.name == "relax.nn.avg_pool2d":
        return ops.nn.avg_pool2d(x, count_include_pad=attrs.count_include_pad, **common)
    return ops.nn.max_pool2d(x, **common)


def _folded_biases(func, layers: dict) -> dict:
    """layer var -> (var of its bias add, bias per channel) for each splittable layer whose
    only use is `add(layer, constant)` with one value per output channel (NCHW / [N, C])."""
    bindings = [b for block in func.body.blocks for b in block.bindings]
    uses: dict = {}
    for expr in [b.value for b in bindings] + [func.body.body]:
        for var in relax.analysis.free_vars(expr):
            uses[var] = uses.get(var, 0) + 1
    found = {}
    for binding in bindings:
        call = binding.value
        if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.add"):
            continue
        source, bias = call.args
        layer = layers.get(source)
        if layer is None or not layer.splittable or uses.get(source) != 1 or not is_tensor_constant(bias):
            continue
        data = bias.value.numpy()
        rank = len(layer.output_shape)
        padded = (1,) * (rank - data.ndim) + data.shape
        if (len(padded) == rank and padded[1] == layer.channels
                and all(d == 1 for axis, d in enumerate(padded) if axis != 1) and static_shape(call) == tuple(layer.output_shape) and bias.ty.dtype == call.ty.dtype):
            found[source] = (binding.var, data.reshape(-1))
    return found


class _Rewriter:
    def __init__(self, bb: relax.BlockBuilder, plan: Plan, vdevices: list, biases: dict, chains: Chains):
        self.bb = bb
        self.plan = plan
        self.vdevices = vdevices
        self.biases = biases  # layer var -> (its bias add's var, bias per channel)
        self.folded = {add_var: layer_var for layer_var, (add_var, _) in biases.items()}
        self.chains = chains
        self.env: dict = {}
        self.cache: dict = {}

    # ---- moving data -------------------------------------------------------------
    def _emit_cached(self, key, make):
        if key not in self.cache:
            self.cache[key] = self.bb.emit(make())
        return self.cache[key]

    def whole(self, value: Value, dev: int, form: Form = FLOAT32_FORM):
        return self.gather(value, 0, value.extent, dev, form)

    def gather(self, value: Value, lo: int, hi: int, dev: int, form: Form = FLOAT32_FORM, axis: int | None = None):
        """Positions [lo, hi) along `axis` (default: the axis `value` is split along) of
        `value` as one tensor in `form` on `dev` (slices, conversions on the holding device —
        before any copy, so copies carry the compact form —, copies, concat)."""
        if axis is not None and axis != value.axis:
            whole = self.gather(value, 0, value.extent, dev, form)
            return self._emit_cached(("slice", whole, axis, lo, hi),
                                     lambda: ops.strided_slice(whole, axes=[axis], begin=[lo], end=[hi]))
        pieces = []
        for part, a, b in _cover(value.parts, lo, hi, dev):
            expr = part.expr
            if (a, b) != (part.lo, part.hi):
                expr = self._emit_cached(
                    ("slice", part.expr, value.axis, a - part.lo, b - part.lo),
                    lambda e=expr, s=a - part.lo, t=b - part.lo: ops.strided_slice(
                        e, axes=[value.axis], begin=[s], end=[t]),
                )
            if form != FLOAT32_FORM:
                expr = self._emit_cached(("convert", expr, form), lambda e=expr: convert_to_form(e, form))
            if part.dev != dev:
                expr = self._emit_cached(
                    ("move", expr, dev), lambda e=expr: ops.to_vdevice(e, self.vdevices[dev])
                )
            pieces.append(expr)
        if len(pieces) == 1:
            return pieces[0]
        return self._emit_cached(("concat", tuple(pieces)), lambda: ops.concat(pieces, axis=value.axis))

    def _home(self, args) -> int:
        """The device holding most bytes of the tensor values among `args`."""
        held = [0, 0]
        for arg in args:
            for value in self._values_in(arg):
                for part in value.parts:
                    held[part.dev] += _nbytes(part.expr)
        return GPU if held[GPU] > held[CPU] else CPU

    def _values_in(self, arg):
        if isinstance(arg, relax.Var) and arg in self.env:
            yield self.env[arg]
        elif isinstance(arg, relax.Tuple):
            for field in arg.fields:
                yield from self._values_in(field)

    def _arg_on(self, arg, dev: int):
        if isinstance(arg, relax.Var) and arg in self.env:
            value = self.env[arg]
            if len(value.parts) == 1 and not _channel_split_ok(value.parts[0].expr):
                return value.parts[0].expr  # not a tensor (tuple, shape): used as it is
            return self.whole(value, dev)
        if isinstance(arg, relax.Tuple):
            return relax.Tuple([self._arg_on(f, dev) for f in arg.fields])
        return arg

    # ---- rewriting bindings ------------------------------------------------------
    def bind_input(self, var: relax.Var, new_var: relax.Var):
        channels = static_shape(new_var)[1] if _channel_split_ok(new_var) else 0
        self.env[var] = Value((Part(0, channels, CPU, new_var),))

    def visit(self, var: relax.Var, value: relax.Expr, layer):
        if isinstance(value, relax.Var) and value in self.env:
            self.env[var] = self.env[value]
            return
        if var in self.folded:  # a bias add the layer's slices already did
            self.env[var] = self.env[self.folded[var]]
            return
        if var in self.chains.members:
            self.env[var] = self._chain_member(var, value, layer)
            return
        if layer is not None:
            bias = self.biases.get(var, (None, None))[1]
            self.env[var] = self._layer(value, self.plan[layer.name], layer, bias)
            return
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            rewritten = self._per_channel(value)
            if rewritten is not None:
                self.env[var] = rewritten
                return
        self.env[var] = self._whole_op(value)

    def _layer(self, call: relax.Call, layer_plan, layer, bias) -> Value:
        """A layer split by channels, or whole on one processor."""
        data = self.env[call.args[0]]
        ranges = layer_plan.parts() if layer_plan.dim == "channel" else [
            (0, layer.channels, processor) for processor in ("gpu", "cpu") if layer_plan.on(processor)]
        parts = []
        for lo, hi, processor in ranges:
            dev = DEVICE_INDEX[processor]
            if not layer.splittable:
                out = relax.Call(call.op, [self.whole(data, dev), call.args[1]], call.attrs, call.ty_args)
                parts.append(Part(lo, hi, dev, self.bb.emit(out)))
                continue
            form = input_form(layer_plan.precision(processor), layer_plan.input_range)
            if layer.op != "dense" and layer.groups > 1:
                per_group_in = layer.input_shape[1] // layer.groups
                g0, g1 = lo // layer.channels_per_unit, hi // layer.channels_per_unit
                x = self.gather(data, g0 * per_group_in, g1 * per_group_in, dev, form, axis=1)
            else:
                x = self.whole(data, dev, form)
            padding = None if layer.op == "dense" else [int(p) for p in call.attrs.padding]
            parts.append(Part(lo, hi, dev, self._slice(call, layer_plan, layer, bias, processor, (lo, hi), x, padding)))
        return Value(tuple(parts))

    def _slice(self, call, layer_plan, layer, bias, processor: str, channels: tuple, x, padding):
        """The bound slice of `layer` computing output `channels` [lo, hi) on `processor` in
        its precision from `x` (already in the slice's input form) with `padding`."""
        lo, hi = channels
        dev = DEVICE_INDEX[processor]
        precision = layer_plan.precision(processor)
        form = input_form(precision, layer_plan.input_range)
        weight = np.take(call.args[1].value.numpy(), range(lo, hi), axis=weight_axis(layer.op))
        extra = slice_input_channels(layer, precision, self.vdevices[dev].target) - layer.input_shape[1]
        if extra or (form.zero_point and any(padding or [])):
            x, padding = self._pad(x, padding, form.zero_point, dev, extra), [0, 0, 0, 0]
        out = slice_layer(call, layer, hi - lo, x, weight, None if bias is None else bias[lo:hi], precision, form,
                          padding)
        return self.bb.emit(out)

    def _chain_member(self, var, call: relax.Call, layer) -> Value:
        """A member of an operator chain: on each processor, the output rows the chain needs
        there (`row_chains`), from input rows that processor holds — inside the chain — or
        gathers (at the chain's entry)."""
        window, _ = self.chains.windows[var]
        axis = self.chains.axes[var]
        parts = []
        for dev in (GPU, CPU):
            if dev not in self.chains.rows[var]:
                continue
            lo, hi = self.chains.rows[var][dev]
            processor = "gpu" if dev == GPU else "cpu"
            if window is not None:
                first, end, top, bottom = window.input_rows(lo, hi)
                left, right = int(call.attrs.padding[1]), int(call.attrs.padding[3])
                if layer is not None:
                    layer_plan = self.plan[layer.name]
                    form = input_form(layer_plan.precision(processor), layer_plan.input_range)
                    x = self.gather(self.env[call.args[0]], first, end, dev, form, axis=ROWS)
                    bias = self.biases.get(var, (None, None))[1]
                    expr = self._slice(call, layer_plan, layer, bias, processor, (0, layer.channels), x,
                                       [top, left, bottom, right])
                else:
                    x = self.gather(self.env[call.args[0]], first, end, dev, axis=ROWS)
                    expr = self.bb.emit(_window_pool(call, x, [top, left, bottom, right]))
            else:
                expr = self.bb.emit(relax.Call(call.op, self._rows_of(call, lo, hi, dev, axis), call.attrs,
                                               call.ty_args))
            if static_shape(expr)[axis] != hi - lo:
                raise RuntimeError(f"SplitChannels: {call.op.name} on rows [{lo}, {hi}) gave {static_shape(expr)[axis]} "
                                   "rows (a row map of row_chains is wrong)")
            parts.append(Part(lo, hi, dev, expr))
        return Value(tuple(parts), axis)

    def _rows_of(self, call: relax.Call, lo: int, hi: int, dev: int, axis: int) -> list:
        """The arguments of a row-keeping op for its output rows [lo, hi) (on `axis`) on
        `dev`: chain tensors' rows there (on their own row axis), constants' rows where they
        have every row (right-aligned with the output)."""
        out_rank = len(static_shape(call))

        def rows(arg):
            if isinstance(arg, relax.Tuple):
                return relax.Tuple([rows(field) for field in arg.fields])
            if isinstance(arg, relax.Var) and arg in self.env:
                return self.gather(self.env[arg], lo, hi, dev)
            shape = static_shape(arg)
            const_axis = axis - (out_rank - len(shape)) if shape is not None else -1
            if is_tensor_constant(arg) and const_axis >= 0 and shape[const_axis] == static_shape(call)[axis] > 1:
                return relax.const(np.ascontiguousarray(np.take(arg.value.numpy(), range(lo, hi), axis=const_axis)))
            return arg
        return [rows(arg) for arg in call.args]

    def _pad(self, x, padding, value: int, dev: int, channels: int = 0):
        """`x` padded with `value` — for uint8 data, the zero point is the quantized 0 —
        spatially by `padding` and by `channels` more channels at the end."""
        top, left, bottom, right = padding
        padded = self.bb.emit(ops.nn.pad(x, [0, 0, 0, channels, top, bottom, left, right], pad_value=float(value)))
        ty = padded.ty  # nn.pad's type inference drops the vdevice (TVM 0.27): restore it
        return self.bb.match_cast(padded, relax.TensorType(ty.shape, ty.dtype, self.vdevices[dev]))

    def _per_channel(self, call: relax.Call) -> Value | None:
        name = call.op.name
        if not call.args or not _channel_split_ok(call):
            return None
        first = call.args[0]
        if name == "relax.concat":
            return self._concat(call)
        if not (isinstance(first, relax.Var) and first in self.env and _channel_split_ok(first)):
            return None
        value = self.env[first]
        same_args = lambda part: [part.expr, *call.args[1:]]  # noqa: E731
        if name in PER_CHANNEL_UNARY:
            return self._partwise(value, same_args, call)
        if name in POOLS and value.axis == 1 and (str(call.attrs.layout), str(call.attrs.out_layout)) == ("NCHW", "NCHW"):
            return self._partwise(value, same_args, call)
        if name in BINARY and len(call.args) == 2:
            return self._binary(value, call)
        if name in RESHAPING:
            return self._reshaping(value, call)
        if name in REDUCTIONS:
            return self._reduction(value, call)
        if name in CHANNEL_WINDOW_POOLS and value.axis == 2 and str(call.attrs.layout) == "NCDHW":
            return self._channel_window_pool(value, call)
        return None

    def _partwise(self, value: Value, make_args, call, axis: int | None = None) -> Value:
        parts = []
        for part in value.parts:
            new = relax.Call(call.op, make_args(part), call.attrs, call.ty_args)
            parts.append(Part(part.lo, part.hi, part.dev, self.bb.emit(new)))
        if len(parts) == 1:  # a whole tensor: its channels are axis 1, as _whole_op labels them
            expr = parts[0].expr
            return Value((Part(0, static_shape(expr)[1] if _channel_split_ok(expr) else 0, parts[0].dev, expr),))
        return Value(tuple(parts), value.axis if axis is None else axis)

    def _reshaping(self, value: Value, call: relax.Call) -> Value | None:
        """expand_dims/squeeze that keep the channel axis: the axis index moves."""
        if call.attrs.axis is None:
            return None
        in_rank, out_rank = len(static_shape(call.args[0])), len(static_shape(call))
        if call.op.name == "relax.expand_dims":
            inserted = sorted(int(a) % out_rank for a in call.attrs.axis)
            axis = value.axis
            for a in inserted:
                if a <= axis:
                    axis += 1
        else:
            removed = {int(a) % in_rank for a in call.attrs.axis}
            if value.axis in removed:
                return None
            axis = value.axis - sum(1 for a in removed if a < value.axis)
        return self._partwise(value, lambda part: [part.expr], call, axis)

    def _reduction(self, value: Value, call: relax.Call) -> Value | None:
        if call.attrs.axis is None:
            return None  # reduces every axis, the channel one too
        rank = len(static_shape(call.args[0]))
        axes = {int(a) % rank for a in call.attrs.axis}
        if value.axis in axes:
            return None
        axis = value.axis if call.attrs.keepdims else value.axis - sum(1 for a in axes if a < value.axis)
        return self._partwise(value, lambda part: [part.expr], call, axis)

    def _channel_window_pool(self, value: Value, call: relax.Call) -> Value | None:
        attrs = call.attrs
        size, stride, dilation = int(attrs.pool_size[0]), int(attrs.strides[0]), int(attrs.dilation[0])
        pad = [int(p) for p in attrs.padding]
        if stride != 1 or dilation != 1 or static_shape(call)[2] != value.extent:
            return None
        parts = []
        for part in value.parts:
            # output channel c reads input channels [c - pad[0], c - pad[0] + size)
            want_lo, want_hi = part.lo - pad[0], part.hi - pad[0] + size - 1
            lo, hi = max(0, want_lo), min(value.extent, want_hi)
            x = self.gather(value, lo, hi, part.dev)
            pool = ops.nn.avg_pool3d if call.op.name == "relax.nn.avg_pool3d" else ops.nn.max_pool3d
            extra = {"count_include_pad": attrs.count_include_pad} if call.op.name == "relax.nn.avg_pool3d" else {}
            new = pool(x, pool_size=attrs.pool_size, strides=attrs.strides, dilation=attrs.dilation,
                       padding=[lo - want_lo, pad[1], pad[2], want_hi - hi, pad[4], pad[5]],
                       ceil_mode=attrs.ceil_mode, layout=attrs.layout, out_layout=attrs.out_layout, **extra)
            parts.append(Part(part.lo, part.hi, part.dev, self.bb.emit(new)))
        return Value(tuple(parts), value.axis)

    def _binary(self, value: Value, call: relax.Call) -> Value | None:
        lhs, rhs = call.args
        out_shape = static_shape(call)
        channels = out_shape[value.axis]
        if static_shape(lhs) != out_shape:
            return None  # lhs is broadcast: channel positions differ from the output's
        if is_tensor_constant(rhs):
            data = rhs.value.numpy()
            axis = value.axis - (len(out_shape) - data.ndim)  # channel axis of the constant, right-aligned
            if axis >= 0 and data.shape[axis] == channels and channels > 1:
                take = lambda p: relax.const(np.ascontiguousarray(np.take(data, range(p.lo, p.hi), axis=axis)))
            elif axis < 0 or data.shape[axis] == 1:
                take = lambda p: rhs
            else:
                return None
            return self._partwise(value, lambda p: [p.expr, take(p)], call)
        if (isinstance(rhs, relax.Var) and rhs in self.env and static_shape(rhs) == out_shape
                and self.env[rhs].axis == value.axis):  # parts along another axis would not line up
            other = self.env[rhs]
            return self._partwise(value, lambda p: [p.expr, self.gather(other, p.lo, p.hi, p.dev, axis=value.axis)],
                                  call)
        return None

    def _concat(self, call: relax.Call) -> Value | None:
        fields = call.args[0]
        if not isinstance(fields, relax.Tuple):
            return None
        axis = int(call.attrs.axis) % len(static_shape(call))
        parts, offset = [], 0
        for field in fields.fields:
            if not (isinstance(field, relax.Var) and field in self.env and _channel_split_ok(field)):
                return None
            if self.env[field].axis != axis:
                return None
            for part in self.env[field].parts:
                parts.append(Part(part.lo + offset, part.hi + offset, part.dev, part.expr))
            offset += static_shape(field)[axis]
        return Value(tuple(parts), axis)

    def _whole_op(self, value: relax.Expr) -> Value:
        if isinstance(value, relax.Call):
            dev = self._home(value.args)
            # call_tir (the ONNX importer emits some, e.g. Clip with min/max inputs) declares its
            # output type itself: give it the device, or the result has none.
            ty_args = [relax.TensorType(t.shape, t.dtype, self.vdevices[dev])
                       if isinstance(t, relax.TensorType) and t.vdevice is None and t.shape is not None else t
                       for t in value.ty_args]
            new = relax.Call(value.op, [self._arg_on(a, dev) for a in value.args], value.attrs, ty_args)
        elif isinstance(value, relax.Tuple):
            dev = self._home(value.fields)
            new = relax.Tuple([self._arg_on(f, dev) for f in value.fields])
        elif isinstance(value, relax.TupleGetItem):
            # a field lives where the op that made the tuple ran (_home counts no tuple's bytes)
            held = self.env.get(value.tuple_value)
            dev = held.parts[0].dev if held is not None else self._home([value.tuple_value])
            new = relax.TupleGetItem(self._arg_on(value.tuple_value, dev), value.index)
        else:
            dev, new = CPU, value
        expr = self.bb.emit(new)
        channels = static_shape(expr)[1] if _channel_split_ok(expr) else 0
        return Value((Part(0, channels, dev, expr),))

    def output(self, expr):
        """The function result, whole, on the CPU."""
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self.output(f) for f in expr.fields])
        return self._arg_on(expr, CPU)


def _chains(func, layers: dict, biases: dict, plan: Plan) -> Chains:
    return analyze(func, layers, plan, {add_var: layer_var for layer_var, (add_var, _) in biases.items()})


class ChainRecorder:
    """`record_chains` for many plans of one function (the partitioner's chain search): the
    layers and folded biases, which do not depend on the plan, found once."""

    def __init__(self, func):
        self.func = func
        self.layers = layer_bindings(func)
        self.biases = _folded_biases(func, self.layers)

    def __call__(self, plan: Plan) -> Chains:
        chains = _chains(self.func, self.layers, self.biases, plan)
        for var, layer in self.layers.items():
            layer_plan = plan[layer.name]
            layer_plan.chain = chains.members.get(var, "")
            layer_plan.halo_rows = chains.halo(var, layer_plan.gpu_rows)
        return chains


def record_chains(func, plan: Plan) -> Chains:
    """The operator chains SplitChannels forms in `func` under `plan`, written into the plan:
    each height-split layer's chain and halo rows."""
    return ChainRecorder(func)(plan)


@tvm.transform.module_pass(opt_level=0, name="SplitChannels")
class SplitChannels:
    """Rewrite `main` to run each layer per `plan` on vdevices [cpu_target, gpu_target]; the
    plan it applies gets each layer's operator chain and halo rows.

    `plan`: a Plan made from this module, or any split request `make_plan` takes — the GPU's
    share of every layer (a ratio in [0, 1]), 'cpu', 'gpu', a per-layer dict or a plan JSON
    file — resolved on the module's layers when the pass runs, its ratios rounded to
    `channel_multiple` (default: the multiple the two targets' kernels like, as `mulayer
    compile` rounds). The resolved Plan is `self.plan` afterwards."""

    def __init__(self, plan, cpu_target, gpu_target, func_name: str = "main", channel_multiple: int | None = None):
        self.split = plan
        self.plan = plan if isinstance(plan, Plan) else None
        self.cpu_target = tvm.target.Target(cpu_target) if not isinstance(cpu_target, tvm.target.Target) else cpu_target
        self.gpu_target = tvm.target.Target(gpu_target) if not isinstance(gpu_target, tvm.target.Target) else gpu_target
        self.func_name = func_name
        self.channel_multiple = channel_multiple

    def resolve_plan(self, layers: list) -> Plan:
        """The Plan of the split request on the module's `layers`."""
        if isinstance(self.split, Plan):
            return self.split
        multiple = self.channel_multiple
        if multiple is None:
            cpu, gpu = resolve_processors(dict(self.cpu_target.export()), dict(self.gpu_target.export()))
            multiple = max(cpu.channel_multiple, gpu.channel_multiple)
        return make_plan(layers, self.split, multiple)

    def vdevices(self) -> list:
        same_kind = self.cpu_target.kind.name == self.gpu_target.kind.name
        # Two devices of one kind (the emulated GPU) need distinct device ids.
        return [relax.VDevice(self.cpu_target, 0, "global"),
                relax.VDevice(self.gpu_target, 1 if same_kind else 0, "global")]

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = require_split_form(mod, self.func_name)
        recorder = ChainRecorder(func)
        layers = recorder.layers
        self.plan = self.resolve_plan(list(layers.values()))
        known = {layer.name for layer in layers.values()}
        planned = {lp.name for lp in self.plan.layers}
        if known != planned:
            raise MulayerError(f"SplitChannels: the plan's layers {sorted(planned ^ known)} do not match "
                               "the module's layers; make the plan from this module (or give a ratio)")
        vdevices = self.vdevices()
        bb = relax.BlockBuilder()
        # the chains also go into the plan (each layer's chain and halo rows), for its table
        rewriter = _Rewriter(bb, self.plan, vdevices, recorder.biases, recorder(self.plan))
        params = []
        for param in func.params:
            ty = param.ty
            if isinstance(ty, relax.TensorType):
                ty = relax.TensorType(ty.shape, ty.dtype, vdevices[CPU])
            params.append(relax.Var(param.name, ty))
        with bb.function(self.func_name, params, attrs=dict(func.attrs) if func.attrs else None, pure=True):
            for old, new in zip(func.params, params):
                rewriter.bind_input(old, new)
            with bb.dataflow():
                for block in func.body.blocks:
                    for binding in block.bindings:
                        rewriter.visit(binding.var, binding.value, layers.get(binding.var))
                result = bb.emit_output(rewriter.output(func.body.body))
            bb.emit_func_output(result)
        new_mod = mod.clone()
        new_mod.update_func(mod.get_global_var(self.func_name), bb.get()[self.func_name])
        new_mod.update_global_info("vdevice", vdevices)
        return relax.transform.DeadCodeElimination([self.func_name])(new_mod)
