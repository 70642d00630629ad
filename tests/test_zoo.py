"""Tests for tvm_mulayer.base.zoo (onnx + onnxruntime only, no TVM)."""

import time
from collections import Counter

import numpy as np
import onnx
import pytest

from tvm_mulayer.base import zoo

ort = pytest.importorskip("onnxruntime")

# Full-size (224) node counts per op type.
EXPECTED_OPS = {
    "vgg16": {"Conv": 13, "Relu": 15, "MaxPool": 5, "Flatten": 1, "Gemm": 3},
    "alexnet": {"Conv": 5, "Relu": 7, "LRN": 2, "MaxPool": 3, "Flatten": 1, "Gemm": 3},
    "googlenet": {
        "Conv": 57,
        "Relu": 57,
        "MaxPool": 13,
        "LRN": 2,
        "Concat": 9,
        "GlobalAveragePool": 1,
        "Flatten": 1,
        "Gemm": 1,
    },
    "squeezenet1_1": {"Conv": 26, "Relu": 26, "MaxPool": 3, "Concat": 8, "GlobalAveragePool": 1, "Flatten": 1},
    "mobilenet_v1": {
        "Conv": 27,
        "BatchNormalization": 27,
        "Relu": 27,
        "GlobalAveragePool": 1,
        "Flatten": 1,
        "Gemm": 1,
    },
}
EXPECTED_PARAMS_M = {  # millions of parameters at width 1, 1000 classes
    "vgg16": 138.36,
    "alexnet": 61.10,
    "googlenet": 7.0,
    "squeezenet1_1": 1.235,
    "mobilenet_v1": 4.23,
}


def _session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _input(size, seed=123):
    return np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)


def _op_counts(model):
    return Counter(n.op_type for n in model.graph.node)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _check_common(model, size, num_classes):
    g = model.graph
    assert [o.opset_import for o in [model]][0][0].version == 13
    assert [i.name for i in g.input] == ["input"]
    assert [o.name for o in g.output] == ["logits"]
    dims = lambda vi: [d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(g.input[0]) == [1, 3, size, size]
    assert dims(g.output[0]) == [1, num_classes]
    node_names = [n.name for n in g.node]
    assert all(node_names), "every node has a name"
    init_names = [t.name for t in g.initializer]
    assert len(set(node_names)) == len(node_names)
    assert len(set(init_names)) == len(init_names)
    for t in g.initializer:
        assert t.data_type == onnx.TensorProto.FLOAT
    # Conv has a bias unless BatchNormalization follows it.
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    for n in g.node:
        if n.op_type == "Conv":
            followed_by_bn = consumers.get(n.output[0]) == ["BatchNormalization"]
            assert len(n.input) == (2 if followed_by_bn else 3), n.name
        if n.op_type == "Gemm":
            assert _attr(n, "transB") == 1


@pytest.fixture(scope="module", params=zoo.NAMES)
def full_model(request):
    name = request.param
    return name, zoo.build(name)


def test_names():
    assert zoo.NAMES == ("vgg16", "alexnet", "googlenet", "squeezenet1_1", "mobilenet_v1")


@pytest.mark.slow
def test_full_size_checker_and_counts(full_model):
    name, model = full_model
    # full_check runs strict shape inference, which also fails if the
    # value_info recorded by the builder disagrees with ONNX's inference.
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.value_info) == len(model.graph.node) - 1
    _check_common(model, 224, 1000)
    assert dict(_op_counts(model)) == EXPECTED_OPS[name]
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if not t.name.endswith((".mean", ".var")))
    assert params / 1e6 == pytest.approx(EXPECTED_PARAMS_M[name], rel=0.02)
    if name == "mobilenet_v1":
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        dw = [n for n in convs if _attr(n, "group", 1) > 1]
        assert len(dw) == 13
        assert all(n.name.endswith("/dw") for n in dw)
    if name == "googlenet":
        names = {n.name for n in model.graph.node}
        for tag in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
            for suffix in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool", "pool_proj", "output"):
                assert f"inception_{tag}/{suffix}" in names
        out = next(n for n in model.graph.node if n.name == "inception_5b/output")
        vi = {v.name: v for v in model.graph.value_info}[out.output[0]]
        assert [d.dim_value for d in vi.type.tensor_type.shape.dim] == [1, 1024, 7, 7]
    if name == "squeezenet1_1":
        names = {n.name for n in model.graph.node}
        for i in range(2, 10):
            assert {f"fire{i}/squeeze1x1", f"fire{i}/expand1x1", f"fire{i}/expand3x3", f"fire{i}/concat"} <= names


@pytest.mark.slow
def test_full_size_googlenet_runs():
    # One full-size model in onnxruntime (the cheapest with every op kind of
    # the inception family): activations must stay O(1) at full size too.
    model = zoo.build("googlenet")
    y = _session(model).run(None, {"input": _input(224)})[0]
    assert y.shape == (1, 1000)
    assert np.isfinite(y).all()
    assert 0.1 < float(y.std()) < 10.0


@pytest.mark.parametrize("name", zoo.NAMES)
def test_small_variant_runs(name):
    kw = zoo.small(name)
    assert set(kw) <= {"width", "image_size", "num_classes", "seed"}
    assert kw["num_classes"] == 10 and kw["image_size"] <= 96 and kw["width"] <= 0.5
    model = zoo.build(name, **kw)
    onnx.checker.check_model(model, full_check=True)
    _check_common(model, kw["image_size"], kw["num_classes"])
    # The small variant keeps every layer of the full model.
    assert dict(_op_counts(model)) == EXPECTED_OPS[name]
    assert [n.name for n in model.graph.node] == [n.name for n in zoo.build(name, width=0.01).graph.node]

    sess = _session(model)
    x = _input(kw["image_size"])
    y = sess.run(None, {"input": x})[0]
    assert y.shape == (1, kw["num_classes"])
    assert y.dtype == np.float32
    assert np.isfinite(y).all()
    assert 0.1 < float(y.std()) < 10.0, float(y.std())

    t0 = time.perf_counter()
    for _ in range(5):
        sess.run(None, {"input": x})
    assert (time.perf_counter() - t0) / 5 < 0.05


@pytest.mark.parametrize("name", zoo.NAMES)
def test_small_variant_has_odd_channel_counts(name):
    model = zoo.build(name, **zoo.small(name))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    inits = {t.name: t for t in model.graph.initializer}
    couts = [inits[n.input[1]].dims[0] for n in convs]
    assert any(c % 2 == 1 and c > 1 for c in couts), couts


def test_deterministic_and_seeded():
    a = zoo.build("squeezenet1_1", **zoo.small("squeezenet1_1"))
    b = zoo.build("squeezenet1_1", **zoo.small("squeezenet1_1"))
    c = zoo.build("squeezenet1_1", **{**zoo.small("squeezenet1_1"), "seed": 1})
    assert a.SerializeToString() == b.SerializeToString()
    wa = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
    wc = {t.name: onnx.numpy_helper.to_array(t) for t in c.graph.initializer}
    assert wa.keys() == wc.keys()
    assert not np.array_equal(wa["conv1.weight"], wc["conv1.weight"])


def test_width_scaling_and_depthwise_groups():
    m = zoo.build("mobilenet_v1", width=0.3, image_size=32, num_classes=7)
    inits = {t.name: t for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Conv" and n.name.endswith("/dw"):
            w = inits[n.input[1]]
            assert _attr(n, "group") == w.dims[0] and w.dims[1] == 1
    assert inits["conv1.weight"].dims[0] == round(32 * 0.3)  # 10
    assert inits["conv6/sep.weight"].dims[0] == round(1024 * 0.3)  # 307
    # tiny widths clamp at one channel
    m = zoo.build("googlenet", width=0.001, image_size=32, num_classes=3)
    onnx.checker.check_model(m, full_check=True)
    assert all(t.dims[0] >= 1 for t in m.graph.initializer)


def test_bn_params_sane():
    m = zoo.build("mobilenet_v1", **zoo.small("mobilenet_v1"))
    for t in m.graph.initializer:
        if t.name.endswith(".var"):
            assert onnx.numpy_helper.to_array(t).min() > 0.5


@pytest.mark.parametrize("name", zoo.NAMES)
def test_min_image_size(name):
    mn = zoo.min_image_size(name)
    assert 16 <= mn <= 64
    m = zoo.build(name, width=0.05, image_size=mn, num_classes=4)
    onnx.checker.check_model(m, full_check=True)
    with pytest.raises(ValueError, match=f"minimum is {mn}"):
        zoo.build(name, width=0.05, image_size=mn - 1)
    with pytest.raises(ValueError, match="too small"):
        zoo.build(name, image_size=8)


def test_min_image_size_values():
    assert zoo.min_image_size("vgg16") == 32
    assert zoo.min_image_size("alexnet") == 63


def test_unknown_name():
    for fn in (zoo.build, zoo.small, zoo.describe, zoo.min_image_size):
        with pytest.raises(ValueError, match="valid names: vgg16, alexnet, googlenet, squeezenet1_1, mobilenet_v1, "
                           "resnet18, .*, posenet$"):
            fn("resnet152")


@pytest.mark.parametrize("bad", [dict(width=0), dict(width=-1.0), dict(num_classes=0), dict(image_size=64.0)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        zoo.build("squeezenet1_1", **bad)


@pytest.mark.parametrize("name", zoo.NAMES)
def test_describe(name):
    d = zoo.describe(name)
    assert isinstance(d, str) and "\n" not in d and len(d) > 40
