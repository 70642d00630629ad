"""Random small CNNs as ONNX graphs, and random split plans for them (hypothesis strategies).

Shared by `tests/test_fuzz.py` (a fixed, derandomized seed set in CI) and `scripts/fuzz.py`
(the long mode). A case is an ONNX model (opset 13, input `x` of shape 1xCxHxW, H, W <= 20)
built from blocks — plain/grouped/depthwise convolutions with any kernel 1/3/5/7, stride
1/2 and padding (group counts the plan's split need not divide), pools, Relu/Clip,
BatchNormalization, LRN, residual Adds or Sums (Caffe2's), ShuffleNet's channel shuffle
(Reshape/Transpose/Reshape), transposed convolutions, nearest or linear Resize, Inception-
and Fire-like branches joined by a channel Concat — with an optional GlobalAveragePool or
Flatten+Gemm head, and a plan: a global ratio (0 and 1 included), a placement word, or a
per-layer dict splitting layers by channel or by rows (height), with operator chains "auto",
off or listed. `check_case` compiles it with tvm_mulayer on the emulated two-device machine
and compares every output with onnxruntime's float32 result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
CHANNELS = [1, 2, 3, 4, 5, 7, 8, 11, 13, 16, 17]
RATIOS = [0.0, 1.0, 0.5, 0.25, 0.73, 0.1, 0.9]
TOLERANCE = 1e-4

# Known bugs the generator steers around unless asked not to (so that the long mode finds
# new ones); each has an xfail(strict=True) regression test in tests/test_fuzz.py. Empty now:
# "strided-unpadded-conv" (schedules/cpu/conv2d.py Conv2d rule raises "Could not find buffer
# 'pad_temp'") compiles since schedules skip a raising rule; its xfail tests the rule itself.
KNOWN_BUGS: set = set()


class _Builder:
    """Appends ONNX nodes; tracks (name, channels, height, width) of the current tensor."""

    def __init__(self, draw, seed: int, avoid: frozenset = frozenset()):
        self.draw = draw
        self.avoid = avoid
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.counter = 0
        self.ops: list = []  # short description, for reports
        self.convs = 0
        self.gemms = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def shape_const(self, dims: list) -> str:
        name = self.fresh("shape")
        self.inits.append(numpy_helper.from_array(np.asarray(dims, dtype=np.int64), name))
        return name

    def node(self, op: str, inputs: list, **attrs) -> str:
        out = self.fresh(op.lower() + "_")
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    # ---- layers ------------------------------------------------------------------
    def conv(self, t, out_c=None, kernel=None, stride=None, pad=None, groups=None, bias=None):
        name, c, h, w = t
        d = self.draw
        if groups is None:
            kind = d(st.sampled_from(["plain", "plain", "grouped", "depthwise"]))
            if kind == "depthwise":
                groups = c
                out_c = c * d(st.sampled_from([1, 1, 2])) if out_c is None else out_c
                if out_c % c:
                    groups = 1
            elif kind == "grouped":
                divisors = [g for g in range(2, c + 1) if c % g == 0]
                groups = d(st.sampled_from(divisors)) if divisors else 1
                if out_c is None:
                    out_c = groups * d(st.sampled_from([1, 2, 3]))
                elif out_c % groups:
                    groups = 1
            else:
                groups = 1
        if out_c is None:
            out_c = d(st.sampled_from(CHANNELS))
        free = kernel is None  # a free-form conv may also get dilation and asymmetric padding
        if kernel is None:
            kernel = d(st.sampled_from([1, 3, 5, 7]))
        if stride is None:
            stride = d(st.sampled_from([1, 1, 2]))
        if pad is None:
            pad = d(st.integers(0, kernel // 2))
        if h + 2 * pad < kernel or w + 2 * pad < kernel:  # keep the output non-empty
            pad = kernel // 2
            if h + 2 * pad < kernel or w + 2 * pad < kernel:
                kernel, pad = 1, 0
        if "strided-unpadded-conv" in self.avoid and stride > 1 and pad == 0 and not groups == c == out_c > 1:
            pad = 1
        dilation, extra = 1, [0, 0]
        if free and kernel > 1 and d(st.integers(0, 3)) == 0:
            dilation = 2
        if free and d(st.integers(0, 3)) == 0:
            extra = [d(st.integers(0, 1)), d(st.integers(0, 1))]  # more padding at the bottom/right
        span = dilation * (kernel - 1) + 1
        if h + 2 * pad + extra[0] < span or w + 2 * pad + extra[1] < span:
            dilation, span = 1, kernel
        if bias is None:
            bias = d(st.booleans())
        fan_in = (c // groups) * kernel * kernel
        weight = self.rng.standard_normal((out_c, c // groups, kernel, kernel)) / np.sqrt(fan_in)
        inputs = [name, self.const(weight)]
        if bias:
            inputs.append(self.const(self.rng.standard_normal(out_c) * 0.1, "b"))
        out = self.node("Conv", inputs, kernel_shape=[kernel, kernel], strides=[stride, stride],
                        pads=[pad, pad, pad + extra[0], pad + extra[1]], group=groups, dilations=[dilation] * 2)
        self.convs += 1
        self.ops.append(f"conv{kernel}x{kernel}/s{stride}p{pad}{'+' + str(extra) if any(extra) else ''}"
                        f"{'d' + str(dilation) if dilation > 1 else ''}g{groups}:{c}->{out_c}")
        oh, ow = (h + 2 * pad + extra[0] - span) // stride + 1, (w + 2 * pad + extra[1] - span) // stride + 1
        return out, out_c, oh, ow

    def activation(self, t):
        name, c, h, w = t
        if self.draw(st.booleans()):
            self.ops.append("relu")
            return self.node("Relu", [name]), c, h, w
        lo, hi = self.draw(st.sampled_from([(0.0, 6.0), (-0.5, 0.5), (0.0, 1.0)]))
        self.ops.append(f"clip{lo:g},{hi:g}")
        return self.node("Clip", [name, self.const(np.float32(lo), "lo"), self.const(np.float32(hi), "hi")]), c, h, w

    def batchnorm(self, t):
        name, c, h, w = t
        r = self.rng
        args = [name, self.const(r.uniform(0.5, 1.5, c), "s"), self.const(r.standard_normal(c) * 0.1, "bb"),
                self.const(r.standard_normal(c) * 0.1, "m"), self.const(r.uniform(0.5, 1.5, c), "v")]
        self.ops.append("bn")
        return self.node("BatchNormalization", args, epsilon=1e-5), c, h, w

    def lrn(self, t):
        name, c, h, w = t
        size = self.draw(st.sampled_from([1, 3, 5]))
        alpha = self.draw(st.sampled_from([1e-4, 1e-2, 0.5]))
        self.ops.append(f"lrn{size}")
        return self.node("LRN", [name], size=size, alpha=alpha, beta=0.75, bias=self.draw(st.sampled_from([1.0, 2.0]))), c, h, w

    def pool(self, t):
        name, c, h, w = t
        d = self.draw
        op = d(st.sampled_from(["MaxPool", "AveragePool"]))
        kernel = d(st.sampled_from([2, 3]))
        stride = d(st.sampled_from([1, 2]))
        pad = d(st.integers(0, kernel // 2))
        if h + 2 * pad < kernel or w + 2 * pad < kernel:
            return t
        attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": [pad] * 4}
        if op == "AveragePool":
            attrs["count_include_pad"] = d(st.sampled_from([0, 1]))
        ceil = stride > 1 and d(st.integers(0, 3)) == 0
        if ceil:
            attrs["ceil_mode"] = 1
        self.ops.append(f"{op}{kernel}/s{stride}p{pad}{'c' if ceil else ''}")

        def size(n):
            if not ceil:
                return (n + 2 * pad - kernel) // stride + 1
            out = -(-(n + 2 * pad - kernel) // stride) + 1
            return out - 1 if (out - 1) * stride >= n + pad else out  # the last window starts inside

        oh, ow = size(h), size(w)
        return self.node(op, [name], **attrs), c, oh, ow

    # ---- blocks ------------------------------------------------------------------
    def residual(self, t):
        name, c, h, w = t
        k = self.draw(st.sampled_from([1, 3, 5]))
        y = self.conv(t, out_c=c, kernel=k, stride=1, pad=k // 2, groups=1)
        y = self.activation(y)
        k2 = self.draw(st.sampled_from([1, 3]))
        groups = c if self.draw(st.booleans()) else 1  # depthwise second conv sometimes
        y = self.conv(y, out_c=c, kernel=k2, stride=1, pad=k2 // 2, groups=groups)
        op = self.draw(st.sampled_from(["Add", "Add", "Sum"]))  # Sum: TVM imports it as stack + sum
        self.ops.append(op.lower())
        return self.node(op, [name, y[0]]), c, h, w

    def shuffle(self, t):
        """ShuffleNet's channel shuffle as exported: Reshape to (groups, C/groups), swap, back."""
        name, c, h, w = t
        divisors = [g for g in range(2, c) if c % g == 0]
        if not divisors:
            return t
        groups = self.draw(st.sampled_from(divisors))
        split = self.node("Reshape", [name, self.shape_const([1, groups, c // groups, h, w])])
        swapped = self.node("Transpose", [split], perm=[0, 2, 1, 3, 4])
        self.ops.append(f"shuffle{groups}")
        return self.node("Reshape", [swapped, self.shape_const([1, c, h, w])]), c, h, w

    def deconv(self, t):
        """A transposed convolution (a layer the split runs whole)."""
        name, c, h, w = t
        d = self.draw
        kernel, stride = d(st.sampled_from([1, 2, 3, 4])), d(st.sampled_from([1, 2]))
        stride = stride if max(h, w) <= 20 else 1  # keep the maps small (cases compile in seconds)
        pad, out_pad = d(st.integers(0, (kernel - 1) // 2)), d(st.integers(0, stride - 1))
        out_c = d(st.sampled_from(CHANNELS))
        weight = self.rng.standard_normal((c, out_c, kernel, kernel)) * stride / np.sqrt(c * kernel * kernel)
        inputs = [name, self.const(weight)]
        if d(st.booleans()):
            inputs.append(self.const(self.rng.standard_normal(out_c) * 0.1, "b"))
        self.ops.append(f"deconv{kernel}x{kernel}/s{stride}p{pad}o{out_pad}:{c}->{out_c}")
        size = lambda n: (n - 1) * stride - 2 * pad + kernel + out_pad  # noqa: E731
        out = self.node("ConvTranspose", inputs, kernel_shape=[kernel, kernel], strides=[stride, stride],
                        pads=[pad] * 4, output_padding=[out_pad] * 2)
        return out, out_c, size(h), size(w)

    def resize(self, t):
        """Upsampling by 2 as PyTorch exports interpolate: nearest, or bilinear (half-pixel)."""
        name, c, h, w = t
        if max(h, w) > 20:  # keep the maps small (cases compile in seconds)
            return t
        scales = self.const(np.array([1, 1, 2, 2]), "scales")
        if self.draw(st.booleans()):
            self.ops.append("resize-nearest")
            out = self.node("Resize", [name, "", scales], mode="nearest", coordinate_transformation_mode="asymmetric",
                            nearest_mode="floor")
        else:
            self.ops.append("resize-linear")
            out = self.node("Resize", [name, "", scales], mode="linear", coordinate_transformation_mode="half_pixel")
        return out, c, 2 * h, 2 * w

    def inception(self, t):
        name, c, h, w = t
        branches = []
        for kind in self.draw(st.lists(st.sampled_from(["1x1", "3x3", "5x5", "pool", "identity"]),
                                       min_size=2, max_size=4)):
            if kind == "1x1":
                b = self.conv(t, kernel=1, stride=1, pad=0, groups=1)
            elif kind in ("3x3", "5x5"):
                k = int(kind[0])
                b = self.conv(t, kernel=1, stride=1, pad=0, groups=1)
                b = self.activation(b)
                b = self.conv(b, kernel=k, stride=1, pad=k // 2, groups=1)
            elif kind == "pool":
                p = self.node("MaxPool", [name], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
                b = self.conv((p, c, h, w), kernel=1, stride=1, pad=0, groups=1)
            else:
                b = t
            branches.append(b)
        self.ops.append("concat")
        out = self.node("Concat", [b[0] for b in branches], axis=1)
        return out, sum(b[1] for b in branches), h, w

    def fire(self, t):
        s = self.conv(t, kernel=1, stride=1, pad=0, groups=1, bias=True)
        s = self.activation(s)
        e1 = self.activation(self.conv(s, kernel=1, stride=1, pad=0, groups=1, bias=True))
        e3 = self.activation(self.conv(s, kernel=3, stride=1, pad=1, groups=1, bias=True))
        self.ops.append("fire-concat")
        return self.node("Concat", [e1[0], e3[0]], axis=1), e1[1] + e3[1], t[2], t[3]

    def head(self, t):
        name, c, h, w = t
        kind = self.draw(st.sampled_from(["none", "gap", "gemm", "gap-gemm"]))
        if kind in ("gap", "gap-gemm"):
            self.ops.append("gap")
            name, h, w = self.node("GlobalAveragePool", [name]), 1, 1
        if kind in ("gemm", "gap-gemm") and c * h * w <= 4096:
            flat = self.node("Flatten", [name], axis=1)
            features = c * h * w
            units = self.draw(st.sampled_from([1, 3, 10, 17]))
            trans_b = self.draw(st.sampled_from([0, 1]))
            weight = self.rng.standard_normal((features, units)) / np.sqrt(features)
            inputs = [flat, self.const(weight.T if trans_b else weight)]
            if self.draw(st.booleans()):
                inputs.append(self.const(self.rng.standard_normal(units) * 0.1, "b"))
            self.gemms += 1
            self.ops.append(f"gemm{features}->{units}")
            return self.node("Gemm", inputs, transB=trans_b), units, None, None
        return name, c, h, w


BLOCKS = ["conv", "conv", "act", "pool", "bn", "lrn", "residual", "inception", "fire", "conv-bn-act", "shuffle",
          "deconv", "resize"]


@dataclass
class Case:
    model: onnx.ModelProto
    plan: object  # a ratio, "cpu"/"gpu", or a per-layer dict
    input: np.ndarray
    ops: list = field(default_factory=list)
    convs: int = 0
    gemms: int = 0

    def describe(self) -> str:
        return f"{list(self.input.shape)} {' '.join(self.ops)} | plan {json.dumps(self.plan)}"


@st.composite
def cnn_models(draw, avoid_known: bool = True):
    """(ModelProto, builder) of a random small CNN (steering around KNOWN_BUGS unless told not to)."""
    c = draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8]))
    h = draw(st.integers(3, 20))
    w = draw(st.integers(3, 20))
    builder = _Builder(draw, draw(st.integers(0, 2**31 - 1)), frozenset(KNOWN_BUGS) if avoid_known else frozenset())
    t = ("x", c, h, w)
    blocks = draw(st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=5))
    if not {"conv", "residual", "inception", "fire", "conv-bn-act", "deconv"} & set(blocks) and draw(st.integers(0, 4)):
        blocks.insert(0, "conv")  # mostly at least one layer (a model with none runs whole)
    extra_outputs = []
    for block in blocks:
        if block == "conv":
            t = builder.conv(t)
        elif block == "conv-bn-act":
            t = builder.activation(builder.batchnorm(builder.conv(t)))
        elif block == "act":
            t = builder.activation(t)
        elif block == "pool":
            t = builder.pool(t)
        elif block == "bn":
            t = builder.batchnorm(t)
        elif block == "lrn":
            t = builder.lrn(t)
        else:
            t = getattr(builder, block)(t)
        if t[0] != "x" and draw(st.integers(0, 9)) == 0:
            extra_outputs.append(t)  # an intermediate tensor is an output too
    t = builder.head(t)
    outputs = []
    for name, oc, oh, ow in [t, *extra_outputs]:
        if name == "x" or name in [o.name for o in outputs]:
            continue
        shape = [1, oc] if oh is None else [1, oc, oh, ow]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(builder.nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              outputs, builder.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, builder


def ratios():
    return st.one_of(st.sampled_from(RATIOS), st.floats(0.0, 1.0, allow_nan=False))


def model_layers(model: onnx.ModelProto) -> tuple:
    """(our layer names, layer name -> ONNX node name) as tvm_mulayer sees the model.

    Not simply the ONNX Conv/Gemm count: e.g. TVM's FoldBatchnormToConv2D duplicates a conv
    whose output is also a graph output (one copy folded with the BN, one plain)."""
    from tvm_mulayer.compiler.frontend import import_onnx
    from tvm_mulayer.base.layers import find_layers

    mod, info = import_onnx(model)
    return [layer.name for layer in find_layers(mod["main"])], info.sources


@st.composite
def plans(draw, names: list, sources: dict | None = None, row_splits: bool = True):
    sources = sources or {}
    kind = draw(st.sampled_from(["global", "global", "word", "per-layer", "per-layer"]))
    if kind == "global":
        return draw(ratios())
    if kind == "word":
        return draw(st.sampled_from(["cpu", "gpu"]))
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))) if names else []
    layers = {}
    for name in chosen:
        form = draw(st.sampled_from(["ratio", "placement", "entry", "height"] if row_splits
                                    else ["ratio", "placement", "entry"]))
        if form == "ratio":
            entry = draw(ratios())
        elif form == "placement":
            entry = {"placement": draw(st.sampled_from(["cpu", "gpu"]))}
        else:
            entry = {"ratio": draw(ratios())}
            if form == "height":  # split by output rows (dense layers: by channel, with a note)
                entry["dim"] = "height"
        key = sources[name] if sources.get(name) and draw(st.booleans()) else name  # by ONNX node name
        layers[key] = entry
    plan = {"layers": layers}
    if len(chosen) < len(names) or draw(st.booleans()):
        plan["default_ratio"] = draw(ratios())
    if not row_splits:
        return plan
    if draw(st.booleans()):
        plan["default_dim"] = draw(st.sampled_from(["channel", "height"]))
    plan["chains"] = draw(st.one_of(st.just("auto"), st.just(False),
                                    st.lists(st.lists(st.sampled_from(names), min_size=1, unique=True), max_size=3)
                                    if names else st.just("auto")))
    return plan


@st.composite
def cases(draw, avoid_known: bool = True, row_splits: bool = True):
    model, builder = draw(cnn_models(avoid_known))
    names, sources = model_layers(model)
    plan = draw(plans(names, sources, row_splits))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(draw(st.integers(0, 2**31 - 1))).standard_normal(shape).astype("float32")
    return Case(model, plan, x, builder.ops, builder.convs, builder.gemms)


# ---- checking --------------------------------------------------------------------------
def ort_outputs(model: onnx.ModelProto, inputs: dict) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def relative_error(actual, expected, scale: float | None = None) -> float:
    """max |a - e| / max(scale, 1e-2) in float64, scale max |e| unless given (inf when shapes
    differ or a NaN appears).

    The floor: an output whose largest value is tiny is a cancellation (seen: GAP -> Gemm
    4->1 giving -0.00147 from terms ~0.1; TVM and onnxruntime differ by 1.4e-7 at every
    ratio, 0 and 1 included, i.e. float32 summation order); it is held to 1e-6 absolute."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape or np.isnan(actual).any() != np.isnan(expected).any():
        return float("inf")
    if actual.size == 0:
        return 0.0
    scale = float(np.max(np.abs(expected))) if scale is None else scale
    return float(np.max(np.abs(actual - expected)) / max(scale, 1e-2))


def run_case(model: onnx.ModelProto, plan, x: np.ndarray, precision: str = "fp32", calib=None) -> dict:
    """Output name -> relative error against onnxruntime (raises what compile/run raise)."""
    import tvm_mulayer

    expected = ort_outputs(model, {"x": x})
    executable = tvm_mulayer.compile(model, cpu="host", gpu="emulated", split=plan, precision=precision, calib=calib)
    actual = executable.run({"x": x})
    assert list(actual) == list(expected), f"outputs {list(actual)} != {list(expected)}"
    return {name: relative_error(actual[name], expected[name]) for name in expected}


TYPICAL_INPUTS = 8


def quantized_errors(model: onnx.ModelProto, plan, x: np.ndarray, calib) -> dict:
    """Output name -> max |native - onnxruntime| on `x`, relative to the output's typical
    magnitude: its largest value over `x` and TYPICAL_INPUTS more seeded standard-normal
    inputs (as the cases draw theirs).

    int8 rounds each dot product's terms, so its error scales with the terms' magnitudes,
    not with the result: where a network's one output cancels (found: conv1x1 1->3, Gemm
    528->1 gave -0.026 where the same network gives ~0.6 typically; int8 was 0.007 off,
    5e-4 of the terms' sum), relative to the result is 27% for a correct int8 answer."""
    import tvm_mulayer

    expected = ort_outputs(model, {"x": x})
    rng = np.random.default_rng(0)
    typical = {name: float(np.max(np.abs(value))) for name, value in expected.items()}
    for _ in range(TYPICAL_INPUTS):
        other = ort_outputs(model, {"x": rng.standard_normal(x.shape).astype("float32")})
        typical = {name: max(typical[name], float(np.max(np.abs(value)))) for name, value in other.items()}
    executable = tvm_mulayer.compile(model, cpu="host", gpu="emulated", split=plan, precision="native", calib=calib)
    actual = executable.run({"x": x})
    assert list(actual) == list(expected), f"outputs {list(actual)} != {list(expected)}"
    return {name: relative_error(actual[name], want, typical[name]) for name, want in expected.items()}


def check_case(case: Case) -> None:
    errors = run_case(case.model, case.plan, case.input)
    bad = {name: err for name, err in errors.items() if not err < TOLERANCE}
    assert not bad, f"mismatch {bad} for {case.describe()}"


def save_case(directory: Path, model: onnx.ModelProto, plan, x: np.ndarray, message: str = "") -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    (directory / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    np.save(directory / "x.npy", x)
    if message:
        (directory / "error.txt").write_text(message)
    return directory


def load_case(directory: Path) -> tuple:
    directory = Path(directory)
    return (onnx.load(str(directory / "model.onnx")), json.loads((directory / "plan.json").read_text()),
            np.load(directory / "x.npy"))
