"""Tests for the later zoo models (tvm_mulayer.base.zoo.MORE_NAMES): onnx + onnxruntime only.

Their numerics through tvm-mulayer are in tests/test_models.py.
"""

from collections import Counter

import numpy as np
import onnx
import pytest

from tvm_mulayer.base import zoo

ort = pytest.importorskip("onnxruntime")

# Full-size node counts per op type, as the descriptions and the papers' tables give them.
EXPECTED_OPS = {
    "resnet18": {"Conv": 20, "BatchNormalization": 20, "Relu": 17, "MaxPool": 1, "Add": 8,
                 "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1},
    "resnet50": {"Conv": 53, "BatchNormalization": 53, "Relu": 49, "MaxPool": 1, "Add": 16,
                 "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1},
    "densenet121": {"Conv": 120, "BatchNormalization": 121, "Relu": 121, "MaxPool": 1, "Concat": 58,
                    "AveragePool": 3, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1},
    "shufflenet_v1": {"Conv": 49, "BatchNormalization": 49, "Relu": 33, "MaxPool": 1, "Reshape": 32,
                      "Transpose": 16, "AveragePool": 3, "Concat": 3, "Add": 13, "GlobalAveragePool": 1,
                      "Flatten": 1, "Gemm": 1},
    "shufflenet_v2": {"Conv": 56, "BatchNormalization": 56, "Relu": 37, "MaxPool": 1, "Concat": 16,
                      "Reshape": 32, "Transpose": 16, "Split": 13, "GlobalAveragePool": 1, "Flatten": 1,
                      "Gemm": 1},
    "mobilenet_v2": {"Conv": 52, "BatchNormalization": 52, "Clip": 35, "Add": 10, "GlobalAveragePool": 1,
                     "Flatten": 1, "Gemm": 1},
    "inception_v3": {"Conv": 94, "BatchNormalization": 94, "Relu": 94, "MaxPool": 4, "AveragePool": 9,
                     "Concat": 15, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1},
    "yolov2": {"Conv": 23, "BatchNormalization": 22, "LeakyRelu": 22, "MaxPool": 5, "SpaceToDepth": 1,
               "Concat": 1},
    "fast_style_transfer": {"Pad": 2, "Conv": 15, "InstanceNormalization": 15, "Relu": 10, "Add": 5,
                            "ConvTranspose": 1, "Resize": 1},
    "posenet": {"Conv": 31, "Clip": 27},
}
# Millions of learned parameters at width 1 (the published counts; BN statistics excluded).
EXPECTED_PARAMS_M = {"resnet18": 11.69, "resnet50": 25.56, "densenet121": 7.98, "shufflenet_v1": 1.87,
                     "shufflenet_v2": 2.28, "mobilenet_v2": 3.50, "inception_v3": 23.83, "yolov2": 50.65,
                     "fast_style_transfer": 1.68, "posenet": 3.31}
# Full-size output shapes (batch 1).
EXPECTED_OUTPUTS = {
    "yolov2": {"detections": [1, 125, 13, 13]},  # 5 anchors x (5 + 20 VOC classes) per 13x13 cell
    "fast_style_transfer": {"image": [1, 3, 256, 256]},
    "posenet": {"heatmaps": [1, 17, 17, 17], "offsets": [1, 34, 17, 17],  # 257 / 16 + 1 = 17
                "displacement_fwd": [1, 32, 17, 17], "displacement_bwd": [1, 32, 17, 17]},
}


def _dims(value_info):
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _run(model, size, seed=123):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)
    return session.run(None, {"input": x})


def _learned_params(model):
    floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    return sum(int(np.prod(t.dims)) for t in floats if not t.name.endswith((".mean", ".var", ".min", ".max", ".scales")))


def test_names():
    assert zoo.ALL_NAMES == zoo.NAMES + zoo.MORE_NAMES
    assert len(set(zoo.ALL_NAMES)) == len(zoo.ALL_NAMES)
    assert set(EXPECTED_OPS) == set(zoo.MORE_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.MORE_NAMES)
def test_full_size_model(name):
    model = zoo.build(name)
    onnx.checker.check_model(model, full_check=True)  # strict shape inference agrees with value_info
    size = zoo.default_image_size(name)
    assert _dims(model.graph.input[0]) == [1, 3, size, size]
    assert dict(Counter(n.op_type for n in model.graph.node)) == EXPECTED_OPS[name]
    assert _learned_params(model) / 1e6 == pytest.approx(EXPECTED_PARAMS_M[name], rel=0.01)
    outputs = {o.name: _dims(o) for o in model.graph.output}
    assert outputs == EXPECTED_OUTPUTS.get(name, {"logits": [1, 1000]})
    # The weights keep the activations O(1) at full depth (up to 121 BNs), so a relative
    # error on the outputs measures the arithmetic, not a vanishing or exploding signal.
    for y in _run(model, size):
        assert np.isfinite(y).all() and 0.1 < float(y.std()) < 10.0, (name, float(y.std()))


@pytest.mark.parametrize("name", zoo.MORE_NAMES)
def test_small_variant(name):
    kw = zoo.small(name)
    model = zoo.build(name, **kw)
    onnx.checker.check_model(model, full_check=True)
    # Every layer of the full model is kept, only narrower and on a smaller image.
    assert dict(Counter(n.op_type for n in model.graph.node)) == EXPECTED_OPS[name]
    outputs = _run(model, kw["image_size"])
    assert len(outputs) == len(model.graph.output)
    for y in outputs:
        assert y.dtype == np.float32 and np.isfinite(y).all() and 0.1 < float(y.std()) < 10.0, float(y.std())


@pytest.mark.parametrize("name", zoo.MORE_NAMES)
def test_min_image_size(name):
    smallest = zoo.min_image_size(name)
    onnx.checker.check_model(zoo.build(name, width=0.05, image_size=smallest), full_check=True)
    with pytest.raises(ValueError, match=f"minimum is {smallest}"):
        zoo.build(name, width=0.05, image_size=smallest - 1)


def test_grouped_widths_stay_whole_groups():
    # ShuffleNet v1's grouped 1x1 convs need channel counts divisible by its 3 groups at any width.
    model = zoo.build("shufflenet_v1", width=0.37, image_size=48, num_classes=5)
    onnx.checker.check_model(model, full_check=True)
    couts = {t.name: t.dims[0] for t in model.graph.initializer}
    grouped = [(couts[n.input[1]], a.i) for n in model.graph.node if n.op_type == "Conv"
               for a in n.attribute if a.name == "group" and a.i == 3]
    assert len(grouped) == 31 and all(cout % 3 == 0 for cout, _ in grouped)
    assert np.isfinite(_run(model, 48)[0]).all()


def test_model_specific_arguments():
    with pytest.raises(ValueError, match="has no classes"):
        zoo.build("fast_style_transfer", num_classes=10)
    with pytest.raises(ValueError, match="does not suit yolov2"):
        zoo.build("yolov2", width=0.05, image_size=48)  # a 3x3 map before the passthrough's 2x2 reorg
    model = zoo.build("yolov2", width=0.05, image_size=64, num_classes=3)
    assert {o.name: _dims(o) for o in model.graph.output} == {"detections": [1, 5 * (5 + 3), 2, 2]}
    model = zoo.build("posenet", width=0.05, image_size=65, num_classes=5)  # 5 keypoints, 4 tree edges
    assert [_dims(o)[1] for o in model.graph.output] == [5, 10, 8, 8]
    assert zoo.build("inception_v3", width=0.05).graph.input[0].type.tensor_type.shape.dim[2].dim_value == 299


@pytest.mark.parametrize("name", zoo.MORE_NAMES)
def test_describe(name):
    text = zoo.describe(name)
    assert isinstance(text, str) and "\n" not in text and len(text) > 40
