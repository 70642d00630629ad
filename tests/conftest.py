"""Shared helpers: onnxruntime references and the error measure the numerical tests use."""

from __future__ import annotations

import numpy as np
import onnx
import pytest


def ort_run(model: onnx.ModelProto, inputs: dict) -> list:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def relative_error(actual, expected) -> float:
    """max |a - e| / max |e|, computed in float64."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def input_shape(model: onnx.ModelProto, index: int = 0) -> tuple:
    return tuple(d.dim_value for d in model.graph.input[index].type.tensor_type.shape.dim)


@pytest.fixture(scope="session")
def small_zoo():
    """Small variants of every zoo model, built once."""
    from tvm_mulayer import zoo

    return {name: zoo.build(name, **zoo.small(name)) for name in zoo.NAMES}
