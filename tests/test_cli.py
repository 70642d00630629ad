"""The `mulayer` command as a user runs it: compile, run, zoo, and one clear error per bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_mulayer.base import zoo
from tvm_mulayer.cli import main

from conftest import ort_run, relative_error


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "squeezenet.onnx"
    assert main(["zoo", "export", "squeezenet1_1", "--small", "-o", str(path)]) == 0
    return path


def _conv_model(dynamic=False, extra_node=None, out_shape=(1, 6, 8, 8)):
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype("float32"), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    if extra_node is not None:
        nodes.append(extra_node)
    dims = ["batch", 3, 8, 8] if dynamic else [1, 3, 8, 8]
    out = nodes[-1].output[0]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_zoo_list_names_every_model(capsys):
    assert main(["zoo", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in zoo.NAMES)


def test_compile_then_run_matches_onnxruntime(small_model, tmp_path, capsys):
    artifact = tmp_path / "art"
    assert main(["compile", str(small_model), "-o", str(artifact), "--gpu", "emulated", "--split", "0.6",
                 "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "emulated" in printed and "conv2d_0" in printed and "fire2/squeeze1x1" in printed
    x = np.random.default_rng(5).standard_normal((1, 3, 47, 47)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert main(["run", str(artifact), "--input", f"input={tmp_path / 'x.npy'}", "-o", str(out), "--repeat", "3"]) == 0
    printed = capsys.readouterr().out
    assert "median latency over 3 runs" in printed
    with np.load(out) as data:
        assert list(data.files) == ["logits"]
        expected = ort_run(onnx.load(str(small_model)), {"input": x})[0]
        assert relative_error(data["logits"], expected) < 1e-4


def test_run_onnx_directly_with_a_per_layer_plan_file(small_model, tmp_path, capsys):
    plan = {"default_ratio": 0.0, "layers": {"fire2/squeeze1x1": {"placement": "gpu"}, "conv2d_3": 0.5}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    x = np.random.default_rng(1).standard_normal((1, 3, 47, 47)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(small_model), "--split", str(tmp_path / "plan.json"), "--input",
                 str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npz"), "--precision", "fp32"]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith("conv2d_")}
    assert " gpu " in rows["conv2d_1"] and " split " in rows["conv2d_3"] and " cpu " in rows["conv2d_2"]
    with np.load(tmp_path / "o.npz") as data:
        expected = ort_run(onnx.load(str(small_model)), {"input": x})[0]
        assert relative_error(data["logits"], expected) < 1e-4


def _error_of(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mulayer: error: ") and "Traceback" not in err and err.count("\n") == 1
    return err


def test_not_an_onnx_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 this is not a protobuf")
    assert "not an ONNX model" in _error_of(["compile", str(bad), "-o", str(tmp_path / "a")], capsys)


def test_an_op_tvm_cannot_import(tmp_path, capsys):
    model = _conv_model(extra_node=helper.make_node("Det", ["y"], ["z"]), out_shape=(1, 6))
    path = tmp_path / "det.onnx"
    onnx.save(model, path)
    err = _error_of(["compile", str(path), "-o", str(tmp_path / "a")], capsys)
    assert "cannot import" in err and "Det" in err


def test_dynamic_shape_needs_a_given_shape(tmp_path, capsys):
    path = tmp_path / "dyn.onnx"
    onnx.save(_conv_model(dynamic=True, out_shape=("batch", 6, 8, 8)), path)
    err = _error_of(["compile", str(path), "-o", str(tmp_path / "a")], capsys)
    assert "dynamic shape" in err and "--shape x=" in err
    assert main(["compile", str(path), "-o", str(tmp_path / "a"), "--shape", "x=1,3,8,8"]) == 0


@pytest.mark.parametrize("ratio", ["1.5", "-0.1", "nan"])
def test_ratio_outside_unit_interval(small_model, tmp_path, ratio, capsys):
    err = _error_of(["compile", str(small_model), "-o", str(tmp_path / "a"), "--split", ratio], capsys)
    assert "outside [0, 1]" in err


def test_plan_naming_an_unknown_layer(small_model, tmp_path, capsys):
    (tmp_path / "plan.json").write_text(json.dumps({"layers": {"conv2d_99": 0.5}, "default_ratio": 0.5}))
    err = _error_of(["compile", str(small_model), "-o", str(tmp_path / "a"), "--split", str(tmp_path / "plan.json")], capsys)
    assert "conv2d_99" in err and "does not have" in err


def test_gpu_preset_without_such_a_device(tmp_path, capsys):
    model = tmp_path / "conv.onnx"
    onnx.save(_conv_model(), model)
    artifact = tmp_path / "cuda"
    # all on the CPU: no CUDA kernel to compile, but the artifact still names its GPU
    assert main(["compile", str(model), "-o", str(artifact), "--gpu", "cuda", "--split", "cpu"]) == 0
    capsys.readouterr()
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("this machine has a CUDA GPU")
    err = _error_of(["run", str(artifact)], capsys)
    assert "no cuda device" in err and "--gpu emulated" in err


def test_unknown_presets(small_model, tmp_path, capsys):
    assert "unknown GPU preset" in _error_of(["compile", str(small_model), "-o", str(tmp_path / "a"), "--gpu", "tpu"], capsys)
    assert "unknown CPU preset" in _error_of(["compile", str(small_model), "-o", str(tmp_path / "a"), "--cpu", "z80"], capsys)


def test_unsplittable_layer_runs_whole_and_the_table_says_so(tmp_path, capsys):
    rng = np.random.default_rng(0)
    model = _conv_model(extra_node=helper.make_node("ConvTranspose", ["y", "wt"], ["z"], name="deconv"),
                        out_shape=(1, 4, 10, 10))
    model.graph.initializer.append(numpy_helper.from_array(rng.standard_normal((6, 4, 3, 3)).astype("float32"), "wt"))
    path = tmp_path / "deconv.onnx"
    onnx.save(model, path)
    x = rng.standard_normal((1, 3, 8, 8)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(path), "--split", "0.5", "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npz"),
                 "--precision", "fp32"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("conv2d_transpose_0"))
    assert "not split" in row and "whole on the" in row
    with np.load(tmp_path / "o.npz") as data:
        assert relative_error(data["z"], ort_run(model, {"x": x})[0]) < 1e-4


def test_console_script_exit_code_and_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tvm_mulayer.cli", "run", str(tmp_path / "missing.onnx")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr
