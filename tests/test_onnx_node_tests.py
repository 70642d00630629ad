"""ONNX's own backend node tests, for the ops we split or pass through, run through tvm_mulayer.

The cases are ONNX's: `onnx/backend/test/data/node/test_*/model.onnx` with
`test_data_set_0/*.pb` where the installed onnx package ships them; the wheel on our
machines ships only the generators (`onnx.backend.test.case.node`), so then the same
cases — model and input/expected-output arrays — are built in memory from those. Ops: Conv,
Gemm, MatMul, MaxPool, AveragePool, GlobalAveragePool, Concat, Relu, BatchNormalization,
LRN, Clip, Flatten, Add (cases whose graph uses only these).

Each case runs in two forms, both with a forced split of 0.5, compared with the expected
outputs at ONNX's backend-test tolerance (rtol 1e-3, atol 1e-7; some expected values are rounded):

* `whole`: the model as ONNX ships it. Node tests feed weights as graph inputs, so nothing is
  a layer and the model must simply work whole (on the CPU).
* `weights`: every input after the first becomes an initializer, so a Conv/Gemm/MatMul is a
  real layer and its output channels really are divided between the two devices (and a
  BatchNormalization/Add/Clip with constant operands takes the per-channel paths).

Skipped, with the reason: a first input that is not a float32 tensor, dynamic shapes, and
models TVM's importer cannot handle — for those the test first asserts that compile raised a
clean MulayerError (no other exception type). `test_zz_report` prints how many ran.
"""

from __future__ import annotations

import collections
import glob
import importlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import tvm_mulayer

OPS = {"Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Relu",
       "BatchNormalization", "LRN", "Clip", "Flatten", "Add"}
_GENERATORS = ["conv", "gemm", "matmul", "maxpool", "averagepool", "globalaveragepool", "concat", "relu",
               "batch_normalization", "lrn", "clip", "flatten", "add"]
RTOL, ATOL = 1e-3, 1e-7  # ONNX backend-test tolerance: some expected values are rounded (0.1511)
SPLIT = 0.5
RESULTS: dict = collections.Counter()


def _uses_only_our_ops(model: onnx.ModelProto) -> bool:
    return bool(model.graph.node) and all(n.op_type in OPS and n.domain in ("", "ai.onnx") for n in model.graph.node)


def _from_data_dir():
    root = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
    cases = {}
    for model_path in sorted(glob.glob(str(root / "test_*" / "model.onnx"))):
        model = onnx.load(model_path)
        if not _uses_only_our_ops(model):
            continue
        data = Path(model_path).parent / "test_data_set_0"
        if not data.is_dir():
            continue

        def read(prefix):
            files = sorted(data.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
            out = []
            for f in files:
                tensor = onnx.TensorProto()
                tensor.ParseFromString(f.read_bytes())
                out.append(numpy_helper.to_array(tensor))
            return out

        cases[Path(model_path).parent.name] = (model, read("input"), read("output"))
    return cases


def _from_generators():
    import onnx.backend.test.case.node as node_cases

    for module in _GENERATORS:  # importing a generator module registers its cases
        importlib.import_module(f"onnx.backend.test.case.node.{module}")
    cases = {}
    for case in node_cases._NodeTestCases:  # noqa: SLF001 - what collect_testcases returns
        if not _uses_only_our_ops(case.model):
            continue
        inputs, outputs = case.data_sets[0]
        to_np = lambda v: numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)  # noqa: E731
        cases[case.name] = (case.model, [to_np(v) for v in inputs], [to_np(v) for v in outputs])
    return cases


def _load_cases() -> tuple:
    cases = _from_data_dir()
    if cases:
        return cases, "onnx/backend/test/data/node"
    return _from_generators(), "onnx.backend.test.case.node (generated in memory)"


CASES, SOURCE = _load_cases()


def _static(value_info) -> bool:
    dims = value_info.type.tensor_type.shape.dim
    return value_info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims)


def _with_weights_as_initializers(model: onnx.ModelProto, arrays: list) -> onnx.ModelProto:
    """Inputs 1.. become initializers holding the test's values (the data input stays)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    keep = graph.input[0]
    for value, array in zip(list(graph.input)[1:], arrays[1:]):
        graph.initializer.append(numpy_helper.from_array(array, value.name))
    del graph.input[1:]
    graph.input[0].CopyFrom(keep)
    return model


def _skip(reason: str, kind: str):
    RESULTS[f"skipped: {kind}"] += 1
    pytest.skip(reason)


@pytest.mark.parametrize("form", ["whole", "weights"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_node_case(name, form):
    model, inputs, expected = CASES[name]
    graph_inputs = list(model.graph.input)
    if form == "weights" and len(graph_inputs) < 2:
        RESULTS["not applicable (one input)"] += 1
        pytest.skip("one input: the 'whole' form covers it")
    if form == "weights" and model.graph.node[0].op_type == "Concat":
        RESULTS["not applicable (one input)"] += 1
        pytest.skip("Concat of constants folds away; the 'whole' form covers it")
    first = inputs[0]
    if first.dtype != np.float32:
        _skip(f"input {graph_inputs[0].name!r} is {first.dtype}, not a float32 tensor", "not float")
    if not all(_static(v) for v in [*graph_inputs, *model.graph.output]):
        _skip("dynamic (or unknown) shapes", "dynamic shape")
    if form == "whole" and any(a.dtype != np.float32 for a in inputs):
        _skip("a non-float32 input", "not float")
    feeds = {graph_inputs[0].name: first}
    if form == "whole":
        feeds = {v.name: a for v, a in zip(graph_inputs, inputs)}
    else:
        model = _with_weights_as_initializers(model, inputs)
    try:
        executable = tvm_mulayer.compile(model, cpu="host", gpu="emulated", split=SPLIT, precision="fp32")
    except tvm_mulayer.MulayerError as err:  # a clean refusal: that is all we ask of it
        RESULTS["rejected with a clean MulayerError"] += 1
        pytest.skip(f"tvm_mulayer refuses it cleanly: {err}")
    actual = executable.run(feeds)
    assert list(actual) == [o.name for o in model.graph.output]
    for (out_name, value), want in zip(actual.items(), expected):
        assert value.shape == want.shape, out_name
        np.testing.assert_allclose(value, want, rtol=RTOL, atol=ATOL, err_msg=f"{name} output {out_name}")
    layers = [lp for lp in executable.plan.layers if lp.placement == "split"]
    RESULTS[f"ran ({form}{', a layer split' if layers else ''})"] += 1


def test_zz_report(capsys):
    """How many cases ran, skipped and why (run last: pytest keeps file order)."""
    with capsys.disabled():
        print(f"\nONNX node tests from {SOURCE}: {len(CASES)} cases x 2 forms")
        for key, count in sorted(RESULTS.items()):
            print(f"  {count:4d} {key}")
    if RESULTS:
        assert sum(v for k, v in RESULTS.items() if k.startswith("ran")) >= 40
