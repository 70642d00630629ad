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

__all__ = ["NAMES", "build", "small", "describe", "min_image_size"]

NAMES: Tuple[str, ...] = ("vgg16", "alexnet", "googlenet", "squeezenet1_1", "mobilenet_v1")

OPSET = 13
IR_VERSION = 8  # enough for opset 13; keeps the models loadable by older runtimes
DEFAULT_IMAGE_SIZE = 224
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class _TooSmall(Exception):
    """Raised internally while tracing shapes when a layer has no valid output."""


class _Net:
    """Tiny graph builder that tracks shapes and (optionally) creates weights.

    With ``rng=None`` it is a dry run: only shapes are traced (used to find the
    minimum image size without generating any weights).
    """

    MAXPOOL_RMS_GAIN = 1.4  # measured 1.2-1.6 (2.25 right after the first conv)

    def __init__(self, width: float, rng: Optional[np.random.Generator]):
        self.width = width
        self.rng = rng
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[Tuple[str, np.ndarray]] = []
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        # Rough estimate of each tensor's RMS for a standard-normal input; the
        # weights of every conv/FC are divided by their input's estimate so
        # that the activations stay O(1) instead of drifting with depth.
        self.rms: Dict[str, float] = {}
        self.names: set = set()
        self.total_stride = 1

    # -- helpers --------------------------------------------------------
    def ch(self, c: int) -> int:
        """Scale a channel count by ``width`` (round half up, at least 1)."""
        return max(1, int(math.floor(c * self.width + 0.5)))

    def _node(self, op: str, inputs: Sequence[str], name: str, out: Optional[str] = None, **attrs):
        if name in self.names:
            raise AssertionError(f"duplicate node name {name!r}")
        self.names.add(name)
        out = out or name
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def _init(self, name: str, arr_fn: Callable[[np.random.Generator], np.ndarray]) -> str:
        if name in self.names:
            raise AssertionError(f"duplicate initializer name {name!r}")
        self.names.add(name)
        if self.rng is not None:
            self.inits.append((name, np.ascontiguousarray(arr_fn(self.rng), dtype=np.float32)))
        return name

    def _normal(self, shape, std):
        return lambda rng: rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def _uniform(self, shape, lo, hi):
        return lambda rng: rng.uniform(lo, hi, size=shape).astype(np.float32)

    @staticmethod
    def _out(h: int, k: int, s: int, p: int, what: str) -> int:
        if h + 2 * p < k:
            raise _TooSmall(f"{what}: input {h} + 2*pad {p} < kernel {k}")
        return (h + 2 * p - k) // s + 1

    @staticmethod
    def _taps(h: int, k: int, s: int, p: int) -> float:
        """Mean number of the ``k`` kernel taps (one dimension) that land inside the input."""
        n_out = max(1, (h + 2 * p - k) // s + 1)
        inside = sum(min(h, o * s - p + k) - max(0, o * s - p) for o in range(n_out))
        return max(1.0, inside / n_out)

    # -- layers -----------------------------------------------------------
    def input(self, size: int) -> str:
        self.shapes[INPUT_NAME] = (3, size, size)
        self.rms[INPUT_NAME] = 1.0
        self.names.add(INPUT_NAME)
        return INPUT_NAME

    def conv(self, x, name, cout, k, s=1, p=0, group=1, bias=True, gain=2.0):
        cin, h, w = self.shapes[x]
        if group == -1:  # depthwise
            group = cin
            cout = cin
        assert cin % group == 0 and cout % group == 0, (name, cin, cout, group)
        # Effective fan-in: on small feature maps many taps of a padded kernel
        # fall on the zero padding, which would otherwise shrink the output.
        fan_in = (cin // group) * self._taps(h, k, s, p) * self._taps(w, k, s, p)
        std = math.sqrt(gain / fan_in) / self.rms[x]
        wname = self._init(f"{name}.weight", self._normal((cout, cin // group, k, k), std))
        ins = [x, wname]
        if bias:
            ins.append(self._init(f"{name}.bias", self._normal((cout,), 0.05)))
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])
        if group != 1:
            attrs["group"] = group
        out = self._node("Conv", ins, name, **attrs)
        self.shapes[out] = (cout, self._out(h, k, s, p, name), self._out(w, k, s, p, name))
        self.rms[out] = math.sqrt(gain)
        self.total_stride *= s
        return out

    def bn(self, x, name):
        c = self.shapes[x][0]
        ins = [
            x,
            self._init(f"{name}.scale", self._uniform((c,), 0.75, 1.25)),
            self._init(f"{name}.bias", self._normal((c,), 0.1)),
            self._init(f"{name}.mean", self._normal((c,), 0.1)),
            self._init(f"{name}.var", self._uniform((c,), 0.5, 1.5)),
        ]
        out = self._node("BatchNormalization", ins, name, epsilon=1e-5)
        self.shapes[out] = self.shapes[x]
        self.rms[out] = self.rms[x]
        return out

    def relu(self, x, name):
        out = self._node("Relu", [x], name)
        self.shapes[out] = self.shapes[x]
        self.rms[out] = self.rms[x] / math.sqrt(2.0)
        return out

    def maxpool(self, x, name, k, s, p=0):
        c, h, w = self.shapes[x]
        out = self._node("MaxPool", [x], name, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])
        self.shapes[out] = (c, self._out(h, k, s, p, name), self._out(w, k, s, p, name))
        self.rms[out] = self.rms[x] * self.MAXPOOL_RMS_GAIN
        self.total_stride *= s
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


_BUILDERS = {
    "vgg16": _vgg16,
    "alexnet": _alexnet,
    "googlenet": _googlenet,
    "squeezenet1_1": _squeezenet1_1,
    "mobilenet_v1": _mobilenet_v1,
}
assert tuple(_BUILDERS) == NAMES

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
}


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(NAMES)}")


def _trace(name: str, size: int, width: float, num_classes: int, rng) -> _Net:
    n = _Net(width, rng)
    _BUILDERS[name](n, size, num_classes)
    if size < n.total_stride:
        raise _TooSmall(f"image size {size} is smaller than the total stride {n.total_stride}")
    return n


def min_image_size(name: str) -> int:
    """Smallest square image size the model accepts.

    That is the smallest size for which every conv/pool window fits in its
    (padded) input and which is at least the network's total stride.
    """
    _check_name(name)
    for size in range(1, 4096):
        try:
            _trace(name, size, 1.0, 10, None)
        except _TooSmall:
            continue
        return size
    raise AssertionError("no valid image size found")  # pragma: no cover


def build(
    name: str,
    *,
    width: float = 1.0,
    image_size: Optional[int] = None,
    num_classes: int = 1000,
    seed: int = 0,
) -> onnx.ModelProto:
    """Build model ``name`` (one of :data:`NAMES`) as an ONNX ``ModelProto``.

    ``width`` multiplies every channel count (including the hidden FC sizes of
    VGG/AlexNet; not ``num_classes``), rounded half up and at least 1.
    ``image_size`` defaults to 224.  Weights come from
    ``numpy.random.default_rng(seed)``.  The shapes of all intermediate tensors
    are recorded in ``graph.value_info``.
    """
    _check_name(name)
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"image_size must be an int, got {image_size!r}")
    size = int(size)
    if not (isinstance(width, (int, float, np.floating, np.integer)) and width > 0 and math.isfinite(width)):
        raise ValueError(f"width must be a positive finite number, got {width!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    num_classes = int(num_classes)

    try:
        _trace(name, size, float(width), num_classes, None)  # cheap shape-only pass
    except _TooSmall as e:
        raise ValueError(
            f"image_size {size} is too small for {name}: minimum is {min_image_size(name)} ({e})"
        ) from None

    net = _trace(name, size, float(width), num_classes, np.random.default_rng(seed))
    graph = helper.make_graph(
        net.nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, num_classes])],
        value_info=[
            helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, *shape])
            for t, shape in net.shapes.items()
            if t not in (INPUT_NAME, OUTPUT_NAME)
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
        t.data_type = TensorProto.FLOAT
        t.dims.extend(arr.shape)
        t.raw_data = arr.astype("<f4", copy=False).tobytes()  # raw_data is little-endian
    helper.set_model_props(
        model,
        {"width": repr(float(width)), "image_size": str(size), "num_classes": str(num_classes), "seed": str(seed)},
    )
    return model


def small(name: str) -> dict:
    """Keyword arguments of :func:`build` for a small CI variant of ``name``."""
    _check_name(name)
    return dict(_SMALL[name])


def describe(name: str) -> str:
    """One line: what the model is, the paper, layer counts."""
    _check_name(name)
    return _DESCRIPTIONS[name]
