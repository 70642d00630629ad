"""tvm-mulayer as a Relax pipeline (`tvm_mulayer.get_pipeline` for `tvm.compile`), as a TVM user
drives it: modules from TVM's ONNX frontend, its PyTorch exporter and TVMScript, the README's
example, users' own passes around ours, SplitChannels taking any split request, and one clear
MulayerError for a module not in the form the split needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx
from tvm.script import ir as I
from tvm.script import relax as R

import tvm_mulayer
from tvm_mulayer import MulayerError
from tvm_mulayer.base import zoo
from tvm_mulayer.base.layers import find_layers
from tvm_mulayer.base.plan import make_plan
from tvm_mulayer.base.processors import resolve_processors
from tvm_mulayer.cli import main
from tvm_mulayer.passes import SplitChannels

from conftest import input_shape, ort_run, relative_error

DIGITS_CNN = Path(__file__).parent / "data" / "digits" / "digits_cnn.onnx"

ROOT = Path(__file__).resolve().parent.parent
FP32 = dict(cpu="host", gpu="emulated", precision="fp32")
F32, BOOL = "float32", "bool"  # TVMScript dtypes (a name, not a string annotation pyflakes would parse)


@I.ir_module
class TwoConvNet:
    """Conv, bias, ReLU, pool, strided conv, dense: weights as parameters, bindings outside a
    dataflow block (pure all the same)."""

    @R.function
    def main(x: R.Tensor((1, 3, 16, 16), F32), w1: R.Tensor((16, 3, 3, 3), F32),
             b1: R.Tensor((1, 16, 1, 1), F32), w2: R.Tensor((24, 16, 3, 3), F32),
             w3: R.Tensor((384, 10), F32)) -> R.Tensor((1, 10), F32):
        R.func_attr({"num_input": 1})
        y = R.nn.relu(R.add(R.nn.conv2d(x, w1, padding=(1, 1)), b1))
        y = R.nn.max_pool2d(y, pool_size=(2, 2), strides=(2, 2))
        y = R.nn.relu(R.nn.conv2d(y, w2, strides=(2, 2), padding=(1, 1)))
        return R.matmul(R.reshape(y, (1, 384)), w3)


def _two_conv_weights() -> dict:
    rng = np.random.default_rng(11)
    shapes = {"w1": (16, 3, 3, 3), "b1": (1, 16, 1, 1), "w2": (24, 16, 3, 3), "w3": (384, 10)}
    return {name: (rng.standard_normal(shape) * 0.3).astype("float32") for name, shape in shapes.items()}


def _bound_two_conv_net(weights: dict) -> tvm.IRModule:
    return relax.transform.BindParams("main", {name: tvm.runtime.tensor(w) for name, w in weights.items()})(TwoConvNet)


def _conv2d(x, w, stride: int, pad: int):
    """NCHW/OIHW convolution in float64."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2:]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, w.astype(np.float64))


def _two_conv_reference(x, weights: dict, activation=lambda v: np.maximum(v, 0)):
    y = activation(_conv2d(x, weights["w1"], 1, 1) + weights["b1"])
    y = y.reshape(1, 16, 8, 2, 8, 2).max(axis=(3, 5))
    y = activation(_conv2d(y, weights["w2"], 2, 1))
    return y.reshape(1, 384) @ weights["w3"].astype(np.float64)


def _run(pipeline, executable, *inputs) -> list:
    """The compiled main's outputs for numpy `inputs`, on the pipeline's devices and weights."""
    vm = relax.VirtualMachine(executable, pipeline.devices)
    result = vm["main"](*(tvm.runtime.tensor(x) for x in inputs), *pipeline.weights)
    return [result.numpy()] if hasattr(result, "numpy") else [value.numpy() for value in result]


@pytest.mark.slow
def test_readme_relax_example_runs_as_written_and_matches_onnxruntime(tmp_path, monkeypatch):
    section = (ROOT / "README.md").read_text().split("## In a TVM pipeline")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    model = zoo.build("squeezenet1_1")  # what the README's Set-up exports as squeezenet.onnx
    onnx.save(model, tmp_path / "squeezenet.onnx")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    expected = ort_run(model, {"input": namespace["x"]})[0]
    assert relative_error(namespace["logits"], expected) < 1e-5


def test_onnx_frontend_module_gives_the_outputs_of_mulayer_compile(tmp_path):
    """The same ONNX model, plan, precision and calibration samples: `mulayer compile` and
    tvm.compile with the pipeline on TVM's own import give identical plans and outputs (the
    digits CNN: two convs, a pool and two dense layers, every kind of slice)."""
    model = onnx.load(str(DIGITS_CNN))
    onnx.save(model, tmp_path / "model.onnx")
    shape = input_shape(model)
    rng = np.random.default_rng(7)
    np.savez(tmp_path / "calib.npz", image=rng.standard_normal((4, *shape[1:])).astype("float32"))
    assert main(["compile", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "art"), "--gpu", "emulated",
                 "--split", "0.5", "--calib", str(tmp_path / "calib.npz")]) == 0
    artifact = tvm_mulayer.load(tmp_path / "art")

    pipeline = tvm_mulayer.get_pipeline(split=0.5, cpu="host", gpu="emulated", calib=tmp_path / "calib.npz")
    executable = tvm.compile(from_onnx(model), target=None, relax_pipeline=pipeline)
    slices = lambda plan: [(lp.gpu_channels, lp.cpu_precision, lp.gpu_precision) for lp in plan.layers]  # noqa: E731
    assert slices(pipeline.plan) == slices(artifact.plan)
    assert {"int8", "fp16"} <= {lp.cpu_precision for lp in pipeline.plan.layers} | {
        lp.gpu_precision for lp in pipeline.plan.layers}
    assert pipeline.calibration.ranges == artifact.calibration.ranges
    x = rng.standard_normal(shape).astype("float32")
    np.testing.assert_array_equal(_run(pipeline, executable, x)[0], artifact.run(x)["logits"])


def test_split_auto_plans_with_the_predictor():
    """split="auto" takes the partitioner's plan: with a GPU predicted 20x faster, every layer."""
    from tvm_mulayer.planning.predictor import train

    from test_partitioner import _synthetic_rows

    cpu, gpu = resolve_processors("host", "emulated")
    predictor = train(_synthetic_rows(1e9, 20e9), cpu, gpu)
    model = onnx.load(str(DIGITS_CNN))
    pipeline = tvm_mulayer.get_pipeline(split="auto", predictor=predictor, **FP32)
    executable = tvm.compile(from_onnx(model), target=None, relax_pipeline=pipeline)
    assert {lp.placement for lp in pipeline.plan.layers} == {"gpu"}
    assert pipeline.plan.description.startswith("auto:")
    x = np.random.default_rng(1).standard_normal(input_shape(model)).astype("float32")
    assert relative_error(_run(pipeline, executable, x)[0], ort_run(model, {"image": x})[0]) < 1e-5


def test_pytorch_exported_module_splits_and_matches_torch():
    torch = pytest.importorskip("torch")
    from tvm.relax.frontend.torch import from_exported_program

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(16)
            self.conv2 = torch.nn.Conv2d(16, 24, 3, stride=2, padding=1)
            self.fc = torch.nn.Linear(24, 10)

        def forward(self, x):
            y = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv1(x))), 2)
            y = torch.relu(self.conv2(y))
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():  # a batch norm that is not the identity, to be folded into conv1
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 32, 32)
    mod = from_exported_program(torch.export.export(net, (x,)))
    pipeline = tvm_mulayer.get_pipeline(split=0.5, **FP32)
    executable = tvm.compile(mod, target=None, relax_pipeline=pipeline)
    assert [(lp.name, lp.placement) for lp in pipeline.plan.layers] == [
        ("conv2d_0", "split"), ("conv2d_1", "split"), ("dense_0", "split")]
    with torch.no_grad():
        expected = net.double()(x.double()).numpy()
    assert relative_error(_run(pipeline, executable, x.numpy())[0], expected) < 1e-5


def test_tvmscript_module_with_weights_bound_by_the_user():
    weights = _two_conv_weights()
    pipeline = tvm_mulayer.get_pipeline(split=0.5, **FP32)
    with pytest.raises(MulayerError, match=r"takes its weights as parameters \(w1, b1, w2, w3\).*BindParams"):
        tvm.compile(TwoConvNet, target=None, relax_pipeline=pipeline)
    executable = tvm.compile(_bound_two_conv_net(weights), target=None, relax_pipeline=pipeline)
    assert [lp.placement for lp in pipeline.plan.layers] == ["split"] * 3
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype("float32")
    assert relative_error(_run(pipeline, executable, x)[0], _two_conv_reference(x, weights)) < 1e-5


@relax.expr_functor.mutator
class _ReluToRelu6(relax.PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.relu":
            return relax.op.clip(call.args[0], 0, 6)
        return call


@tvm.transform.module_pass(opt_level=0, name="ReluToRelu6")
def relu_to_relu6(mod, _ctx):
    """A user's graph rewrite, run before the split."""
    mod["main"] = _ReluToRelu6().visit_expr(mod["main"])
    return mod


def test_users_passes_run_before_and_after_ours():
    weights = _two_conv_weights()
    seen = {}

    @tvm.transform.module_pass(opt_level=0, name="RecordKernels")
    def record_kernels(mod, _ctx):
        """A user's look at the lowered module: its kernels' targets, its weights' devices."""
        seen["targets"] = {func.attrs["target"].kind.name for func in mod.functions.values()
                           if isinstance(func, tvm.tirx.PrimFunc)}
        seen["kernels"] = [gv.name_hint for gv in mod.get_global_vars()]
        seen["weight devices"] = {int(p.ty.vdevice.vdevice_id) for p in mod["main"].params[1:]}
        return mod

    pipeline = tvm_mulayer.get_pipeline(split=0.5, **FP32)
    executable = tvm.compile(_bound_two_conv_net(weights), target=None,
                             relax_pipeline=tvm.transform.Sequential([relu_to_relu6, pipeline, record_kernels]))
    assert seen["targets"] == {"llvm"} and seen["weight devices"] == {0, 1}
    assert any("conv2d" in name and "clip" in name for name in seen["kernels"])  # ReLU6, fused after the conv
    x = (np.random.default_rng(4).standard_normal((1, 3, 16, 16)) * 8).astype("float32")
    expected = _two_conv_reference(x, weights, activation=lambda v: np.clip(v, 0, 6))
    assert np.abs(_two_conv_reference(x, weights) - expected).max() > 1.0  # ReLU6 made a difference
    assert relative_error(_run(pipeline, executable, x)[0], expected) < 1e-5


def _dynamic_batch() -> tvm.IRModule:
    """main(x: [n, 3, 8, 8]) -> relu(x)."""
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([tvm.tirx.Var("n", "int64"), 3, 8, 8], F32))
    with builder.function("main", [x]):
        builder.emit_func_output(builder.emit(relax.op.nn.relu(x)))
    return builder.get()


@I.ir_module
class Impure:
    @R.function(pure=False)
    def main(x: R.Tensor((1, 3, 8, 8), F32)) -> R.Tensor((1, 3, 8, 8), F32):
        R.print(x, format="x: {}")
        return R.nn.relu(x)


@I.ir_module
class Branching:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), F32), flag: R.Tensor((), BOOL)) -> R.Tensor((1, 3, 8, 8), F32):
        if flag:
            y = R.nn.relu(x)
        else:
            y = R.negative(x)
        return y


@I.ir_module
class NoMain:
    @R.function
    def forward(x: R.Tensor((1, 3, 8, 8), F32)) -> R.Tensor((1, 3, 8, 8), F32):
        return R.nn.relu(x)


@pytest.mark.parametrize("module,message", [
    (TwoConvNet, r"'main' takes its weights as parameters"),
    (_dynamic_batch(), r"input 'x' of 'main' is R.Tensor\(\(n, 3, 8, 8\).*static shape"),
    (Impure, r"not pure dataflow: _ = R.print\(x, format=.* is an impure call"),
    (Branching, r"not pure dataflow: y is control flow \(an If on flag\)"),
    (NoMain, r"no function 'main' \(it has forward\)"),
])
def test_a_module_in_the_wrong_form_gets_one_clear_error(module, message):
    with pytest.raises(MulayerError, match=message):
        tvm.compile(module, target=None, relax_pipeline=tvm_mulayer.get_pipeline(split=0.5, **FP32))
    cpu, gpu = resolve_processors("host", "emulated")
    with pytest.raises(MulayerError, match=message):  # the pass alone says the same
        SplitChannels(0.5, cpu.tvm_target(), gpu.tvm_target())(module)


def test_bad_requests_and_misuse_get_one_clear_error():
    with pytest.raises(MulayerError, match="unknown GPU preset 'gpu0'"):
        tvm_mulayer.get_pipeline(split=0.5, gpu="gpu0")
    module = _bound_two_conv_net(_two_conv_weights())
    with pytest.raises(MulayerError, match=r"ratio 1.5 is outside \[0, 1\]"):
        tvm.compile(module, target=None, relax_pipeline=tvm_mulayer.get_pipeline(split=1.5, **FP32))
    pipeline = tvm_mulayer.get_pipeline(split="cpu", **FP32)
    with pytest.raises(MulayerError, match="has not compiled a module yet"):
        pipeline.weights
    tvm.compile(module, target=None, relax_pipeline=pipeline)
    tvm.compile(module, target=None, relax_pipeline=pipeline)  # the same model again: the same weights
    with pytest.raises(MulayerError, match="already compiled another module"):
        tvm.compile(_bound_two_conv_net({**_two_conv_weights(), "w3": np.ones((384, 10), "float32")}),
                    target=None, relax_pipeline=pipeline)


def test_split_channels_takes_a_ratio_a_plan_dict_a_json_file_or_a_plan(tmp_path):
    module = _bound_two_conv_net(_two_conv_weights())
    cpu, gpu = resolve_processors("host", "emulated")
    layers = find_layers(module["main"])
    multiple = max(cpu.channel_multiple, gpu.channel_multiple)
    spec = {"layers": {"conv2d_0": 0.25, "dense_0": {"placement": "gpu"}}, "default_ratio": 0.5}
    (tmp_path / "plan.json").write_text(json.dumps(spec))
    requests = {"ratio": (0.5, make_plan(layers, 0.5, multiple)),
                "dict": (spec, make_plan(layers, spec, multiple)),
                "file": (str(tmp_path / "plan.json"), make_plan(layers, spec, multiple)),
                "placement": ("gpu", make_plan(layers, "gpu", multiple))}
    requests["plan"] = (requests["dict"][1], requests["dict"][1])
    for name, (request, expected) in requests.items():
        split = SplitChannels(request, cpu.tvm_target(), gpu.tvm_target())
        split(module)
        assert [lp.gpu_channels for lp in split.plan.layers] == [lp.gpu_channels for lp in expected.layers], name
    assert [lp.gpu_channels for lp in requests["dict"][1].layers] == [4, 12, 10]
    other = make_plan(find_layers(from_onnx(zoo.build("squeezenet1_1", **zoo.small("squeezenet1_1")))["main"]), 0.5, 8)
    with pytest.raises(MulayerError, match="do not match the module's layers"):
        SplitChannels(other, cpu.tvm_target(), gpu.tvm_target())(module)


def test_passes_and_schedules_are_attributes_after_import_tvm_mulayer():
    """As the README writes them (`tvm_mulayer.passes.SplitChannels`), after a plain
    `import tvm_mulayer` in a fresh interpreter (no test has imported them yet)."""
    code = ("import tvm_mulayer\n"
            "print(tvm_mulayer.passes.SplitChannels.__name__, tvm_mulayer.schedules.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.stdout.split() == ["SplitChannels", "tvm_mulayer.schedules"], result.stderr
