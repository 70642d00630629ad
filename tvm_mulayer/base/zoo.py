"""Model zoo: the µLayer CNN set, built in-process with ``onnx.helper``.

Every model is batch 1, NCHW float32, opset 13, with seeded random weights
(no downloads).  The graph input is ``input`` of shape ``[1, 3, S, S]`` and the
graph output is ``logits`` of shape ``[1, num_classes]``.  Every node and every
initializer has a readable, unique name (Caffe-style: ``conv1``,
``inception_3a/3x3_reduce``, ``fire2/squeeze1x1``, ``conv5_3/dw`` ...;
initializers are ``<node>.weight``, ``<node>.bias``, ``<bn>.scale``,
``<bn>.mean``, ``<bn>.var``).

Weights are He/Kaiming-normal (``std = sqrt(2 / fan_in)`` for layers followed
by ReLU, ``sqrt(1 / fan_in)`` for the classifier), biases small, and
BatchNormalization statistics random but sane (``var`` in [0.5, 1.5]), so that
activations stay O(1) through the whole network for a standard-normal input.

This module only needs numpy and onnx (no TVM).

    >>> from tvm_mulayer.base import zoo
    >>> model = zoo.build("googlenet", **zoo.small("googlenet"))
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["NAMES", "MORE_NAMES", "ALL_NAMES", "build", "small", "describe", "min_image_size",
           "default_image_size"]

# The µLayer set: what the profiler measures by default and most tests sweep.
NAMES: Tuple[str, ...] = ("vgg16", "alexnet", "googlenet", "squeezenet1_1", "mobilenet_v1")
# Later classifiers and the dense-prediction networks CoDL evaluated; tests/test_models.py
# sweeps them (their full sweeps are in the full tier: a profile or test over ALL_NAMES takes
# several times as long as one over NAMES).
MORE_NAMES: Tuple[str, ...] = ("resnet18", "resnet50", "densenet121", "shufflenet_v1", "shufflenet_v2",
                               "mobilenet_v2", "inception_v3", "yolov2", "fast_style_transfer", "posenet")
ALL_NAMES: Tuple[str, ...] = NAMES + MORE_NAMES

OPSET = 13
IR_VERSION = 8  # enough for opset 13; keeps the models loadable by older runtimes
DEFAULT_IMAGE_SIZE = 224
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class _TooSmall(Exception):
    """Raised internally while tracing shapes when a layer has no valid output."""


class _BadSize(Exception):
    """Raised internally while tracing shapes when the image size does not suit the model
    (e.g. YOLOv2's passthrough needs an even 1/16 feature map)."""


def _pair(value) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class _Net:
    """Tiny graph builder that tracks shapes and (optionally) creates weights.

    With ``rng=None`` it is a dry run: only shapes are traced (used to find the
    minimum image size without generating any weights).
    """

    MAXPOOL_RMS_GAIN = 1.4  # measured 1.2-1.6 (2.25 right after the first conv)
    AVGPOOL_RMS_GAIN = 0.95  # measured 0.9-1.0 (Inception-v3, DenseNet-121)
    # BatchNormalization with var ~ U(0.5, 1.5), scale ~ U(0.75, 1.25): E[scale^2 / var] =
    # 1.021 * ln 3 = 1.12, a gain of 1.058 per BN that compounds over 50-120 BNs.
    BN_RMS_GAIN = 1.058
    # ReLU after a residual Add whose shortcut is itself a ReLU output (non-negative) keeps
    # more than half the energy: measured 0.9 (ResNet-50, ShuffleNet v1) against 1/sqrt(2).
    RESIDUAL_RELU_RMS_GAIN = 0.9

    def __init__(self, width: float, rng: Optional[np.random.Generator], bn_gain: float = 1.0):
        self.width = width
        self.rng = rng
        self.bn_gain = bn_gain
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[Tuple[str, np.ndarray]] = []
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        # Rough estimate of each tensor's RMS for a standard-normal input; the
        # weights of every conv/FC are divided by their input's estimate so
        # that the activations stay O(1) instead of drifting with depth.
        self.rms: Dict[str, float] = {}
        self.names: set = set()
        # Each tensor's stride relative to the input (the largest is the network's total).
        self.stride: Dict[str, int] = {}

    # -- helpers --------------------------------------------------------
    def ch(self, c: int) -> int:
        """Scale a channel count by ``width`` (round half up, at least 1)."""
        return max(1, int(math.floor(c * self.width + 0.5)))

    def _node(self, op: str, inputs: Sequence[str], name: str, out: Optional[str] = None,
              outs: Optional[Sequence[str]] = None, **attrs):
        if name in self.names:
            raise AssertionError(f"duplicate node name {name!r}")
        self.names.add(name)
        out = out or name
        self.nodes.append(helper.make_node(op, list(inputs), list(outs or [out]), name=name, **attrs))
        for result in outs or [out]:
            self.stride[result] = max((self.stride.get(i, 1) for i in inputs), default=1)
        return out

    @property
    def total_stride(self) -> int:
        return max(self.stride.values(), default=1)

    def _init(self, name: str, arr_fn: Callable[[np.random.Generator], np.ndarray]) -> str:
        if name in self.names:
            raise AssertionError(f"duplicate initializer name {name!r}")
        self.names.add(name)
        if self.rng is not None:
            value = np.asarray(arr_fn(self.rng))
            self.inits.append((name, np.ascontiguousarray(value, dtype=np.int64 if value.dtype.kind == "i" else np.float32)))
        return name

    def _normal(self, shape, std):
        return lambda rng: rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def _uniform(self, shape, lo, hi):
        return lambda rng: rng.uniform(lo, hi, size=shape).astype(np.float32)

    @staticmethod
    def _out(h: int, k: int, s: int, p: int, what: str, d: int = 1) -> int:
        span = d * (k - 1) + 1
        if h + 2 * p < span:
            raise _TooSmall(f"{what}: input {h} + 2*pad {p} < kernel {span}")
        return (h + 2 * p - span) // s + 1

    @staticmethod
    def _taps(h: int, k: int, s: int, p: int, d: int = 1) -> float:
        """Mean number of the ``k`` kernel taps (one dimension, dilation ``d``) that land
        inside the input."""
        n_out = max(1, (h + 2 * p - d * (k - 1) - 1) // s + 1)
        inside = sum(1 for o in range(n_out) for j in range(k) if 0 <= o * s - p + j * d < h)
        return max(1.0, inside / n_out)

    # -- layers -----------------------------------------------------------
    def input(self, size: int) -> str:
        self.shapes[INPUT_NAME] = (3, size, size)
        self.rms[INPUT_NAME] = 1.0
        self.names.add(INPUT_NAME)
        return INPUT_NAME

    def conv(self, x, name, cout, k, s=1, p=0, group=1, bias=True, gain=2.0, dilation=1):
        """Conv with kernel ``k`` and padding ``p`` (an int, or (height, width) for the
        asymmetric 1x7 / 7x1 kernels of Inception-v3); ``group=-1``: depthwise."""
        cin, h, w = self.shapes[x]
        if group == -1:  # depthwise
            group = cin
            cout = cin
        assert cin % group == 0 and cout % group == 0, (name, cin, cout, group)
        (kh, kw), (ph, pw) = _pair(k), _pair(p)
        # Effective fan-in: on small feature maps many taps of a padded kernel
        # fall on the zero padding, which would otherwise shrink the output.
        fan_in = (cin // group) * self._taps(h, kh, s, ph, dilation) * self._taps(w, kw, s, pw, dilation)
        std = math.sqrt(gain / fan_in) / self.rms[x]
        wname = self._init(f"{name}.weight", self._normal((cout, cin // group, kh, kw), std))
        ins = [x, wname]
        if bias:
            ins.append(self._init(f"{name}.bias", self._normal((cout,), 0.05)))
        attrs = dict(kernel_shape=[kh, kw], strides=[s, s], pads=[ph, pw, ph, pw])
        if group != 1:
            attrs["group"] = group
        if dilation != 1:
            attrs["dilations"] = [dilation, dilation]
        out = self._node("Conv", ins, name, **attrs)
        self.shapes[out] = (cout, self._out(h, kh, s, ph, name, dilation), self._out(w, kw, s, pw, name, dilation))
        self.rms[out] = math.sqrt(gain)
        self.stride[out] *= s
        return out

    def conv_transpose(self, x, name, cout, k, s, p, output_padding=0):
        """A transposed (fractionally strided) conv: ``s`` times the input size."""
        cin, h, w = self.shapes[x]
        # Each output sees about k*k/(s*s) taps of each input channel.
        std = math.sqrt(2.0 * s * s / (cin * k * k)) / self.rms[x]
        ins = [x, self._init(f"{name}.weight", self._normal((cin, cout, k, k), std)),
               self._init(f"{name}.bias", self._normal((cout,), 0.05))]
        out = self._node("ConvTranspose", ins, name, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                         output_padding=[output_padding] * 2)
        size = lambda n: (n - 1) * s - 2 * p + k + output_padding  # noqa: E731
        self.shapes[out] = (cout, size(h), size(w))
        self.rms[out] = math.sqrt(2.0)
        self.stride[out] = max(1, self.stride[out] // s)
        return out

    def bn(self, x, name, eps=1e-5):
        c = self.shapes[x][0]
        ins = [
            x,
            self._init(f"{name}.scale", self._uniform((c,), 0.75, 1.25)),
            self._init(f"{name}.bias", self._normal((c,), 0.1)),
            self._init(f"{name}.mean", self._normal((c,), 0.1)),
            self._init(f"{name}.var", self._uniform((c,), 0.5, 1.5)),
        ]
        out = self._node("BatchNormalization", ins, name, epsilon=eps)
        self.shapes[out] = self.shapes[x]
        self.rms[out] = self.rms[x] * self.bn_gain
        return out

    def relu(self, x, name, gain=1 / math.sqrt(2.0)):
        out = self._node("Relu", [x], name)
        self.shapes[out] = self.shapes[x]
        self.rms[out] = self.rms[x] * gain
        return out

    def maxpool(self, x, name, k, s, p=0):
        c, h, w = self.shapes[x]
        out = self._node("MaxPool", [x], name, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])
        self.shapes[out] = (c, self._out(h, k, s, p, name), self._out(w, k, s, p, name))
        self.rms[out] = self.rms[x] * self.MAXPOOL_RMS_GAIN
        self.stride[out] *= s
        return out

    def lrn(self, x, name, size=5, alpha=1e-4, beta=0.75, bias=1.0):
        out = self._node("LRN", [x], name, size=size, alpha=alpha, beta=beta, bias=bias)
        self.shapes[out] = self.shapes[x]
        self.rms[out] = self.rms[x] / bias**beta
        return out

    def concat(self, xs, name):
        shapes = [self.shapes[x] for x in xs]
        assert all(s[1:] == shapes[0][1:] for s in shapes), (name, shapes)
        out = self._node("Concat", xs, name, axis=1)
        self.shapes[out] = (sum(s[0] for s in shapes),) + shapes[0][1:]
        self.rms[out] = math.sqrt(sum(s[0] * self.rms[x] ** 2 for s, x in zip(shapes, xs)) / self.shapes[out][0])
        return out

    def gap(self, x, name):
        c = self.shapes[x][0]
        out = self._node("GlobalAveragePool", [x], name)
        self.shapes[out] = (c, 1, 1)
        self.rms[out] = self.rms[x]
        return out

    def flatten(self, x, name):
        out = self._node("Flatten", [x], name, axis=1)
        self.shapes[out] = (int(np.prod(self.shapes[x])),)
        self.rms[out] = self.rms[x]
        return out

    def gemm(self, x, name, nout, gain=2.0, out=None):
        (fan_in,) = self.shapes[x]
        ins = [
            x,
            self._init(f"{name}.weight", self._normal((nout, fan_in), math.sqrt(gain / fan_in) / self.rms[x])),
            self._init(f"{name}.bias", self._normal((nout,), 0.05)),
        ]
        out = self._node("Gemm", ins, name, out=out, transB=1)
        self.shapes[out] = (nout,)
        self.rms[out] = math.sqrt(gain)
        return out

    def conv_relu(self, x, name, relu_name, cout, k, s=1, p=0):
        return self.relu(self.conv(x, name, cout, k, s, p), relu_name)

    def _same(self, x, out, gain=1.0):
        self.shapes[out] = self.shapes[x]
        self.rms[out] = self.rms[x] * gain
        return out

    def relu6(self, x, name):
        """ReLU6 as ONNX exports it: Clip with constant min 0 and max 6."""
        lo = self._init(f"{name}.min", lambda rng: np.float32(0.0))
        hi = self._init(f"{name}.max", lambda rng: np.float32(6.0))
        return self._same(x, self._node("Clip", [x, lo, hi], name), 1 / math.sqrt(2.0))

    def leaky_relu(self, x, name, alpha=0.1):
        return self._same(x, self._node("LeakyRelu", [x], name, alpha=alpha), math.sqrt((1 + alpha**2) / 2))

    def add(self, a, b, name):
        assert self.shapes[a] == self.shapes[b], (name, self.shapes[a], self.shapes[b])
        out = self._node("Add", [a, b], name)
        self.shapes[out] = self.shapes[a]
        self.rms[out] = math.hypot(self.rms[a], self.rms[b])
        return out

    def avgpool(self, x, name, k, s, p=0):
        c, h, w = self.shapes[x]
        out = self._node("AveragePool", [x], name, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p],
                         count_include_pad=1)
        self.shapes[out] = (c, self._out(h, k, s, p, name), self._out(w, k, s, p, name))
        self.rms[out] = self.rms[x] * self.AVGPOOL_RMS_GAIN
        self.stride[out] *= s
        return out

    def _shape_init(self, name, dims):
        return self._init(name, lambda rng: np.array(dims, dtype=np.int64))

    def channel_shuffle(self, x, name, groups):
        """ShuffleNet's shuffle as ONNX exports it: Reshape to (groups, C/groups), Transpose,
        Reshape back."""
        c, h, w = self.shapes[x]
        assert c % groups == 0, (name, c, groups)
        split = self._node("Reshape", [x, self._shape_init(f"{name}/split.shape", [1, groups, c // groups, h, w])],
                           f"{name}/split")
        swap = self._node("Transpose", [split], f"{name}/transpose", perm=[0, 2, 1, 3, 4])
        out = self._node("Reshape", [swap, self._shape_init(f"{name}.shape", [1, c, h, w])], name)
        return self._same(x, out)

    def split_channels(self, x, name, parts):
        """ONNX Split into ``parts`` equal channel slices (ShuffleNet v2's channel split)."""
        c, h, w = self.shapes[x]
        assert c % parts == 0, (name, c, parts)
        outs = [f"{name}:{i}" for i in range(parts)]
        self._node("Split", [x, self._shape_init(f"{name}.split", [c // parts] * parts)], name, outs=outs, axis=1)
        for out in outs:
            self.shapes[out] = (c // parts, h, w)
            self.rms[out] = self.rms[x]
        return outs

    def space_to_depth(self, x, name, block):
        c, h, w = self.shapes[x]
        if h % block or w % block:
            raise _BadSize(f"{name}: its {h}x{w} input is not divisible into {block}x{block} blocks")
        out = self._node("SpaceToDepth", [x], name, blocksize=block)
        self.shapes[out] = (c * block * block, h // block, w // block)
        self.rms[out] = self.rms[x]
        self.stride[out] *= block
        return out

    def instance_norm(self, x, name):
        c = self.shapes[x][0]
        ins = [x, self._init(f"{name}.scale", self._uniform((c,), 0.75, 1.25)),
               self._init(f"{name}.bias", self._normal((c,), 0.1))]
        out = self._node("InstanceNormalization", ins, name, epsilon=1e-5)
        self.shapes[out] = self.shapes[x]
        self.rms[out] = 1.0
        return out

    def reflect_pad(self, x, name, p):
        c, h, w = self.shapes[x]
        if p >= min(h, w):
            raise _TooSmall(f"{name}: reflection padding {p} needs an input larger than {h}x{w}")
        out = self._node("Pad", [x, self._shape_init(f"{name}.pads", [0, 0, p, p, 0, 0, p, p])], name, mode="reflect")
        self.shapes[out] = (c, h + 2 * p, w + 2 * p)
        self.rms[out] = self.rms[x]
        return out

    def upsample(self, x, name, scale):
        """Nearest-neighbour Resize by an integer ``scale``, as PyTorch exports interpolate."""
        c, h, w = self.shapes[x]
        scales = self._init(f"{name}.scales", lambda rng: np.array([1, 1, scale, scale], dtype=np.float32))
        out = self._node("Resize", [x, "", scales], name, mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        self.shapes[out] = (c, h * scale, w * scale)
        self.rms[out] = self.rms[x]
        self.stride[out] = max(1, self.stride[out] // scale)
        return out


# ---------------------------------------------------------------------------
# Architectures.  Each takes (net, image_size, num_classes) and returns the
# name of the logits tensor (always OUTPUT_NAME).
# ---------------------------------------------------------------------------

_VGG16_CFG = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


def _vgg16(n: _Net, size: int, num_classes: int) -> str:
    x = n.input(size)
    for stage, convs in enumerate(_VGG16_CFG, start=1):
        for i, c in enumerate(convs, start=1):
            x = n.conv_relu(x, f"conv{stage}_{i}", f"relu{stage}_{i}", n.ch(c), 3, 1, 1)
        x = n.maxpool(x, f"pool{stage}", 2, 2)
    x = n.flatten(x, "flatten")
    x = n.relu(n.gemm(x, "fc6", n.ch(4096)), "relu6")
    x = n.relu(n.gemm(x, "fc7", n.ch(4096)), "relu7")
    return n.gemm(x, "fc8", num_classes, gain=1.0, out=OUTPUT_NAME)


def _alexnet(n: _Net, size: int, num_classes: int) -> str:
    # torchvision channel counts / padding, LRN (k=2, n=5, alpha=1e-4, beta=0.75)
    # after conv1 and conv2 as in Krizhevsky et al. 2012.
    x = n.input(size)
    x = n.conv_relu(x, "conv1", "relu1", n.ch(64), 11, 4, 2)
    x = n.lrn(x, "norm1", bias=2.0)
    x = n.maxpool(x, "pool1", 3, 2)
    x = n.conv_relu(x, "conv2", "relu2", n.ch(192), 5, 1, 2)
    x = n.lrn(x, "norm2", bias=2.0)
    x = n.maxpool(x, "pool2", 3, 2)
    x = n.conv_relu(x, "conv3", "relu3", n.ch(384), 3, 1, 1)
    x = n.conv_relu(x, "conv4", "relu4", n.ch(256), 3, 1, 1)
    x = n.conv_relu(x, "conv5", "relu5", n.ch(256), 3, 1, 1)
    x = n.maxpool(x, "pool5", 3, 2)
    x = n.flatten(x, "flatten")
    x = n.relu(n.gemm(x, "fc6", n.ch(4096)), "relu6")
    x = n.relu(n.gemm(x, "fc7", n.ch(4096)), "relu7")
    return n.gemm(x, "fc8", num_classes, gain=1.0, out=OUTPUT_NAME)


# (1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj) -- Szegedy et al. 2015, Table 1
_INCEPTION_CFG = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _inception(n: _Net, x: str, tag: str) -> str:
    c1, c3r, c3, c5r, c5, cp = (n.ch(c) for c in _INCEPTION_CFG[tag])
    p = f"inception_{tag}"
    b1 = n.conv_relu(x, f"{p}/1x1", f"{p}/relu_1x1", c1, 1)
    b2 = n.conv_relu(x, f"{p}/3x3_reduce", f"{p}/relu_3x3_reduce", c3r, 1)
    b2 = n.conv_relu(b2, f"{p}/3x3", f"{p}/relu_3x3", c3, 3, 1, 1)
    b3 = n.conv_relu(x, f"{p}/5x5_reduce", f"{p}/relu_5x5_reduce", c5r, 1)
    b3 = n.conv_relu(b3, f"{p}/5x5", f"{p}/relu_5x5", c5, 5, 1, 2)
    b4 = n.maxpool(x, f"{p}/pool", 3, 1, 1)
    b4 = n.conv_relu(b4, f"{p}/pool_proj", f"{p}/relu_pool_proj", cp, 1)
    return n.concat([b1, b2, b3, b4], f"{p}/output")


def _googlenet(n: _Net, size: int, num_classes: int) -> str:
    # Caffe's ceil-mode 3x3/2 max pools are written as floor-mode pools with
    # pad 1, which gives the same sizes (224 -> 112 -> 56 -> 28 -> 14 -> 7).
    x = n.input(size)
    x = n.conv_relu(x, "conv1/7x7_s2", "conv1/relu_7x7", n.ch(64), 7, 2, 3)
    x = n.maxpool(x, "pool1/3x3_s2", 3, 2, 1)
    x = n.lrn(x, "pool1/norm1")
    x = n.conv_relu(x, "conv2/3x3_reduce", "conv2/relu_3x3_reduce", n.ch(64), 1)
    x = n.conv_relu(x, "conv2/3x3", "conv2/relu_3x3", n.ch(192), 3, 1, 1)
    x = n.lrn(x, "conv2/norm2")
    x = n.maxpool(x, "pool2/3x3_s2", 3, 2, 1)
    x = _inception(n, x, "3a")
    x = _inception(n, x, "3b")
    x = n.maxpool(x, "pool3/3x3_s2", 3, 2, 1)
    for tag in ("4a", "4b", "4c", "4d", "4e"):
        x = _inception(n, x, tag)
    x = n.maxpool(x, "pool4/3x3_s2", 3, 2, 1)
    x = _inception(n, x, "5a")
    x = _inception(n, x, "5b")
    x = n.gap(x, "pool5/7x7_s1")
    x = n.flatten(x, "flatten")
    return n.gemm(x, "loss3/classifier", num_classes, gain=1.0, out=OUTPUT_NAME)


# (squeeze1x1, expand1x1, expand3x3); max pools after conv1, fire3, fire5.
_FIRE_CFG = {
    2: (16, 64, 64),
    3: (16, 64, 64),
    4: (32, 128, 128),
    5: (32, 128, 128),
    6: (48, 192, 192),
    7: (48, 192, 192),
    8: (64, 256, 256),
    9: (64, 256, 256),
}


def _fire(n: _Net, x: str, idx: int) -> str:
    s, e1, e3 = (n.ch(c) for c in _FIRE_CFG[idx])
    p = f"fire{idx}"
    x = n.conv_relu(x, f"{p}/squeeze1x1", f"{p}/relu_squeeze1x1", s, 1)
    a = n.conv_relu(x, f"{p}/expand1x1", f"{p}/relu_expand1x1", e1, 1)
    b = n.conv_relu(x, f"{p}/expand3x3", f"{p}/relu_expand3x3", e3, 3, 1, 1)
    return n.concat([a, b], f"{p}/concat")


def _squeezenet1_1(n: _Net, size: int, num_classes: int) -> str:
    x = n.input(size)
    x = n.conv_relu(x, "conv1", "relu_conv1", n.ch(64), 3, 2, 0)
    x = n.maxpool(x, "pool1", 3, 2)
    x = _fire(n, x, 2)
    x = _fire(n, x, 3)
    x = n.maxpool(x, "pool3", 3, 2)
    x = _fire(n, x, 4)
    x = _fire(n, x, 5)
    x = n.maxpool(x, "pool5", 3, 2)
    for i in (6, 7, 8, 9):
        x = _fire(n, x, i)
    # conv10 maps straight to the classes (not scaled by width).
    x = n.conv_relu(x, "conv10", "relu_conv10", num_classes, 1)
    x = n.gap(x, "pool10")
    return n.flatten(x, OUTPUT_NAME)


# (block name, depthwise stride, pointwise out channels) -- Howard et al. 2017, Table 1
_MOBILENET_CFG = [
    ("conv2_1", 1, 64),
    ("conv2_2", 2, 128),
    ("conv3_1", 1, 128),
    ("conv3_2", 2, 256),
    ("conv4_1", 1, 256),
    ("conv4_2", 2, 512),
    ("conv5_1", 1, 512),
    ("conv5_2", 1, 512),
    ("conv5_3", 1, 512),
    ("conv5_4", 1, 512),
    ("conv5_5", 1, 512),
    ("conv5_6", 2, 1024),
    ("conv6", 1, 1024),
]


def _mobilenet_v1(n: _Net, size: int, num_classes: int) -> str:
    x = n.input(size)
    x = n.conv(x, "conv1", n.ch(32), 3, 2, 1, bias=False)
    x = n.relu(n.bn(x, "conv1/bn"), "conv1/relu")
    for blk, stride, cout in _MOBILENET_CFG:
        x = n.conv(x, f"{blk}/dw", None, 3, stride, 1, group=-1, bias=False)
        x = n.relu(n.bn(x, f"{blk}/dw/bn"), f"{blk}/dw/relu")
        x = n.conv(x, f"{blk}/sep", n.ch(cout), 1, bias=False)
        x = n.relu(n.bn(x, f"{blk}/sep/bn"), f"{blk}/sep/relu")
    x = n.gap(x, "pool6")
    x = n.flatten(x, "flatten")
    return n.gemm(x, "fc7", num_classes, gain=1.0, out=OUTPUT_NAME)


# ---------------------------------------------------------------------------
# Models of later papers (MORE_NAMES): residual, dense, shuffled, inverted-residual
# and factorised-kernel classifiers, and the dense-prediction networks CoDL
# evaluated (detection, style transfer, pose).  Layer names follow torchvision
# (``layer1.0.conv1``) or the original framework (Darknet's ``conv13``).
# ---------------------------------------------------------------------------


def _multiple(c: float, m: int) -> int:
    """``c`` rounded to a positive multiple of ``m`` (channel counts that groups or a
    channel split must divide)."""
    return m * max(1, int(math.floor(c / m + 0.5)))


def _classifier(n: _Net, x: str, num_classes: int) -> str:
    x = n.gap(x, "avgpool")
    x = n.flatten(x, "flatten")
    return n.gemm(x, "fc", num_classes, gain=1.0, out=OUTPUT_NAME)


def _conv_bn(n: _Net, x, name, cout, k, s=1, p=0, group=1, act="relu", bn_eps=1e-5, conv_name=None, bn_name=None):
    """conv (no bias) + BatchNormalization (+ activation ``act``: relu, relu6, leaky or None)."""
    x = n.conv(x, conv_name or f"{name}.conv", cout, k, s, p, group=group, bias=False)
    x = n.bn(x, bn_name or f"{name}.bn", eps=bn_eps)
    if act == "relu":
        return n.relu(x, f"{name}.relu")
    if act == "relu6":
        return n.relu6(x, f"{name}.relu6")
    if act == "leaky":
        return n.leaky_relu(x, f"{name}.leaky")
    return x


def _resnet_stem(n: _Net, size: int) -> str:
    x = n.input(size)
    x = n.conv(x, "conv1", n.ch(64), 7, 2, 3, bias=False)
    x = n.relu(n.bn(x, "bn1"), "relu")
    return n.maxpool(x, "maxpool", 3, 2, 1)


def _resnet_block(n: _Net, x: str, p: str, planes: int, stride: int, bottleneck: bool) -> str:
    """A basic (two 3x3) or bottleneck (1x1, 3x3 with the stride, 1x1 to 4x) block with its
    projection shortcut where the shape changes (torchvision's ResNet v1.5)."""
    cin = n.shapes[x][0]
    cout = 4 * planes if bottleneck else planes
    if bottleneck:
        y = _conv_bn(n, x, f"{p}.1", planes, 1, conv_name=f"{p}.conv1", bn_name=f"{p}.bn1")
        y = _conv_bn(n, y, f"{p}.2", planes, 3, stride, 1, conv_name=f"{p}.conv2", bn_name=f"{p}.bn2")
        y = _conv_bn(n, y, f"{p}.3", cout, 1, act=None, conv_name=f"{p}.conv3", bn_name=f"{p}.bn3")
    else:
        y = _conv_bn(n, x, f"{p}.1", planes, 3, stride, 1, conv_name=f"{p}.conv1", bn_name=f"{p}.bn1")
        y = _conv_bn(n, y, f"{p}.2", cout, 3, 1, 1, act=None, conv_name=f"{p}.conv2", bn_name=f"{p}.bn2")
    if stride != 1 or cin != cout:
        x = _conv_bn(n, x, f"{p}.downsample", cout, 1, stride, act=None,
                     conv_name=f"{p}.downsample.0", bn_name=f"{p}.downsample.1")
    return n.relu(n.add(y, x, f"{p}.add"), f"{p}.relu", gain=n.RESIDUAL_RELU_RMS_GAIN)


def _resnet(blocks: Sequence[int], bottleneck: bool):
    def build(n: _Net, size: int, num_classes: int) -> str:
        x = _resnet_stem(n, size)
        for stage, count in enumerate(blocks):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                x = _resnet_block(n, x, f"layer{stage + 1}.{i}", n.ch(64 * 2**stage), stride, bottleneck)
        return _classifier(n, x, num_classes)

    return build


_DENSENET121_BLOCKS = (6, 12, 24, 16)


def _densenet121(n: _Net, size: int, num_classes: int) -> str:
    # torchvision's DenseNet-121: growth 32, bottleneck 4 x growth, transitions halve the
    # channels; each dense layer concatenates every earlier feature map of its block (one
    # Concat of them all, as torchvision exports it) and runs BN-ReLU-conv1x1-BN-ReLU-conv3x3.
    growth = n.ch(32)
    x = n.input(size)
    x = n.conv(x, "features.conv0", n.ch(64), 7, 2, 3, bias=False)
    x = n.relu(n.bn(x, "features.norm0"), "features.relu0")
    x = n.maxpool(x, "features.pool0", 3, 2, 1)
    for b, count in enumerate(_DENSENET121_BLOCKS, start=1):
        features = [x]
        for i in range(1, count + 1):
            p = f"features.denseblock{b}.denselayer{i}"
            y = features[0] if len(features) == 1 else n.concat(features, f"{p}.concat")
            y = n.relu(n.bn(y, f"{p}.norm1"), f"{p}.relu1")
            y = n.conv(y, f"{p}.conv1", 4 * growth, 1, bias=False)
            y = n.relu(n.bn(y, f"{p}.norm2"), f"{p}.relu2")
            features.append(n.conv(y, f"{p}.conv2", growth, 3, 1, 1, bias=False))
        x = n.concat(features, f"features.denseblock{b}.concat")
        if b < len(_DENSENET121_BLOCKS):
            p = f"features.transition{b}"
            x = n.relu(n.bn(x, f"{p}.norm"), f"{p}.relu")
            x = n.conv(x, f"{p}.conv", n.shapes[x][0] // 2, 1, bias=False)
            x = n.avgpool(x, f"{p}.pool", 2, 2)
    x = n.relu(n.bn(x, "features.norm5"), "features.relu5")
    return _classifier(n, x, num_classes)


_SHUFFLENET_V1_GROUPS = 3
_SHUFFLENET_V1_STAGES = ((240, 4), (480, 8), (960, 4))  # g=3 column of Zhang et al. 2018, Table 1


def _shufflenet_v1(n: _Net, size: int, num_classes: int) -> str:
    # Units: grouped 1x1 (g=3; plain in the very first unit, whose input has 24 channels)
    # -> BN-ReLU -> channel shuffle -> depthwise 3x3 -> BN -> grouped 1x1 -> BN, then Add
    # the input (stride 1) or Concat a 3x3/2 average pool of it (stride 2), then ReLU.
    g = _SHUFFLENET_V1_GROUPS
    x = n.input(size)
    x = n.conv(x, "conv1", _multiple(24 * n.width, g), 3, 2, 1, bias=False)
    x = n.relu(n.bn(x, "conv1.bn"), "conv1.relu")
    x = n.maxpool(x, "maxpool", 3, 2, 1)
    for stage, (channels, count) in enumerate(_SHUFFLENET_V1_STAGES, start=2):
        cout = _multiple(channels * n.width, 4 * g)
        for i in range(count):
            p = f"stage{stage}.{i}"
            cin = n.shapes[x][0]
            stride = 2 if i == 0 else 1
            branch = cout - cin if stride == 2 else cout
            first_group = 1 if stage == 2 and i == 0 else g
            y = _conv_bn(n, x, f"{p}.g_conv_1x1_compress", cout // 4, 1, group=first_group)
            y = n.channel_shuffle(y, f"{p}.channel_shuffle", g)
            y = _conv_bn(n, y, f"{p}.depthwise_conv3x3", None, 3, stride, 1, group=-1, act=None)
            y = _conv_bn(n, y, f"{p}.g_conv_1x1_expand", branch, 1, group=g, act=None)
            if stride == 2:
                x = n.concat([n.avgpool(x, f"{p}.avgpool", 3, 2, 1), y], f"{p}.concat")
            else:
                x = n.add(x, y, f"{p}.add")
            x = n.relu(x, f"{p}.relu", gain=n.RESIDUAL_RELU_RMS_GAIN)
    return _classifier(n, x, num_classes)


_SHUFFLENET_V2_STAGES = ((116, 4), (232, 8), (464, 4))  # 1.0x column of Ma et al. 2018, Table 5


def _shufflenet_v2(n: _Net, size: int, num_classes: int) -> str:
    # torchvision's ShuffleNet v2 1.0x: stride-1 units split the channels in two halves (ONNX
    # Split), transform one and concatenate; stride-2 units transform two copies; every unit
    # ends with a shuffle of 2 groups.
    x = n.input(size)
    x = n.conv(x, "conv1.0", n.ch(24), 3, 2, 1, bias=False)
    x = n.relu(n.bn(x, "conv1.1"), "conv1.2")
    x = n.maxpool(x, "maxpool", 3, 2, 1)

    def branch2(y, p, mid, stride):
        y = _conv_bn(n, y, f"{p}.branch2.0", mid, 1, conv_name=f"{p}.branch2.0", bn_name=f"{p}.branch2.1")
        y = _conv_bn(n, y, f"{p}.branch2.3", None, 3, stride, 1, group=-1, act=None,
                     conv_name=f"{p}.branch2.3", bn_name=f"{p}.branch2.4")
        return _conv_bn(n, y, f"{p}.branch2.5", mid, 1, conv_name=f"{p}.branch2.5", bn_name=f"{p}.branch2.6")

    for stage, (channels, count) in enumerate(_SHUFFLENET_V2_STAGES, start=2):
        mid = _multiple(channels * n.width, 2) // 2
        for i in range(count):
            p = f"stage{stage}.{i}"
            if i == 0:
                b1 = _conv_bn(n, x, f"{p}.branch1.0", None, 3, 2, 1, group=-1, act=None,
                              conv_name=f"{p}.branch1.0", bn_name=f"{p}.branch1.1")
                b1 = _conv_bn(n, b1, f"{p}.branch1.2", mid, 1, conv_name=f"{p}.branch1.2", bn_name=f"{p}.branch1.3")
                b2 = branch2(x, p, mid, 2)
            else:
                b1, half = n.split_channels(x, f"{p}.chunk", 2)
                b2 = branch2(half, p, mid, 1)
            x = n.channel_shuffle(n.concat([b1, b2], f"{p}.concat"), f"{p}.channel_shuffle", 2)
    x = _conv_bn(n, x, "conv5", n.ch(1024), 1, conv_name="conv5.0", bn_name="conv5.1")
    return _classifier(n, x, num_classes)


# (expansion t, output channels c, repeats n, first stride s) -- Sandler et al. 2018, Table 2
_MOBILENET_V2_CFG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                     (6, 320, 1, 1))


def _mobilenet_v2(n: _Net, size: int, num_classes: int) -> str:
    # Inverted residuals: expand 1x1 (t > 1) -> depthwise 3x3 -> linear 1x1 projection, each
    # with BN, ReLU6 (Clip 0..6) after the first two; Add the input when the shape allows.
    x = n.input(size)
    x = _conv_bn(n, x, "features.0", n.ch(32), 3, 2, 1, act="relu6")
    index = 1
    for t, c, count, first_stride in _MOBILENET_V2_CFG:
        for i in range(count):
            p = f"features.{index}"
            cin = n.shapes[x][0]
            stride = first_stride if i == 0 else 1
            y = x
            if t != 1:
                y = _conv_bn(n, y, f"{p}.expand", cin * t, 1, act="relu6")
            y = _conv_bn(n, y, f"{p}.dw", None, 3, stride, 1, group=-1, act="relu6")
            y = _conv_bn(n, y, f"{p}.project", n.ch(c), 1, act=None)
            x = n.add(x, y, f"{p}.add") if stride == 1 and cin == n.ch(c) else y
            index += 1
    x = _conv_bn(n, x, f"features.{index}", n.ch(1280), 1, act="relu6")
    return _classifier(n, x, num_classes)


def _basic_conv(n: _Net, x, name, cout, k, s=1, p=0):
    """Inception-v3's BasicConv2d: conv (no bias) + BN (eps 0.001) + ReLU."""
    return _conv_bn(n, x, name, n.ch(cout), k, s, p, bn_eps=1e-3)


def _inception_pool(n: _Net, x, p, cout):
    y = n.avgpool(x, f"{p}.branch_pool.avgpool", 3, 1, 1)
    return _basic_conv(n, y, f"{p}.branch_pool", cout, 1)


def _inception_a(n: _Net, x, p, pool_features):
    b1 = _basic_conv(n, x, f"{p}.branch1x1", 64, 1)
    b5 = _basic_conv(n, x, f"{p}.branch5x5_1", 48, 1)
    b5 = _basic_conv(n, b5, f"{p}.branch5x5_2", 64, 5, 1, 2)
    b3 = _basic_conv(n, x, f"{p}.branch3x3dbl_1", 64, 1)
    b3 = _basic_conv(n, b3, f"{p}.branch3x3dbl_2", 96, 3, 1, 1)
    b3 = _basic_conv(n, b3, f"{p}.branch3x3dbl_3", 96, 3, 1, 1)
    return n.concat([b1, b5, b3, _inception_pool(n, x, p, pool_features)], f"{p}.concat")


def _inception_b(n: _Net, x, p):
    b3 = _basic_conv(n, x, f"{p}.branch3x3", 384, 3, 2)
    bd = _basic_conv(n, x, f"{p}.branch3x3dbl_1", 64, 1)
    bd = _basic_conv(n, bd, f"{p}.branch3x3dbl_2", 96, 3, 1, 1)
    bd = _basic_conv(n, bd, f"{p}.branch3x3dbl_3", 96, 3, 2)
    return n.concat([b3, bd, n.maxpool(x, f"{p}.branch_pool", 3, 2)], f"{p}.concat")


def _inception_c(n: _Net, x, p, c7):
    b1 = _basic_conv(n, x, f"{p}.branch1x1", 192, 1)
    b7 = _basic_conv(n, x, f"{p}.branch7x7_1", c7, 1)
    b7 = _basic_conv(n, b7, f"{p}.branch7x7_2", c7, (1, 7), 1, (0, 3))
    b7 = _basic_conv(n, b7, f"{p}.branch7x7_3", 192, (7, 1), 1, (3, 0))
    bd = _basic_conv(n, x, f"{p}.branch7x7dbl_1", c7, 1)
    bd = _basic_conv(n, bd, f"{p}.branch7x7dbl_2", c7, (7, 1), 1, (3, 0))
    bd = _basic_conv(n, bd, f"{p}.branch7x7dbl_3", c7, (1, 7), 1, (0, 3))
    bd = _basic_conv(n, bd, f"{p}.branch7x7dbl_4", c7, (7, 1), 1, (3, 0))
    bd = _basic_conv(n, bd, f"{p}.branch7x7dbl_5", 192, (1, 7), 1, (0, 3))
    return n.concat([b1, b7, bd, _inception_pool(n, x, p, 192)], f"{p}.concat")


def _inception_d(n: _Net, x, p):
    b3 = _basic_conv(n, x, f"{p}.branch3x3_1", 192, 1)
    b3 = _basic_conv(n, b3, f"{p}.branch3x3_2", 320, 3, 2)
    b7 = _basic_conv(n, x, f"{p}.branch7x7x3_1", 192, 1)
    b7 = _basic_conv(n, b7, f"{p}.branch7x7x3_2", 192, (1, 7), 1, (0, 3))
    b7 = _basic_conv(n, b7, f"{p}.branch7x7x3_3", 192, (7, 1), 1, (3, 0))
    b7 = _basic_conv(n, b7, f"{p}.branch7x7x3_4", 192, 3, 2)
    return n.concat([b3, b7, n.maxpool(x, f"{p}.branch_pool", 3, 2)], f"{p}.concat")


def _inception_e(n: _Net, x, p):
    b1 = _basic_conv(n, x, f"{p}.branch1x1", 320, 1)
    b3 = _basic_conv(n, x, f"{p}.branch3x3_1", 384, 1)
    b3 = n.concat([_basic_conv(n, b3, f"{p}.branch3x3_2a", 384, (1, 3), 1, (0, 1)),
                   _basic_conv(n, b3, f"{p}.branch3x3_2b", 384, (3, 1), 1, (1, 0))], f"{p}.branch3x3.concat")
    bd = _basic_conv(n, x, f"{p}.branch3x3dbl_1", 448, 1)
    bd = _basic_conv(n, bd, f"{p}.branch3x3dbl_2", 384, 3, 1, 1)
    bd = n.concat([_basic_conv(n, bd, f"{p}.branch3x3dbl_3a", 384, (1, 3), 1, (0, 1)),
                   _basic_conv(n, bd, f"{p}.branch3x3dbl_3b", 384, (3, 1), 1, (1, 0))], f"{p}.branch3x3dbl.concat")
    return n.concat([b1, b3, bd, _inception_pool(n, x, p, 192)], f"{p}.concat")


def _inception_v3(n: _Net, size: int, num_classes: int) -> str:
    # torchvision's Inception-v3 without the auxiliary classifier (an inference graph).
    x = n.input(size)
    x = _basic_conv(n, x, "Conv2d_1a_3x3", 32, 3, 2)
    x = _basic_conv(n, x, "Conv2d_2a_3x3", 32, 3)
    x = _basic_conv(n, x, "Conv2d_2b_3x3", 64, 3, 1, 1)
    x = n.maxpool(x, "maxpool1", 3, 2)
    x = _basic_conv(n, x, "Conv2d_3b_1x1", 80, 1)
    x = _basic_conv(n, x, "Conv2d_4a_3x3", 192, 3)
    x = n.maxpool(x, "maxpool2", 3, 2)
    for tag, pool_features in (("5b", 32), ("5c", 64), ("5d", 64)):
        x = _inception_a(n, x, f"Mixed_{tag}", pool_features)
    x = _inception_b(n, x, "Mixed_6a")
    for tag, c7 in (("6b", 128), ("6c", 160), ("6d", 160), ("6e", 192)):
        x = _inception_c(n, x, f"Mixed_{tag}", c7)
    x = _inception_d(n, x, "Mixed_7a")
    x = _inception_e(n, x, "Mixed_7b")
    x = _inception_e(n, x, "Mixed_7c")
    return _classifier(n, x, num_classes)


# Darknet-19 convs (output channels, kernel) between the max pools -- Redmon & Farhadi 2017, Table 6
_DARKNET19_STAGES = (((32, 3),), ((64, 3),), ((128, 3), (64, 1), (128, 3)), ((256, 3), (128, 1), (256, 3)),
                     ((512, 3), (256, 1), (512, 3), (256, 1), (512, 3)),
                     ((1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)))
YOLO_ANCHORS = 5
YOLO_OUTPUT = "detections"


def _yolov2(n: _Net, size: int, num_classes: int) -> str:
    # YOLOv2 (Darknet's yolo-voc.cfg): Darknet-19 convs with BN + leaky ReLU 0.1, two more
    # 3x3 convs, the passthrough (1x1 conv of the 1/16 map, space-to-depth 2, concat) and a
    # 1x1 conv to 5 anchors x (4 box + 1 objectness + classes) raw scores per cell.
    count = iter(range(1, 100))

    def darknet_conv(y, cout, k):
        i = next(count)
        return _conv_bn(n, y, f"conv{i}", n.ch(cout), k, 1, k // 2, act="leaky", conv_name=f"conv{i}",
                        bn_name=f"bn{i}")

    x = n.input(size)
    passthrough = None
    for stage, convs in enumerate(_DARKNET19_STAGES):
        if stage:
            x = n.maxpool(x, f"pool{stage}", 2, 2)
        for cout, k in convs:
            x = darknet_conv(x, cout, k)
        if stage == 4:
            passthrough = x
    x = darknet_conv(darknet_conv(x, 1024, 3), 1024, 3)
    y = darknet_conv(passthrough, 64, 1)
    x = darknet_conv(n.concat([n.space_to_depth(y, "reorg", 2), x], "route"), 1024, 3)
    return n.conv(x, YOLO_OUTPUT, YOLO_ANCHORS * (5 + num_classes), 1, gain=1.0)


STYLE_OUTPUT = "image"


def _fast_style_transfer(n: _Net, size: int, num_classes: int) -> str:
    # Johnson et al.'s transformation network as PyTorch's fast_neural_style example builds
    # it (reflection padding around the 9x9 convs, instance norm, 5 residual blocks), with
    # one upsampling a transposed conv (the paper's) and one a nearest Resize + conv (the
    # example's).
    x = n.input(size)

    def conv_in(y, name, cout, k, s=1):
        y = n.conv(y, f"{name}.conv", cout, k, s, k // 2)
        return n.relu(n.instance_norm(y, f"{name}.in"), f"{name}.relu")

    x = n.reflect_pad(x, "conv1.pad", 4)
    x = n.conv(x, "conv1.conv", n.ch(32), 9)
    x = n.relu(n.instance_norm(x, "conv1.in"), "conv1.relu")
    x = conv_in(x, "conv2", n.ch(64), 3, 2)
    x = conv_in(x, "conv3", n.ch(128), 3, 2)
    for i in range(1, 6):
        y = conv_in(x, f"res{i}.1", n.ch(128), 3)
        y = n.instance_norm(n.conv(y, f"res{i}.2.conv", n.ch(128), 3, 1, 1), f"res{i}.2.in")
        x = n.add(x, y, f"res{i}.add")
    x = n.conv_transpose(x, "deconv1.conv", n.ch(64), 3, 2, 1, output_padding=1)
    x = n.relu(n.instance_norm(x, "deconv1.in"), "deconv1.relu")
    x = conv_in(n.upsample(x, "deconv2.upsample", 2), "deconv2", n.ch(32), 3)
    x = n.reflect_pad(x, "deconv3.pad", 4)
    return n.conv(x, STYLE_OUTPUT, 3, 9, gain=1.0)


POSE_OUTPUTS = ("heatmaps", "offsets", "displacement_fwd", "displacement_bwd")


def _posenet(n: _Net, size: int, num_classes: int) -> List[str]:
    # TF.js PoseNet (Papandreou et al. 2018): MobileNet v1 (biases folded from BN, ReLU6) at
    # output stride 16 -- the last stride-2 block keeps stride 1 and the layers after it use
    # dilation 2 -- with four 1x1 heads: keypoint heatmaps (num_classes keypoints), their
    # 2-D offsets, and forward/backward displacements along the keypoint tree's edges.
    x = n.input(size)
    x = n.relu6(n.conv(x, "conv1", n.ch(32), 3, 2, 1), "conv1.relu6")
    dilation = 1
    for blk, stride, cout in _MOBILENET_CFG:
        if stride == 2 and n.stride[x] == 16:
            stride, dilation = 1, 2
        x = n.conv(x, f"{blk}/dw", None, 3, stride, dilation, group=-1, dilation=dilation)
        x = n.relu6(x, f"{blk}/dw/relu6")
        x = n.relu6(n.conv(x, f"{blk}/sep", n.ch(cout), 1), f"{blk}/sep/relu6")
    edges = max(1, num_classes - 1)  # a tree over the keypoints (16 edges for COCO's 17)
    counts = (num_classes, 2 * num_classes, 2 * edges, 2 * edges)
    return [n.conv(x, out, c, 1, gain=1.0) for out, c in zip(POSE_OUTPUTS, counts)]


_BUILDERS = {
    "vgg16": _vgg16,
    "alexnet": _alexnet,
    "googlenet": _googlenet,
    "squeezenet1_1": _squeezenet1_1,
    "mobilenet_v1": _mobilenet_v1,
    "resnet18": _resnet((2, 2, 2, 2), bottleneck=False),
    "resnet50": _resnet((3, 4, 6, 3), bottleneck=True),
    "densenet121": _densenet121,
    "shufflenet_v1": _shufflenet_v1,
    "shufflenet_v2": _shufflenet_v2,
    "mobilenet_v2": _mobilenet_v2,
    "inception_v3": _inception_v3,
    "yolov2": _yolov2,
    "fast_style_transfer": _fast_style_transfer,
    "posenet": _posenet,
}
assert tuple(_BUILDERS) == ALL_NAMES

# Defaults other than 224x224 and 1000 classes: the papers' input sizes; YOLOv2's VOC
# classes; PoseNet's COCO keypoints (num_classes counts them); the style transfer network
# has no classes (None: build() refuses num_classes).
_IMAGE_SIZES = {"inception_v3": 299, "yolov2": 416, "fast_style_transfer": 256, "posenet": 257}
_NUM_CLASSES = {"yolov2": 20, "posenet": 17, "fast_style_transfer": None}

_DESCRIPTIONS = {
    "vgg16": "VGG-16 (Simonyan & Zisserman, 'Very Deep Convolutional Networks for Large-Scale Image "
    "Recognition', ICLR 2015): 13 conv3x3 + 5 maxpool2x2 + 3 FC (4096-4096-classes), ~138M params.",
    "alexnet": "AlexNet (Krizhevsky et al., 'ImageNet Classification with Deep CNNs', NIPS 2012; "
    "torchvision channels): 5 conv (11x11/4, 5x5, 3x 3x3) + 2 LRN + 3 maxpool3x3/2 + 3 FC "
    "(4096-4096-classes), ~61M params.",
    "googlenet": "GoogLeNet / Inception v1 (Szegedy et al., 'Going Deeper with Convolutions', CVPR 2015): "
    "stem (7x7/2 conv, 1x1, 3x3, 2 LRN) + 9 inception modules 3a..5b of 4 branches; 57 conv, "
    "9 concat, 13 maxpool, global avgpool, 1 FC, ~7M params.",
    "squeezenet1_1": "SqueezeNet 1.1 (Iandola et al., 'SqueezeNet: AlexNet-level accuracy with 50x fewer "
    "parameters', 2016; v1.1 from the SqueezeNet repo): conv3x3/2 + 8 fire modules "
    "(squeeze1x1 -> expand1x1 || expand3x3) + conv1x1 to classes; 26 conv, 8 concat, 3 maxpool, "
    "global avgpool, ~1.2M params.",
    "mobilenet_v1": "MobileNet v1 (Howard et al., 'MobileNets: Efficient CNNs for Mobile Vision "
    "Applications', 2017): conv3x3/2 + 13 depthwise-separable blocks (dw3x3+BN+ReLU, pw1x1+BN+ReLU); "
    "27 conv (13 depthwise), 27 BN, global avgpool, 1 FC, ~4.2M params.",
    "resnet18": "ResNet-18 (He et al., 'Deep Residual Learning for Image Recognition', CVPR 2016; "
    "torchvision): conv7x7/2 + maxpool + 8 basic blocks (two conv3x3+BN, residual Add) in 4 stages; "
    "20 conv (3 projection shortcuts), 20 BN, 8 Add, global avgpool, 1 FC, ~11.7M params.",
    "resnet50": "ResNet-50 (He et al., CVPR 2016; torchvision v1.5, stride on the 3x3): conv7x7/2 + "
    "maxpool + 16 bottleneck blocks (1x1, 3x3, 1x1 to 4x, each + BN; residual Add) in 4 stages; "
    "53 conv, 53 BN, 16 Add, global avgpool, 1 FC, ~25.6M params.",
    "densenet121": "DenseNet-121 (Huang et al., 'Densely Connected Convolutional Networks', CVPR 2017; "
    "torchvision): 4 dense blocks of 6/12/24/16 layers (Concat of all earlier maps -> BN-ReLU-conv1x1-"
    "BN-ReLU-conv3x3, growth 32), 3 transitions (BN-ReLU-conv1x1-avgpool2x2); 120 conv, 121 BN, "
    "global avgpool, 1 FC, ~8.0M params.",
    "shufflenet_v1": "ShuffleNet v1, 1x, g=3 (Zhang et al., 'ShuffleNet: An Extremely Efficient CNN for "
    "Mobile Devices', CVPR 2018): conv3x3/2 + maxpool + 16 units (grouped 1x1, channel shuffle by "
    "Reshape/Transpose, depthwise 3x3, grouped 1x1; Add, or Concat with avgpool3x3/2), global avgpool, "
    "1 FC, ~1.9M params.",
    "shufflenet_v2": "ShuffleNet v2 1.0x (Ma et al., 'ShuffleNet V2: Practical Guidelines for Efficient "
    "CNN Architecture Design', ECCV 2018; torchvision): 16 units (channel Split, 1x1-dw3x3-1x1 branch, "
    "Concat, shuffle of 2 groups), conv5 1x1 to 1024, global avgpool, 1 FC, ~2.3M params.",
    "mobilenet_v2": "MobileNetV2 (Sandler et al., 'MobileNetV2: Inverted Residuals and Linear "
    "Bottlenecks', CVPR 2018; torchvision): conv3x3/2 + 17 inverted residuals (expand 1x1, dw3x3, "
    "linear 1x1, BN, ReLU6 as Clip; Add where shapes match) + conv1x1 to 1280, global avgpool, 1 FC, "
    "~3.5M params.",
    "inception_v3": "Inception-v3 (Szegedy et al., 'Rethinking the Inception Architecture', CVPR 2016; "
    "torchvision, no auxiliary head), 299x299: stem + 11 mixed modules (5x5, 1x7/7x1 and 1x3/3x1 "
    "factorised convs, avgpool branches, BN eps 1e-3); 94 conv, 94 BN, global avgpool, 1 FC, ~23.8M params.",
    "yolov2": "YOLOv2 (Redmon & Farhadi, 'YOLO9000: Better, Faster, Stronger', CVPR 2017; yolo-voc.cfg), "
    "416x416: Darknet-19 (conv+BN+leaky ReLU 0.1, 5 maxpool2x2) + 3 conv3x3, passthrough (conv1x1, "
    "SpaceToDepth 2, Concat), conv1x1 to 5 anchors x (5 + classes) raw scores per 13x13 cell "
    "(output 'detections'); 23 conv, 22 BN, ~50.6M params.",
    "fast_style_transfer": "Fast style transfer (Johnson et al., 'Perceptual Losses for Real-Time Style "
    "Transfer', ECCV 2016; PyTorch's fast_neural_style), 256x256: reflection-padded conv9x9, 2 strided "
    "conv3x3, 5 residual blocks, a transposed conv3x3/2 and a nearest Resize x2 + conv3x3, conv9x9 to "
    "3 channels (output 'image'); instance norm after each conv but the last; ~1.7M params.",
    "posenet": "PoseNet (Papandreou et al., 'PersonLab', ECCV 2018; TF.js MobileNet v1 PoseNet), 257x257: "
    "MobileNet v1 (ReLU6) at output stride 16 (dilated depthwise convs after it) with 1x1 heads "
    "'heatmaps' (keypoints), 'offsets', 'displacement_fwd' and 'displacement_bwd'; ~3.3M params.",
}

# Small CI variants: every layer kind / module of the full model is kept, only
# the widths, the image size and the number of classes shrink.  Widths are
# chosen so that odd and prime channel counts appear (googlenet@0.15: 5, 7,
# 17, 19, 29, 31, 43 ...; squeezenet@0.3: 5, 19, 77; mobilenet@0.15: 5, 19, 77
# with depthwise group=5/19/77; alexnet@0.1: 19, 410(fc); vgg@0.1: 13, 51) and
# odd feature-map sizes (alexnet 67 -> 15/7/3/1, squeezenet 47 -> 23/11/5/2).
_SMALL = {
    "vgg16": dict(width=0.1, image_size=32, num_classes=10),
    "alexnet": dict(width=0.1, image_size=67, num_classes=10),
    "googlenet": dict(width=0.15, image_size=64, num_classes=10),
    "squeezenet1_1": dict(width=0.3, image_size=47, num_classes=10),
    "mobilenet_v1": dict(width=0.15, image_size=64, num_classes=10),
    "resnet18": dict(width=0.15, image_size=48, num_classes=10),
    "resnet50": dict(width=0.1, image_size=40, num_classes=10),
    "densenet121": dict(width=0.25, image_size=32, num_classes=10),
    "shufflenet_v1": dict(width=0.25, image_size=48, num_classes=10),
    "shufflenet_v2": dict(width=0.25, image_size=48, num_classes=10),
    "mobilenet_v2": dict(width=0.3, image_size=48, num_classes=10),
    "inception_v3": dict(width=0.1, image_size=75, num_classes=10),
    "yolov2": dict(width=0.1, image_size=64, num_classes=10),
    "fast_style_transfer": dict(width=0.25, image_size=36),
    "posenet": dict(width=0.15, image_size=65, num_classes=10),
}


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(ALL_NAMES)}")


def _trace(name: str, size: int, width: float, num_classes: Optional[int], rng) -> _Net:
    # The µLayer five keep the weights their published numbers (BENCHMARKS.md) were measured
    # with: BN counted as gain 1 (their depth, at most 27 BNs, keeps the logits O(1) anyway).
    n = _Net(width, rng, bn_gain=1.0 if name in NAMES else _Net.BN_RMS_GAIN)
    outputs = _BUILDERS[name](n, size, num_classes)
    n.outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    if size < n.total_stride:
        raise _TooSmall(f"image size {size} is smaller than the total stride {n.total_stride}")
    return n


def default_image_size(name: str) -> int:
    """The image size :func:`build` uses when given none (the paper's)."""
    _check_name(name)
    return _IMAGE_SIZES.get(name, DEFAULT_IMAGE_SIZE)


def min_image_size(name: str) -> int:
    """Smallest square image size the model accepts.

    That is the smallest size for which every conv/pool window fits in its
    (padded) input and which is at least the network's total stride.
    """
    _check_name(name)
    for size in range(1, 4096):
        try:
            _trace(name, size, 1.0, _NUM_CLASSES.get(name, 10), None)
        except (_TooSmall, _BadSize):
            continue
        return size
    raise AssertionError("no valid image size found")  # pragma: no cover


def build(
    name: str,
    *,
    width: float = 1.0,
    image_size: Optional[int] = None,
    num_classes: Optional[int] = None,
    seed: int = 0,
) -> onnx.ModelProto:
    """Build model ``name`` (one of :data:`ALL_NAMES`) as an ONNX ``ModelProto``.

    ``width`` multiplies every channel count (including the hidden FC sizes of
    VGG/AlexNet; not ``num_classes``), rounded half up and at least 1 (to whole
    groups where groups or a channel split must divide them).
    ``image_size`` defaults to the model's (:func:`default_image_size`), ``num_classes``
    to 1000 (YOLOv2: 20 VOC classes; PoseNet: 17 keypoints; the style transfer network
    has none).  Weights come from ``numpy.random.default_rng(seed)``.  The shapes of
    all intermediate tensors are recorded in ``graph.value_info``.
    """
    _check_name(name)
    size = default_image_size(name) if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"image_size must be an int, got {image_size!r}")
    size = int(size)
    if not (isinstance(width, (int, float, np.floating, np.integer)) and width > 0 and math.isfinite(width)):
        raise ValueError(f"width must be a positive finite number, got {width!r}")
    default_classes = _NUM_CLASSES.get(name, 1000)
    if num_classes is None:
        num_classes = default_classes
    elif default_classes is None:
        raise ValueError(f"{name} outputs an image and has no classes; do not give num_classes")
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    else:
        num_classes = int(num_classes)

    try:
        _trace(name, size, float(width), num_classes, None)  # cheap shape-only pass
    except _TooSmall as e:
        raise ValueError(
            f"image_size {size} is too small for {name}: minimum is {min_image_size(name)} ({e})"
        ) from None
    except _BadSize as e:
        raise ValueError(f"image_size {size} does not suit {name}: {e}") from None

    net = _trace(name, size, float(width), num_classes, np.random.default_rng(seed))
    graph = helper.make_graph(
        net.nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, *net.shapes[out]]) for out in net.outputs],
        value_info=[
            helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, *shape])
            for t, shape in net.shapes.items()
            if t != INPUT_NAME and t not in net.outputs
        ],
    )
    model = helper.make_model(
        graph,
        producer_name="tvm-mulayer.zoo",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=describe(name),
    )
    model.ir_version = IR_VERSION
    # Filled in place: make_graph/make_model would copy the (up to 550 MB of) weights twice.
    for init_name, arr in net.inits:
        t = model.graph.initializer.add()
        t.name = init_name
        floating = arr.dtype.kind == "f"
        t.data_type = TensorProto.FLOAT if floating else TensorProto.INT64  # int64: shapes, pads, splits
        t.dims.extend(arr.shape)
        t.raw_data = arr.astype("<f4" if floating else "<i8", copy=False).tobytes()  # raw_data is little-endian
    props = {"width": repr(float(width)), "image_size": str(size), "num_classes": str(num_classes), "seed": str(seed)}
    helper.set_model_props(model, {key: value for key, value in props.items() if value != "None"})
    return model


def small(name: str) -> dict:
    """Keyword arguments of :func:`build` for a small CI variant of ``name``."""
    _check_name(name)
    return dict(_SMALL[name])


def describe(name: str) -> str:
    """One line: what the model is, the paper, layer counts."""
    _check_name(name)
    return _DESCRIPTIONS[name]
