"""Plan resolution: ratio rounding to processor-friendly channel counts, per-layer specs, JSON."""

from __future__ import annotations

import json

import pytest

from tvm_mulayer.base.errors import MulayerError
from tvm_mulayer.base.layers import Layer
from tvm_mulayer.base.plan import Plan, make_plan, round_split


def _conv(name, channels, groups=1, in_channels=None):
    in_channels = in_channels or channels
    return Layer(name, "conv2d", (1, in_channels, 8, 8), (1, channels, 8, 8),
                 (channels, in_channels // groups, 3, 3), groups)


@pytest.mark.parametrize("channels,ratio,multiple,expected", [
    (64, 0.5, 8, 32), (64, 0.73, 8, 48), (64, 0.73, 16, 48), (51, 1.0, 16, 51), (51, 0.0, 16, 0),
    (51, 0.97, 16, 48), (51, 0.99, 16, 51), (13, 0.5, 16, 6), (10, 0.25, 8, 2), (96, 0.25, 16, 16),
])
def test_round_split_keeps_whole_vectors_and_exact_ends(channels, ratio, multiple, expected):
    assert round_split(_conv("c", channels), ratio, multiple) == expected


def test_grouped_conv_splits_on_group_boundaries():
    layer = _conv("g", 96, groups=8)  # 12 channels per group
    for ratio in (0.1, 0.3, 0.5, 0.77):
        assert round_split(layer, ratio, 16) % 12 == 0
    depthwise = _conv("dw", 32, groups=32)
    assert round_split(depthwise, 0.5, 8) == 16


def test_plan_json_round_trip_and_parts():
    layers = [_conv("conv2d_0", 32), _conv("conv2d_1", 16)]
    plan = make_plan(layers, {"layers": {"conv2d_0": 0.5, "conv2d_1": {"placement": "cpu"}}}, 8)
    again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan
    assert plan["conv2d_0"].parts() == [(0, 16, "gpu"), (16, 32, "cpu")]
    assert plan["conv2d_1"].parts() == [(0, 16, "cpu")] and plan["conv2d_1"].placement == "cpu"


def test_onnx_names_select_layers_in_a_plan():
    layers = [_conv("conv2d_0", 32), _conv("conv2d_1", 16)]
    plan = make_plan(layers, {"layers": {"stem": 1.0}, "default_ratio": 0.0}, 8,
                     {"conv2d_0": "stem", "conv2d_1": "head"})
    assert [lp.placement for lp in plan.layers] == ["gpu", "cpu"]
    assert plan["conv2d_0"].source == "stem"


@pytest.mark.parametrize("spec,message", [
    ({"layers": {"conv2d_0": 0.5}}, "gives no ratio for conv2d_1"),
    ({"layers": {"nope": 0.5, "conv2d_0": 0.5, "conv2d_1": 0.5}}, "does not have"),
    ({"layers": {"conv2d_0": 2, "conv2d_1": 0.5}}, "outside [0, 1]"),
    ({"layers": {"conv2d_0": "half", "conv2d_1": 0.5}}, "not a number"),
    ("no_such_plan.json", "no such plan file"),
])
def test_bad_plans_are_named(spec, message):
    layers = [_conv("conv2d_0", 32), _conv("conv2d_1", 16)]
    with pytest.raises(MulayerError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_plan(layers, spec, 8)
