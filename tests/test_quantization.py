"""Processor-friendly precision: int8 CPU slices, fp16 GPU slices, calibration, compact copies.

Tolerances, from the precision of each path:
* the int8 arithmetic itself is checked against a float64 numpy model of the same
  quantization (same scales, zero point, rounding): only the final float32 dequantize
  rounds, so 1e-6;
* fp16 slices against float64 on float16-rounded inputs and weights: products of two
  float16 are exact in float32 and float32 accumulation adds ~1e-7·sqrt(n): 1e-5;
* whole networks against float32 onnxruntime: each int8 layer adds noise of about
  step/sqrt(12) ≈ 0.1% of its input range, compounding over ~10-20 layers to a few
  percent of the output's scale: cosine similarity >= 0.999 (an angle of 2.6°, i.e.
  <= ~4.5% relative noise) and the same top-1 on most inputs;
* accuracy on the digits test split within 0.5 points of float32 (the issue's bar).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvm_mulayer
from tvm_mulayer import MulayerError
from tvm_mulayer.base.quantization import (Calibration, activation_qparams, parse_precision, quantize_weights,
                                           weight_error)
from tvm_mulayer.cli import main

from conftest import input_shape, ort_run

DIGITS = Path(__file__).parent / "data" / "digits"


# ---- modes and arithmetic ------------------------------------------------------------
@pytest.mark.parametrize("text, cpu, gpu", [
    (None, "int8", "fp16"), ("native", "int8", "fp16"), ("fp32", "fp32", "fp32"),
    ("native,gpu=fp32", "int8", "fp32"), ("cpu=fp32", "fp32", "fp16"), ("fp32,cpu=int8", "int8", "fp32"),
])
def test_precision_modes_and_overrides(text, cpu, gpu):
    assert parse_precision(text) == {"cpu": cpu, "gpu": gpu}


@pytest.mark.parametrize("text, words", [("int4", "native"), ("cpu=fp16", "CPU computes in"),
                                         ("gpu=int8", "GPU in"), ("npu=int8", "cpu=int8")])
def test_bad_precision_says_what_is_allowed(text, words):
    with pytest.raises(MulayerError, match=words):
        parse_precision(text)


@pytest.mark.parametrize("lo, hi", [(-1.5, 2.5), (0.0, 6.0), (-3.0, -1.0), (0.5, 4.0)])
def test_activation_range_includes_zero_exactly(lo, hi):
    scale, zero_point = activation_qparams(lo, hi)
    assert isinstance(zero_point, int) and 0 <= zero_point <= 255  # so 0.0 is a code: ReLU's floor, padding
    assert zero_point == 0 if lo >= 0 else zero_point > 0
    # the codes 0..255 cover the range widened to 0, within half a step
    assert scale * (255 - zero_point) >= max(hi, 0) - scale / 2 and -scale * zero_point <= min(lo, 0) + scale / 2


def test_weights_per_output_channel_and_outliers_detected():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * np.arange(1, 9)[:, None, None, None]
    q, scale = quantize_weights(w, axis=0)
    assert q.dtype == np.int8 and scale.shape == (8,)
    assert np.all(np.abs(q).reshape(8, -1).max(axis=1) == 127)  # each channel uses its full range
    assert weight_error(w, 0) < 0.01
    w[3, 0, 0, 0] = 500.0  # one outlier squeezes channel 3 into a few levels
    assert weight_error(w, 0) > 0.03


def test_float16_accumulation_loses_what_float32_accumulation_keeps():
    """Why the fp16 slices accumulate in float32: a VGG-sized reduction (3x3x512)."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 4608)).astype(np.float16)  # post-ReLU activations: positive
    w = (rng.standard_normal((4608,)) * 0.02).astype(np.float16)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    acc16 = np.zeros(64, np.float16)
    for k in range(4608):
        acc16 = (acc16 + x[:, k] * w[k]).astype(np.float16)
    acc32 = (x.astype(np.float32) * w.astype(np.float32)).sum(axis=1, dtype=np.float32)
    scale = np.abs(exact).max()
    assert np.abs(acc32 - exact).max() / scale < 1e-5
    assert np.abs(acc16 - exact).max() / scale > 1e-3


# ---- one layer against a numpy model of the same arithmetic --------------------------
def _one_layer_model(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    if kind == "dense":
        w = rng.standard_normal((40, 13)).astype(np.float32)
        b = rng.standard_normal(13).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")
        shapes = ([1, 40], [1, 13])
    else:
        groups = 2 if kind == "grouped" else 1
        w = rng.standard_normal((10, 6 // groups, 3, 3)).astype(np.float32)
        b = rng.standard_normal(10).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2],
                                group=groups)
        shapes = ([1, 6, 9, 9], [1, 10, 5, 5])
    graph = helper.make_graph([node], "one_layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shapes[0])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shapes[1])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), w, b


def _conv_f64(x, w, b, groups: int):
    """NCHW conv, stride 2, padding 1, in float64 (x is already padded-value-aware)."""
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out_c, in_per_group = w.shape[0], w.shape[1]
    out = np.zeros((1, out_c, 5, 5))
    for o in range(out_c):
        g = o // (out_c // groups)
        for i in range(5):
            for j in range(5):
                patch = x[0, g * in_per_group:(g + 1) * in_per_group, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                out[0, o, i, j] = np.sum(patch * w[o])
    return out + b.reshape(1, -1, 1, 1)


def _apply_layer(kind, x, w, b):
    if kind == "dense":
        return x @ w + b
    return _conv_f64(x, w, b, 2 if kind == "grouped" else 1)


@pytest.mark.parametrize("kind", ["conv", "grouped", "dense"])
def test_int8_cpu_slice_is_the_quantized_arithmetic(kind, tmp_path):
    model, w, b = _one_layer_model(kind)
    lo, hi = -1.5, 2.5  # a zero point away from 0: padding must use it
    calib = tmp_path / "calibration.json"
    Calibration("minmax", 1, "test", {"conv2d_0" if kind != "dense" else "dense_0": [lo, hi]}).save(calib)
    exe = tvm_mulayer.compile(model, gpu="emulated", split="cpu", precision="native", calib=calib)
    assert exe.plan.layers[0].cpu_precision == "int8"
    x = np.random.default_rng(1).uniform(-2, 3, exe.inputs["x"][0]).astype(np.float32)  # some values clip
    scale, zp = activation_qparams(lo, hi)
    xq = np.clip(np.round(x.astype(np.float64) / scale) + zp, 0, 255) - zp  # (q - zp), exact integers
    axis = 1 if kind == "dense" else 0
    wq, wscale = quantize_weights(w, axis)
    shape = (1, -1) if kind == "dense" else (-1, 1, 1, 1)
    per_channel = scale * wscale.astype(np.float64)
    bias_q = np.round(b / per_channel)
    acc = _apply_layer(kind, xq, wq.astype(np.float64), bias_q)
    expected = acc * per_channel.reshape((1, -1) + (1,) * (acc.ndim - 2))
    got = exe.run(x)["y"]
    assert np.abs(got - expected).max() <= 1e-6 * np.abs(expected).max()
    assert not np.allclose(wscale.reshape(shape) * wq, w, atol=1e-7)  # the weights really are int8


@pytest.mark.parametrize("kind", ["conv", "grouped", "dense"])
def test_fp16_gpu_slice_rounds_inputs_and_weights_to_float16_only(kind):
    model, w, b = _one_layer_model(kind, seed=3)
    exe = tvm_mulayer.compile(model, gpu="emulated", split="gpu", precision="native")
    assert exe.plan.layers[0].gpu_precision == "fp16" and exe.calibration is None  # no int8 slice, no calibration
    x = np.random.default_rng(2).standard_normal(exe.inputs["x"][0]).astype(np.float32)
    half = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    expected = _apply_layer(kind, half(x), half(w), b.astype(np.float64))
    got = exe.run(x)["y"]
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    fp32 = ort_run(model, {"x": x})[0]
    assert np.abs(got - fp32).max() > 1e-6 * np.abs(fp32).max()  # and it is not the float32 result


# ---- whole networks ------------------------------------------------------------------
def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# the fast tier's int8 end-to-end check is the digits accuracy test
@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet1_1", "googlenet", "mobilenet_v1", "alexnet", "vgg16"])
def test_zoo_split_plans_agree_with_float32_onnxruntime(small_zoo, name, tmp_path):
    model = small_zoo[name]
    shape = input_shape(model)
    rng = np.random.default_rng(7)
    np.savez(tmp_path / "calib.npz", input=rng.standard_normal((16, *shape[1:])).astype(np.float32))
    exe = tvm_mulayer.compile(model, gpu="emulated", split=0.5, calib=tmp_path / "calib.npz")
    assert {lp.cpu_precision for lp in exe.plan.layers} == {"int8"}
    assert {lp.gpu_precision for lp in exe.plan.layers} == {"fp16"}
    top1, top5 = [], []
    for seed in range(4):
        x = np.random.default_rng(100 + seed).standard_normal(shape).astype(np.float32)
        expected = ort_run(model, {"input": x})[0].ravel()
        got = exe.run(x)["logits"].ravel()
        assert _cosine(got, expected) >= 0.999
        top1.append(got.argmax() == expected.argmax())
        top5.append(len(set(np.argsort(got)[-5:]) & set(np.argsort(expected)[-5:])))
    assert sum(top1) >= 3 and np.mean(top5) >= 4


@pytest.mark.slow
def test_copies_between_processors_carry_uint8_and_float16(small_zoo):
    exe = tvm_mulayer.compile(small_zoo["squeezenet1_1"], gpu="emulated", split=0.5)
    fp32 = tvm_mulayer.compile(small_zoo["squeezenet1_1"], gpu="emulated", split=0.5, precision="fp32")
    assert set(exe.crossing["to_gpu"]) == {"float16"}  # GPU slices read float16
    assert "uint8" in exe.crossing["to_cpu"]  # the CPU's int8 slices read uint8 ...
    # ... and only the network's float32 output comes back as float32
    assert exe.crossing["to_cpu"].get("float32", 0) <= 4 * int(np.prod(exe.plan.layers[-1].output_shape))
    total = lambda e: sum(sum(side.values()) for side in e.crossing.values())  # noqa: E731
    assert total(exe) < 0.45 * total(fp32)


# ---- calibration ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    with np.load(DIGITS / "digits_test.npz") as data:
        return onnx.load(str(DIGITS / "digits_cnn.onnx")), data["x"], data["y"]


def _accuracy(exe, x, y) -> float:
    return 100.0 * float(np.mean([exe.run(xi[None])["logits"].argmax() == yi for xi, yi in zip(x, y)]))


def test_quantized_plans_keep_digits_accuracy_within_half_a_point(digits):
    model, x, y = digits
    calib = DIGITS / "digits_calib.npz"
    reference = _accuracy(tvm_mulayer.compile(model, gpu="emulated", split="cpu", precision="fp32"), x, y)
    onnxruntime = 100.0 * float(np.mean([ort_run(model, {"image": xi[None]})[0].argmax() == yi for xi, yi in zip(x, y)]))
    assert reference == onnxruntime and reference > 95.0
    plans = {"CPU-only int8": "cpu", "GPU-only fp16": "gpu", "split 0.5": 0.5, "split 0.25": 0.25,
             "per layer": {"layers": {"conv1": 0.0, "conv2": 0.75, "fc1": 1.0, "fc2": 0.5}}}
    for label, split in plans.items():
        exe = tvm_mulayer.compile(model, gpu="emulated", split=split, calib=calib)
        accuracy = _accuracy(exe, x, y)
        assert abs(accuracy - reference) <= 0.5, f"{label}: {accuracy:.2f}% vs float32 {reference:.2f}%"


def test_calibration_is_saved_in_the_artifact_and_reused(digits, tmp_path):
    model, x, _ = digits
    exe = tvm_mulayer.compile(model, gpu="emulated", split=0.5, calib=DIGITS / "digits_calib.npz",
                              calib_method="minmax")
    artifact = exe.export(tmp_path / "artifact")
    saved = json.loads((artifact / "calibration.json").read_text())
    assert saved["samples"] == 64 and saved["method"] == "minmax"
    assert saved["ranges"]["conv2d_0"][0] < 0 < saved["ranges"]["conv2d_0"][1]  # images in [-1, 1]
    assert saved["ranges"]["conv2d_1"][0] == 0.0  # after ReLU
    loaded = tvm_mulayer.load(artifact)
    assert loaded.calibration.ranges == exe.calibration.ranges
    again = tvm_mulayer.compile(model, gpu="emulated", split=0.5, calib=artifact)
    assert again.calibration.ranges == exe.calibration.ranges
    np.testing.assert_array_equal(again.run(x[:1])["logits"], exe.run(x[:1])["logits"])


def test_percentile_range_is_inside_the_minmax_range(digits):
    model, _, _ = digits
    calib = DIGITS / "digits_calib.npz"
    ranges = {}
    for method in ("minmax", "percentile"):
        ranges[method] = tvm_mulayer.compile(model, gpu="emulated", split="cpu", calib=calib,
                                             calib_method=method, calib_percentile=99.0).calibration.ranges
    for layer, (lo, hi) in ranges["minmax"].items():
        p_lo, p_hi = ranges["percentile"][layer]
        assert lo <= p_lo <= p_hi <= hi
    assert any(ranges["percentile"][k][1] < ranges["minmax"][k][1] for k in ranges["minmax"])


def test_calibration_from_a_directory_of_npy(digits, tmp_path):
    model, x, _ = digits
    for i in range(3):
        np.save(tmp_path / f"sample{i}.npy", x[i * 4:(i + 1) * 4])  # stacked samples in each file
    exe = tvm_mulayer.compile(model, gpu="emulated", split=0.5, calib=tmp_path)
    assert exe.calibration.samples == 12 and str(tmp_path) in exe.calibration.source


def test_random_calibration_warns(digits, capsys):
    model, _, _ = digits
    exe = tvm_mulayer.compile(model, gpu="emulated", split=0.5)
    assert "random inputs" in capsys.readouterr().out and exe.calibration.source == "8 random inputs"


@pytest.mark.parametrize("data, words", [
    (np.zeros((4, 1, 7, 7), np.float32), "has shape"),
    (np.zeros((4, 1, 8, 8), np.uint8), "float arrays"),
    (np.full((4, 1, 8, 8), np.nan, np.float32), "NaN or Inf"),
])
def test_bad_calibration_data_is_refused_clearly(digits, tmp_path, data, words):
    model, _, _ = digits
    np.savez(tmp_path / "c.npz", image=data)
    with pytest.raises(MulayerError, match=words):
        tvm_mulayer.compile(model, gpu="emulated", split=0.5, calib=tmp_path / "c.npz")


def test_calibration_for_unknown_inputs_and_missing_files(digits, tmp_path):
    model, x, _ = digits
    np.savez(tmp_path / "two.npz", image=x[:2], other=x[:2])
    with pytest.raises(MulayerError, match="model's inputs are"):
        tvm_mulayer.compile(model, gpu="emulated", split=0.5, calib=tmp_path / "two.npz")
    with pytest.raises(MulayerError, match="no such file"):
        tvm_mulayer.compile(model, gpu="emulated", split=0.5, calib=tmp_path / "missing.npz")


def _dead_input_model():
    """A conv whose input is always 0 (x·0): a degenerate calibrated range."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Mul", ["x", "zero"], ["z"]),
             helper.make_node("Conv", ["z", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "dead", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
                               numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_degenerate_range_and_outlier_weights_keep_the_layer_in_float(tmp_path, capsys):
    exe = tvm_mulayer.compile(_dead_input_model(), gpu="emulated", split=0.5)
    layer = exe.plan.layers[0]
    assert layer.cpu_precision == "fp32" and "degenerate" in layer.note
    model, w, b = _one_layer_model("conv")
    w[2, 0, 0, 0] = 1000.0
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    exe = tvm_mulayer.compile(model, gpu="emulated", split=0.5)
    layer = exe.plan.layers[0]
    assert layer.cpu_precision == "fp32" and "outlier" in layer.note
    x = np.random.default_rng(0).standard_normal(exe.inputs["x"][0]).astype(np.float32)
    expected = ort_run(model, {"x": x})[0]
    assert _cosine(exe.run(x)["y"], expected) > 0.99999  # the fp16 half is the only rounding left


@pytest.mark.parametrize("input_channels, kernel, precision", [(3, 1, "fp32"), (4, 1, "int8")])
def test_a_layer_summing_fewer_than_four_products_keeps_its_cpu_slice_in_float(input_channels, kernel, precision):
    """int8 gains only where each output sums at least 4 products (the packed multiply-adds);
    below, the input's rounding is not averaged down (the fuzzer's 1-channel chains drifted 5%)."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[kernel // 2] * 4)]
    graph = helper.make_graph(nodes, "thin",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, input_channels, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
                              [numpy_helper.from_array(rng.standard_normal((8, input_channels, kernel, kernel))
                                                       .astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    layer = tvm_mulayer.compile(model, gpu="emulated", split=0.5).plan.layers[0]
    assert layer.cpu_precision == precision
    assert ("too few for int8" in layer.note) == (precision == "fp32")


def test_plan_json_can_set_precision_per_layer(digits, tmp_path):
    model, _, _ = digits
    plan = {"default_ratio": 0.5, "layers": {"conv1": {"ratio": 0.5, "cpu_precision": "fp32"},
                                            "fc1": {"ratio": 0.5, "gpu_precision": "fp32"}}}
    exe = tvm_mulayer.compile(model, gpu="emulated", split=plan, calib=DIGITS / "digits_calib.npz")
    by_source = {lp.source: lp for lp in exe.plan.layers}
    assert by_source["conv1"].cpu_precision == "fp32" and by_source["conv2"].cpu_precision == "int8"
    assert by_source["fc1"].gpu_precision == "fp32" and by_source["fc2"].gpu_precision == "fp16"
    saved = tmp_path / "plan.json"
    exe.plan.save(saved)  # a saved plan keeps its precisions when compiled again
    again = tvm_mulayer.compile(model, gpu="emulated", split=str(saved), calib=DIGITS / "digits_calib.npz")
    assert [(lp.cpu_precision, lp.gpu_precision) for lp in again.plan.layers] == \
        [(lp.cpu_precision, lp.gpu_precision) for lp in exe.plan.layers]


def test_a_model_compiled_again_reuses_its_calibration_and_other_weights_do_not(digits, monkeypatch, tmp_path):
    """Calibrating builds and runs the float32 model; a second plan of the same model and
    samples in one process reuses the ranges, while the same graph with other weights is
    calibrated anew (the key hashes the weights)."""
    from tvm_mulayer.compiler import calibration

    calibrated = []
    real = calibration.calibrate
    monkeypatch.setattr(calibration, "calibrate", lambda *args, **kw: calibrated.append(1) or real(*args, **kw))
    model, _, _ = digits
    with np.load(DIGITS / "digits_calib.npz") as data:
        name, shape = data.files[0], data[data.files[0]].shape
    calib = tmp_path / "samples.npz"  # samples no other test uses: nothing cached before
    np.savez(calib, **{name: np.random.default_rng(11).standard_normal((3, *shape[1:])).astype("float32")})
    first, second = (tvm_mulayer.compile(model, gpu="emulated", split=split, calib=calib) for split in (0.5, 0.25))
    assert len(calibrated) == 1 and first.calibration.ranges == second.calibration.ranges
    other = onnx.load(str(DIGITS / "digits_cnn.onnx"))
    weight = other.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(2 * numpy_helper.to_array(weight), weight.name))
    tvm_mulayer.compile(other, gpu="emulated", split=0.5, calib=calib)
    assert len(calibrated) == 2


def test_a_planned_plan_saved_to_json_takes_the_compiles_precision(digits, tmp_path):
    """A plan the planner wrote (`mulayer plan -o`) has no precisions yet: compiled with
    --precision native its slices are int8/fp16 (its JSON carried fp32 for every layer
    before, which the compile obeyed: VGG-16 ran in fp32, 7x slower)."""
    from tvm_mulayer.compiler.build import ModelCompiler

    model, _, _ = digits
    planned = ModelCompiler.from_onnx(model, gpu="emulated").plan(0.5)
    saved = tmp_path / "plan.json"
    planned.save(saved)
    assert not any("cpu_precision" in entry for entry in json.loads(saved.read_text())["layers"])
    exe = tvm_mulayer.compile(model, gpu="emulated", split=str(saved), precision="native",
                              calib=DIGITS / "digits_calib.npz")
    assert {lp.cpu_precision for lp in exe.plan.layers} == {"int8"}
    assert {lp.gpu_precision for lp in exe.plan.layers} == {"fp16"}


def test_cli_prints_precisions_and_bytes_crossing(tmp_path, capsys):
    model = str(DIGITS / "digits_cnn.onnx")
    assert main(["run", model, "--gpu", "emulated", "--split", "0.5", "--calib", str(DIGITS / "digits_calib.npz")]) == 0
    out = capsys.readouterr().out
    assert "gpu/cpu dtype" in out and "fp16/int8" in out
    assert "bytes crossing per inference" in out and "uint8" in out and "float16" in out
    assert main(["run", model, "--gpu", "emulated", "--split", "0.5", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "fp32/fp32" in out and "uint8" not in out and "random inputs" not in out
    assert main(["run", model, "--precision", "int4"]) == 2
    assert "precision 'int4'" in capsys.readouterr().err
