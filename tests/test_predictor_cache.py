"""`--split auto` on processors without a shipped predictor: the first call measures the
model's layer parts on both processors and caches rows and predictor per processor pair;
a later call measures nothing; a given or shipped predictor is used before the cache."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_mulayer.base.processors import cpu_processor, gpu_processor
from tvm_mulayer.base.records import config_key
from tvm_mulayer.compiler.frontend import import_onnx
from tvm_mulayer.planning.partitioner import auto_plan
from tvm_mulayer.planning.predictor_cache import PREDICTOR_NAME, PROFILE_NAME, cache_dir, quick_configs

from isa import AVX2, require_runs_here

AVX2_CPU = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell", "num-cores": 2}  # isa.AVX2's


def _two_convs_and_a_dense() -> onnx.ModelProto:
    """conv 3->16 3x3, relu, conv 16->32 1x1, global average pool, dense 32->10 (tiny: its
    quick profile compiles ~20 kernels per processor)."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((16, 3, 3, 3)), "w2": rng.standard_normal((32, 16, 1, 1)),
               "w3": rng.standard_normal((10, 32))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w3"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_auto_measures_processors_once_then_reuses_the_cache(tmp_path, monkeypatch):
    require_runs_here(AVX2)
    monkeypatch.setenv("TVM_MULAYER_CACHE", str(tmp_path))
    cpu = cpu_processor(AVX2_CPU)  # no predictor ships for an AVX2-only CPU
    gpu = gpu_processor("emulated", cpu)
    mod, info = import_onnx(_two_convs_and_a_dense())
    said = []
    plan, choice, _, predictor = auto_plan(mod["main"], cpu, gpu, None, info.sources, 8, precision="fp32",
                                           log=said.append)
    directory = cache_dir(cpu, gpu)
    assert any("measuring" in line and str(directory) in line for line in said), said
    assert (directory / PREDICTOR_NAME).is_file()
    # every quick part was measured, and the predictor answers those from the measurements
    from tvm_mulayer.base.layers import find_layers

    for precisions, parts in quick_configs(find_layers(mod["main"]), 8, {"cpu": "fp32", "gpu": "fp32"}):
        for role, values in precisions.items():
            assert {config_key(layer, values[0]) for layer in parts} <= set(predictor.measured[role]["kernel"])
    assert choice.latency <= min(choice.single.values()) * (1 + 1e-9)
    assert plan.description.startswith("auto:")

    rows = (directory / PROFILE_NAME).read_text()
    said.clear()
    again = auto_plan(mod["main"], cpu, gpu, None, info.sources, 8, precision="fp32", log=said.append)
    assert any("cached in" in line for line in said) and not any("measuring" in line for line in said), said
    assert (directory / PROFILE_NAME).read_text() == rows  # nothing measured again
    assert again[1].gpu_channels == choice.gpu_channels

    # a predictor given comes first: another cache stays empty
    monkeypatch.setenv("TVM_MULAYER_CACHE", str(tmp_path / "unused"))
    auto_plan(mod["main"], cpu, gpu, predictor, info.sources, 8, precision="fp32")
    assert not (tmp_path / "unused").exists()


def test_shipped_predictor_comes_before_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_MULAYER_CACHE", str(tmp_path / "cache"))
    cpu = cpu_processor("x86-avx512")
    mod, info = import_onnx(_two_convs_and_a_dense())
    _, _, _, predictor = auto_plan(mod["main"], cpu, gpu_processor("cuda:sm_90", cpu), None, info.sources, 16)
    assert "H200" in " ".join(predictor.meta["devices"]["gpu"])
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("variable, expected", [("TVM_MULAYER_CACHE", "{}"), ("XDG_CACHE_HOME", "{}/tvm-mulayer")])
def test_cache_directory_follows_the_environment(tmp_path, monkeypatch, variable, expected):
    monkeypatch.delenv("TVM_MULAYER_CACHE", raising=False)
    monkeypatch.setenv(variable, str(tmp_path))
    cpu = cpu_processor(AVX2_CPU)
    directory = cache_dir(cpu, gpu_processor("emulated", cpu))
    assert directory.parent == type(tmp_path)(expected.format(tmp_path))
    other = cpu_processor(dict(AVX2_CPU, **{"num-cores": 4}))
    assert cache_dir(other, gpu_processor("emulated", other)) != directory  # another thread count, another cache
