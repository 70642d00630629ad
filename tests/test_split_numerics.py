"""Every zoo model, split at every ratio the issue names and by a random per-layer plan,
gives onnxruntime's float32 answer on the emulated two-device machine.

Both devices compute in float32 and a split only reorders which kernel computes which
channel, so the only differences are float32 summation order: relative error < 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest

import tvm_mulayer
from tvm_mulayer.base import zoo

from conftest import fast_params, input_shape, ort_run, relative_error

RATIOS = [0.0, 0.25, 0.5, 0.73, 1.0]


def _check(model, split):
    x = np.random.default_rng(7).standard_normal(input_shape(model)).astype("float32")
    expected = ort_run(model, {"input": x})[0]
    executable = tvm_mulayer.compile(model, cpu="host", gpu="emulated", split=split, precision="fp32")
    actual = executable.run({"input": x})["logits"]
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) < 1e-4
    return executable


@pytest.mark.parametrize("name, ratio", fast_params(
    [("squeezenet1_1", 0.5)], [(name, ratio) for name in zoo.NAMES for ratio in RATIOS
                               if (name, ratio) != ("squeezenet1_1", 0.5)]))
def test_global_ratio_matches_onnxruntime(small_zoo, name, ratio):
    executable = _check(small_zoo[name], ratio)
    placements = {lp.placement for lp in executable.plan.layers}
    if ratio == 0.0:
        assert placements == {"cpu"}
    elif ratio == 1.0:
        assert placements == {"gpu"}
    else:
        assert "split" in placements


# the fast tier's per-layer plans are the fuzz test's
@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.NAMES)
def test_random_per_layer_plan_matches_onnxruntime(small_zoo, name):
    from tvm_mulayer.compiler.frontend import import_onnx
    from tvm_mulayer.base.layers import find_layers

    model = small_zoo[name]
    mod, _ = import_onnx(model)
    rng = np.random.default_rng(sum(map(ord, name)))
    choices = [0.0, 1.0, 0.1, 0.3, 0.5, 0.66, 0.9]
    plan = {"layers": {layer.name: float(rng.choice(choices)) for layer in find_layers(mod["main"])}}
    executable = _check(model, plan)
    ratios = {lp.name: lp.ratio for lp in executable.plan.layers}
    assert ratios == plan["layers"]
    assert len({lp.placement for lp in executable.plan.layers}) >= 2
