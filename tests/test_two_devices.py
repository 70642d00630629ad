"""The executable really is one module for two devices, and split layers overlap:
GPU kernels are issued before CPU kernels, cross-device copies after both."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_mulayer
from tvm_mulayer.compiler.lowering import lower
from tvm_mulayer.compiler.frontend import import_onnx
from tvm_mulayer.base.layers import find_layers
from tvm_mulayer.passes import OrderForOverlap
from tvm_mulayer.base.plan import make_plan
from tvm_mulayer.base.processors import cpu_processor, gpu_processor


def _kinds(module) -> list:
    out = [module.kind]
    for imported in module.imports:
        out += _kinds(imported)
    return out


# cross-compilation: the full tier (the fast tier builds CUDA in test_cli's missing-device test)
@pytest.mark.slow
@pytest.mark.parametrize("gpu", ["cuda", "opencl"])
def test_gpu_presets_build_one_module_with_both_targets(small_zoo, gpu, tmp_path):
    executable = tvm_mulayer.compile(small_zoo["squeezenet1_1"], gpu=gpu, split=0.5)
    kinds = _kinds(executable.module.mod)
    assert "llvm" in kinds and gpu in kinds
    device_module = [m for m in executable.module.mod.imports[0].imports if m.kind == gpu][0]
    assert "__global__" in device_module.inspect_source() if gpu == "cuda" else "__kernel" in device_module.inspect_source()
    artifact = executable.export(tmp_path / "artifact")
    assert sorted(p.name for p in artifact.iterdir()) == ["calibration.json", "manifest.json", "model.so", "plan.json",
                                                          "weights.npz"]
    assert (artifact / "model.so").stat().st_size > 0


def test_lowered_kernels_carry_the_target_of_their_device(small_zoo):
    cpu = cpu_processor("host")
    gpu = gpu_processor("cuda:sm_90", cpu)
    mod, info = import_onnx(small_zoo["googlenet"])
    plan = make_plan(find_layers(mod["main"]), 0.5, 8, info.sources)
    lowered, weights, devices, _ = lower(mod, plan, cpu, gpu)
    kinds = {f.attrs["target"].kind.name for _, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert kinds == {"llvm", "cuda"}
    # Weights live where they are used: both devices hold some.
    assert set(devices) == {0, 1} and len(weights) == len(devices)


def test_split_layers_issue_gpu_kernels_before_cpu_kernels_and_copies_last(small_zoo):
    executable = tvm_mulayer.compile(small_zoo["vgg16"], gpu="emulated", split=0.5, precision="fp32")
    steps, current = [], []
    for call in executable.trace():
        if call["lane"] == "copy":
            if current:
                steps.append(current)
            current = []
        else:
            current.append(call["lane"])
    steps.append(current)
    overlapping = [s for s in steps if "cpu" in s and "gpu" in s]
    assert len(overlapping) >= 13  # every conv layer of VGG-16 runs on both devices
    for step in steps:
        # within a step between copies: all GPU kernels come before any CPU kernel
        assert step == sorted(step, key=lambda lane: lane != "gpu"), step


def test_order_for_overlap_moves_gpu_work_ahead_of_cpu_work():
    cpu_t = tvm.target.Target({"kind": "llvm"})
    vcpu, vgpu = relax.VDevice(cpu_t, 0, "global"), relax.VDevice(cpu_t, 1, "global")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4), "float32", vcpu))
    with bb.function("main", [x]):
        with bb.dataflow():
            on_cpu = bb.emit(relax.op.nn.relu(x))  # CPU work written first
            moved = bb.emit(relax.op.to_vdevice(x, vgpu))
            on_gpu = bb.emit(relax.op.exp(moved))
            back = bb.emit(relax.op.to_vdevice(on_gpu, vcpu))
            out = bb.emit_output(relax.op.add(on_cpu, back))
        bb.emit_func_output(out)
    mod = bb.get()
    mod.update_global_info("vdevice", [vcpu, vgpu])
    ordered = OrderForOverlap()(mod)
    ops = [b.value.op.name for b in ordered["main"].body.blocks[0].bindings]
    assert ops == ["relax.to_vdevice", "relax.exp", "relax.nn.relu", "relax.to_vdevice", "relax.add"]


@pytest.mark.slow
def test_artifact_round_trip_gives_the_same_outputs(small_zoo, tmp_path):
    model = small_zoo["alexnet"]
    executable = tvm_mulayer.compile(model, gpu="emulated", split=0.4)
    x = np.random.default_rng(3).standard_normal((1, 3, 67, 67)).astype("float32")
    before = executable.run(x)["logits"]
    loaded = tvm_mulayer.load(executable.export(tmp_path / "a"))
    np.testing.assert_array_equal(loaded.run(x)["logits"], before)
    assert [lp.gpu_channels for lp in loaded.plan.layers] == [lp.gpu_channels for lp in executable.plan.layers]
