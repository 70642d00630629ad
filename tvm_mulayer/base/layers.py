"""Which bindings of a Relax function are *layers*: the ops whose output channels can be split.

A layer is an `nn.conv2d` (NCHW/OIHW, any groups) or a 2-D `matmul` (dense: ONNX Gemm or
MatMul) whose weight is a constant. Layers are named by op and order of appearance
(`conv2d_0`, `conv2d_1`, ..., `dense_0`), so the same module always gives the same names;
the ONNX node name, when known, is carried as `source`. Convolutions the split pass
cannot divide (other layouts, conv1d/3d, transposed) are layers too, marked
`splittable=False`, so plans and tables can say they run whole on one processor.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SPLITTABLE_CONV = "relax.nn.conv2d"
WHOLE_ONLY_CONVS = {
    "relax.nn.conv1d": "conv1d",
    "relax.nn.conv3d": "conv3d",
    "relax.nn.conv2d_transpose": "conv2d_transpose",
    "relax.nn.conv1d_transpose": "conv1d_transpose",
}


@dataclass(frozen=True)
class Layer:
    name: str
    op: str  # "conv2d", "dense", or the name of a conv the split pass leaves whole
    input_shape: tuple
    output_shape: tuple
    weight_shape: tuple
    groups: int = 1
    splittable: bool = True
    reason: str = ""  # why not splittable
    strides: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)
    dilation: tuple = (1, 1)
    dtype: str = "float32"

    @property
    def channels(self) -> int:
        """Output channels (filters), the dimension a split divides."""
        return int(self.output_shape[1])

    @property
    def units(self) -> int:
        """Indivisible split units: groups for a grouped conv, channels otherwise."""
        return self.groups if self.groups > 1 else self.channels

    @property
    def channels_per_unit(self) -> int:
        return self.channels // self.units

    def part(self, channels: int) -> "Layer":
        """The layer computing only `channels` of its output channels (one side of a split)."""
        units = channels // self.channels_per_unit
        in_channels = self.input_shape[1] // self.groups * units if self.groups > 1 else self.input_shape[1]
        if self.op == "dense":
            return dataclasses.replace(self, output_shape=(self.output_shape[0], channels),
                                       weight_shape=(self.weight_shape[0], channels))
        return dataclasses.replace(
            self, input_shape=(self.input_shape[0], in_channels, *self.input_shape[2:]),
            output_shape=(self.output_shape[0], channels, *self.output_shape[2:]),
            weight_shape=(channels, *self.weight_shape[1:]), groups=units if self.groups > 1 else 1)

    @property
    def row_extent(self) -> int:
        """Input rows one output row of a conv reads (its dilated kernel height)."""
        return self.dilation[0] * (int(self.weight_shape[2]) - 1) + 1

    def row_part(self, rows: int) -> "Layer":
        """The conv layer computing only `rows` of its output rows (one side of a height
        split, its halo included): the input rows those read, with the layer's padding."""
        in_rows = max(1, min(int(self.input_shape[2]),
                             (rows - 1) * self.strides[0] + self.row_extent - self.padding[0] - self.padding[2]))
        return dataclasses.replace(self, input_shape=(*self.input_shape[:2], in_rows, *self.input_shape[3:]),
                                   output_shape=(*self.output_shape[:2], rows, *self.output_shape[3:]))

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the whole layer."""
        out = 1
        for d in self.output_shape:
            out *= int(d)
        per_output = 1
        for d in self.weight_shape[1:] if self.op == "conv2d" else self.weight_shape[:1]:
            per_output *= int(d)
        return out * per_output


def is_tensor_constant(expr) -> bool:
    """A constant holding a tensor (not an integer or other immediate)."""
    from tvm import relax
    from tvm.ir import Constant

    return isinstance(expr, Constant) and isinstance(expr.ty, relax.TensorType)


def static_shape(expr) -> tuple | None:
    """The static shape of a Relax tensor expression, or None (not a tensor, or a dynamic shape)."""
    from tvm import relax

    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values)
    except (TypeError, AttributeError):
        return None


def _conv2d_layer(call, shapes: tuple) -> Layer:
    attrs = call.attrs
    layouts = (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout))
    groups = int(attrs.groups)
    geometry = {"strides": tuple(int(v) for v in attrs.strides), "padding": tuple(int(v) for v in attrs.padding),
                "dilation": tuple(int(v) for v in attrs.dilation), "dtype": str(call.args[0].ty.dtype)}
    if layouts != ("NCHW", "OIHW", "NCHW"):
        return Layer("", "conv2d", *shapes, groups, False,
                     f"layout {'/'.join(layouts)} (split needs NCHW/OIHW)", **geometry)
    return Layer("", "conv2d", *shapes, groups, **geometry)


def _layer_of(call) -> Layer | None:
    """The (still unnamed) layer a call is, or None when it is no layer."""
    import tvm
    from tvm import relax

    if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op) or len(call.args) < 2:
        return None
    op_name = call.op.name
    if op_name not in (SPLITTABLE_CONV, "relax.matmul", *WHOLE_ONLY_CONVS):
        return None
    if not is_tensor_constant(call.args[1]):
        return None  # weights computed at run time: an ordinary op, not a layer
    shapes = tuple(static_shape(e) for e in (call.args[0], call, call.args[1]))
    if None in shapes:
        return None
    if op_name == SPLITTABLE_CONV:
        return _conv2d_layer(call, shapes)
    if op_name == "relax.matmul":
        in_shape, _, w_shape = shapes
        return Layer("", "dense", *shapes) if len(in_shape) == 2 and len(w_shape) == 2 else None
    kind = WHOLE_ONLY_CONVS[op_name]
    return Layer("", kind, *shapes, int(getattr(call.attrs, "groups", 1)), False,
                 f"the split pass does not divide {kind}")


def layer_bindings(func) -> dict:
    """Map each layer's bound Var to its Layer, named in binding order."""
    found: dict = {}
    counters: dict[str, int] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            layer = _layer_of(binding.value)
            if layer is None:
                continue
            index = counters.get(layer.op, 0)
            counters[layer.op] = index + 1
            found[binding.var] = dataclasses.replace(layer, name=f"{layer.op}_{index}")
    return found


def layer_weights(func, bindings: dict | None = None) -> dict:
    """Layer name -> its weight array (the constant second argument)."""
    bindings = layer_bindings(func) if bindings is None else bindings
    return {bindings[b.var].name: b.value.args[1].value.numpy()
            for block in func.body.blocks for b in block.bindings if b.var in bindings}


def find_layers(func) -> list[Layer]:
    return list(layer_bindings(func).values())
