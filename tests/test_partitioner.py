"""Predictor training/serialisation and the partitioner's choices.

The partitioner is tested with predictors trained (for real, with XGBoost) on synthetic
measurements — kernel seconds = launch + MACs / rate — so the right answer is known:
whatever processor is faster gets the work, an asynchronous GPU lets whole branches run
beside the CPU, and a plan is never predicted slower than the best single processor.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import tvm_mulayer
from tvm_mulayer.base.errors import MulayerError
from tvm_mulayer.compiler.frontend import import_onnx
from tvm_mulayer.planning.partitioner import KernelTimes, auto_plan, layer_graph, partition, simulate
from tvm_mulayer.planning.predictor import Predictor, train
from tvm_mulayer.base.processors import cpu_processor, gpu_processor
from tvm_mulayer.planning.profiler import zoo_configs
from tvm_mulayer.base.records import config_key

from conftest import fast_params, input_shape, ort_run, relative_error

CPU = cpu_processor("host")


def _synthetic_rows(cpu_rate: float, gpu_rate: float, launch: float = 20e-6, copy_per_byte: float = 1e-10):
    rows = []
    configs = zoo_configs(["googlenet", "squeezenet1_1", "vgg16"], fractions=(0.125, 0.25, 0.5, 0.75, 1.0),
                          image_size=64, width=0.25)
    for layer in configs:
        for role, rate in (("cpu", cpu_rate), ("gpu", gpu_rate)):
            rows.append({"kind": "kernel", "role": role, "config": config_key(layer), "device": "synthetic",
                         "seconds": launch + layer.macs / rate, "bytes": ""})
    for size in (1024, 65536, 1 << 20):
        for direction in ("h2d", "d2h"):
            rows.append({"kind": "copy", "role": "gpu", "config": direction, "bytes": size, "device": "synthetic",
                         "seconds": 10e-6 + size * copy_per_byte})
    return rows


@pytest.fixture(scope="module")
def balanced_async():
    """CPU and an asynchronous GPU of equal speed."""
    gpu = gpu_processor("cuda:sm_90", CPU)
    return train(_synthetic_rows(2e9, 2e9), CPU, gpu), gpu


def test_predictor_learns_and_round_trips(tmp_path, balanced_async):
    predictor, gpu = balanced_async
    for role in ("cpu", "gpu"):
        accuracy = predictor.meta["accuracy"][f"{role} fp32"]
        assert accuracy["samples"] > 10 and accuracy["median_error"] < 0.10
        # held out again by whole layer: every split part of a held-out layer left out of training
        assert predictor.meta["accuracy_whole_layers"][f"{role} fp32"]["samples"] > 10
    path = tmp_path / "p.json"
    predictor.save(path)
    loaded = Predictor.load(path)
    layers = zoo_configs(["squeezenet1_1"], fractions=(0.5,), image_size=64, width=0.25)
    np.testing.assert_allclose(loaded.kernel_times(layers, "gpu"), predictor.kernel_times(layers, "gpu"))
    assert loaded.copy_time(1 << 20, "h2d") == pytest.approx(10e-6 + (1 << 20) * 1e-10, rel=1e-3)
    assert "pickle" not in path.read_text()[:200]


def test_predictor_refuses_other_processors_and_bad_files(tmp_path, balanced_async):
    predictor, _ = balanced_async
    with pytest.raises(MulayerError, match="mulayer profile"):
        predictor.check_processors(CPU, gpu_processor("emulated", CPU))
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(MulayerError, match="not a tvm-mulayer predictor"):
        Predictor.load(tmp_path / "bad.json")


# the fast tier's is test_pipeline's split="auto" test (a GPU 20x faster takes every layer)
@pytest.mark.slow
@pytest.mark.parametrize("cpu_rate,gpu_rate,expected", [(1e9, 20e9, "gpu"), (20e9, 1e9, "cpu")])
def test_a_much_faster_processor_gets_the_network(small_zoo, cpu_rate, gpu_rate, expected):
    gpu = gpu_processor("emulated", CPU)
    predictor = train(_synthetic_rows(cpu_rate, gpu_rate), CPU, gpu)
    mod, info = import_onnx(small_zoo["vgg16"])
    plan, choice, _, _ = auto_plan(mod["main"], CPU, gpu, predictor, info.sources, 8, precision="fp32")
    assert {lp.placement for lp in plan.layers} == {expected}
    assert choice.latency <= min(choice.single.values()) * (1 + 1e-9)


@pytest.mark.parametrize("name", fast_params(["googlenet"], ["squeezenet1_1", "mobilenet_v1"]))
def test_auto_is_never_predicted_slower_than_a_single_processor(small_zoo, balanced_async, name):
    predictor, _ = balanced_async
    graph = layer_graph(import_onnx(small_zoo[name])[0]["main"])
    choice = partition(graph, predictor, 8)
    assert choice.latency <= min(choice.single.values()) * (1 + 1e-9)


def test_branch_distribution_is_chosen_and_computes_the_right_answer(small_zoo, balanced_async):
    predictor, gpu = balanced_async
    model = small_zoo["googlenet"]
    mod, info = import_onnx(model)
    plan, choice, graph, _ = auto_plan(mod["main"], CPU, gpu, predictor, info.sources, 8, precision="fp32")
    assert choice.distributed, "an equal-speed async GPU should take whole Inception branches"
    assert choice.latency < min(choice.single.values())
    distributed = [lp for lp in plan.layers if lp.note.startswith("branch distribution")]
    assert distributed and all(lp.placement in ("cpu", "gpu") for lp in distributed)
    # the same plan, run on the emulated two-device machine, gives onnxruntime's answer
    x = np.random.default_rng(2).standard_normal(input_shape(model)).astype("float32")
    executable = tvm_mulayer.compile(model, gpu="emulated", split=plan, precision="fp32")
    assert [lp.gpu_channels for lp in executable.plan.layers] == [lp.gpu_channels for lp in plan.layers]
    assert relative_error(executable.run(x)["logits"], ort_run(model, {"input": x})[0]) < 1e-4


@pytest.mark.parametrize("name", fast_params(["squeezenet1_1"], ["vgg16", "mobilenet_v1"]))
def test_simulated_copies_are_the_split_pass_copies(small_zoo, balanced_async, name):
    """The partitioner's model of data movement matches what SplitChannels emits."""
    import tvm
    from tvm import relax

    from tvm_mulayer.base.layers import find_layers
    from tvm_mulayer.passes import SplitChannels
    from tvm_mulayer.base.plan import make_plan

    predictor, _ = balanced_async
    mod, _ = import_onnx(small_zoo[name])
    graph = layer_graph(mod["main"])
    rng = np.random.default_rng(len(name))
    layers = find_layers(mod["main"])
    plan = make_plan(layers, {"layers": {l.name: float(rng.choice([0, 0.25, 0.5, 1])) for l in layers}}, 8)
    _, events = simulate(graph, {lp.name: lp.gpu_channels for lp in plan.layers},
                         KernelTimes(graph, predictor, 8), predictor, timeline=True)
    predicted = sum(e.nbytes for e in events if e.lane == "copy")
    llvm = tvm.target.Target({"kind": "llvm"})
    split = SplitChannels(plan, llvm, llvm)(mod)
    emitted = 0
    for binding in split["main"].body.blocks[0].bindings:
        value = binding.value
        if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.to_vdevice":
            emitted += int(np.prod([int(d) for d in binding.var.ty.shape.values])) * 4
    assert predicted == pytest.approx(emitted)


def test_shipped_predictor_for_the_gpu_host_is_found_and_plans(small_zoo):
    """The predictor measured on the GPU host (16-core Xeon + H200) ships with the package,
    profiled in every slice precision: native plans use int8/fp16 predictions, no warning."""
    import warnings

    from tvm_mulayer.planning.partitioner import default_predictor

    cpu = cpu_processor("x86-avx512")
    gpu = gpu_processor("cuda:sm_90", cpu)
    predictor = default_predictor(cpu, gpu)
    assert predictor.gpu_async and "H200" in " ".join(predictor.meta["devices"]["gpu"])
    mod, info = import_onnx(small_zoo["squeezenet1_1"])
    for precision, expected in (("native", {"cpu": "int8", "gpu": "fp16"}), ("fp32", {"cpu": "fp32", "gpu": "fp32"})):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plan, choice, _, _ = auto_plan(mod["main"], cpu, gpu, None, info.sources, 16, precision=precision)
        assert choice.times.precision == expected
        assert choice.latency <= min(choice.single.values()) * (1 + 1e-9)
    with pytest.raises(MulayerError, match="no latency predictor"):
        default_predictor(cpu_processor("arm64-android"), gpu_processor("adreno", cpu_processor("arm64-android")))


def test_plan_command_prints_the_table_and_writes_plan_and_timeline(small_zoo, balanced_async, tmp_path, capsys):
    """`mulayer plan`: per-layer predicted times, the chosen split, bytes, a plan JSON that
    `--split` accepts, and a PNG timeline."""
    from tvm_mulayer.base.plan import Plan
    from tvm_mulayer.cli import main
    from tvm_mulayer.compiler.build import ModelCompiler

    predictor, _ = balanced_async
    predictor.save(tmp_path / "p.json")
    model_path = tmp_path / "g.onnx"
    import onnx

    onnx.save(small_zoo["googlenet"], model_path)
    assert main(["plan", str(model_path), "--cpu", "host", "--gpu", "cuda:sm_90", "--predictor", str(tmp_path / "p.json"),
                 "-o", str(tmp_path / "plan.json"), "--timeline", str(tmp_path / "t.png")]) == 0
    out = capsys.readouterr().out
    assert "cpu only ms" in out and "branch distribution" in out and "bytes copied" in out
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plan = Plan.from_json(json.loads((tmp_path / "plan.json").read_text()))
    accepted = ModelCompiler.from_onnx(small_zoo["googlenet"], gpu="emulated").plan(str(tmp_path / "plan.json"))
    assert [lp.gpu_channels for lp in accepted.layers] == [lp.gpu_channels for lp in plan.layers]


def test_profile_configs_cover_both_parts_of_every_split_and_sampled_shapes_are_valid():
    """The profile holds exactly what the partitioner asks about (both parts of each split,
    rounded as it rounds them) and sampled layers whose shapes TVM agrees with."""
    from tvm import relax

    from tvm_mulayer.planning.partitioner import RATIOS
    from tvm_mulayer.base.plan import round_split
    from tvm_mulayer.planning.profiler import kernel_module, sampled_configs

    configs = zoo_configs(["squeezenet1_1"], image_size=64, width=0.25, channel_multiple=8)
    keys = {config_key(c) for c in configs}
    graph = layer_graph(import_onnx(tvm_mulayer.base.zoo.build("squeezenet1_1", image_size=64, width=0.25))[0]["main"])
    for node in graph.layers:
        for ratio in RATIOS:
            k = round_split(node.layer, ratio, 8)
            for part in {k, node.layer.channels - k} - {0}:
                assert config_key(node.layer.part(part)) in keys
    sampled = sampled_configs(configs, 12, seed=3)
    assert len(sampled) == 12 and not keys & {config_key(c) for c in sampled}
    module = kernel_module(sampled)
    for index, layer in enumerate(sampled):
        inferred = module[f"k{index}"].ret_ty
        assert isinstance(inferred, relax.TensorType)
        assert tuple(int(d) for d in inferred.shape.values) == layer.output_shape


@pytest.mark.slow
def test_cpu_kernel_features_name_the_conv_schedule_each_layer_gets():
    """The CPU features carry which form the conv rule takes (channel-vectorized, depthwise,
    pointwise GEMM, ...), and the form they name is the one the rule gives the real kernel."""
    import tvm
    from tvm import relax, s_tir

    from tvm_mulayer.planning.predictor import FEATURES, RULE_POINTWISE_GEMM, KernelFeatures
    from tvm_mulayer.planning.profiler import kernel_module
    from tvm_mulayer.schedules.analysis import ConvInfo, find_conv_block
    from tvm_mulayer.schedules.cpu.conv2d import Conv2d

    target = {"kind": "llvm", "mcpu": "cascadelake", "num-cores": 1}
    features = KernelFeatures(target, threads=1, fp32_prepacked=True)
    layers = [c for c in zoo_configs(["mobilenet_v1"], fractions=(1.0,), image_size=112) if c.op == "conv2d"]
    by_rule = {}
    for layer in layers:
        by_rule.setdefault(features(layer)[FEATURES.index("rule")], []).append(layer)
    assert {1.0, 2.0, RULE_POINTWISE_GEMM} <= set(by_rule), sorted(by_rule)
    gemm_layers = by_rule[RULE_POINTWISE_GEMM]
    kernels = relax.transform.LegalizeOps()(kernel_module(gemm_layers))
    modes = []
    for func in kernels.functions.values():
        if isinstance(func, tvm.tirx.PrimFunc) and find_conv_block(s_tir.Schedule(func)) is not None:
            sch = s_tir.Schedule(func)
            modes.append(Conv2d.tiles(ConvInfo(sch, find_conv_block(sch)), tvm.target.Target(target), True)["mode"])
    assert modes == ["gemm"] * len(gemm_layers)


def test_gpu_kernel_features_carry_the_gemm_gather_layout_and_direct_conv_staging():
    """On a CUDA GPU the features say what the tensor-core rule's tiles make of a float16
    conv: K padded past whole slabs, and how the channels of a (ky, kx, c) gather fill a slab
    (-1: not gathered channels-inner); and for the direct conv its rows per block and the
    elements each thread stages per reduction step, how many of its blocks an SM holds and
    the waves and steps a block's path takes — each as the rules compute them."""
    import tvm

    from tvm_mulayer.base.layers import Layer
    from tvm_mulayer.planning.predictor import FEATURES, RULE_TENSOR_CORE, KernelFeatures
    from tvm_mulayer.schedules.gpu.conv2d import Conv2d
    from tvm_mulayer.schedules.gpu.tensor_core import TensorCoreGemm, gemm_tiles

    target = gpu_processor("cuda:sm_90", CPU).target
    features = KernelFeatures(target, threads=1)

    def conv(c, f, size, k):
        return Layer(name="c", op="conv2d", input_shape=(1, c, size, size), weight_shape=(f, c, k, k),
                     output_shape=(1, f, size, size), strides=(1, 1), padding=(k // 2,) * 4)

    def feature(layer, name, precision):
        return features(layer, precision=precision)[FEATURES.index(name)]

    for layer, tail in ((conv(274, 212, 57, 3), 274 % 32), (conv(256, 64, 28, 3), 0), (conv(372, 210, 60, 1), -1)):
        assert feature(layer, "rule", "fp16") == RULE_TENSOR_CORE
        kh = layer.weight_shape[2]
        k = layer.weight_shape[1] * kh * kh
        t = gemm_tiles(layer.channels, layer.output_shape[2] ** 2, k, kh * kh, TensorCoreGemm.stages,
                       layer.weight_shape[1])
        assert feature(layer, "gather_channel_tail", "fp16") == tail
        padded = -(-k // (t.bk * t.split_k)) * t.bk * t.split_k
        assert feature(layer, "reduction_waste", "fp16") == pytest.approx(padded / k)
    assert feature(conv(372, 210, 60, 1), "reduction_waste", "fp16") > 1  # 372 is no whole number of slabs

    layer = conv(96, 199, 5, 5)  # float32: the direct conv
    assert feature(layer, "rule", "fp32") == 0
    info = features._conv_info(layer, False)
    t = Conv2d.tiles(info, tvm.target.Target(target))
    assert feature(layer, "tile_height", "fp32") == t["TY"]
    threads, shared = t["TF"] * t["TY"] * t["TX"], Conv2d.shared_bytes(info, t)
    staged = shared / 4 / threads
    assert feature(layer, "log_staged_per_thread", "fp32") == pytest.approx(np.log(staged))
    # occupancy: the blocks an H100-class SM holds at once, by threads (2,048), blocks (32)
    # and shared memory (228 KiB); the grid's waves over 132 SMs times each block's steps
    resident = min(2048 // threads, 32, 228 * 1024 // shared)
    assert feature(layer, "resident_blocks", "fp32") == resident
    blocks = Conv2d.blocks(info, t)
    assert feature(layer, "sm_fill", "fp32") == pytest.approx(blocks / (resident * 132))
    step_chain = t["FI"] * t["RC"] * 5 * 5
    assert feature(layer, "log_step_chain", "fp32") == pytest.approx(np.log(step_chain))
    waves, steps = -(-blocks // (resident * 132)), -(-96 // t["RC"])
    assert feature(layer, "log_block_path", "fp32") == pytest.approx(np.log(waves * steps * (staged + step_chain)))
    assert feature(conv(256, 64, 28, 3), "resident_blocks", "fp16") == 0  # the tensor-core GEMM has none


def test_kernel_base_fits_a_launch_floor_plus_throughput_line_per_precision():
    """The analytic base the boosters correct is fitted in relative error, per precision and
    per schedule rule, with no negative coefficient: timings that are exactly a fixed
    cost plus time per multiply-accumulate come back exactly, each precision its own."""
    from tvm_mulayer.planning.predictor import FEATURES, KernelBase, KernelFeatures

    features = KernelFeatures({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 1}, threads=1)
    layers = zoo_configs(["vgg16", "squeezenet1_1", "googlenet"], fractions=(0.25, 0.5, 1.0), image_size=64,
                         width=0.25)
    precisions = np.array(["fp32", "int8"] * len(layers))
    rows = np.array([features(layer, precision=p) for layer in layers for p in ("fp32", "int8")])
    macs = np.exp(rows[:, FEATURES.index("log_macs")])
    seconds = np.where(precisions == "fp32", 5e-6 + macs / 1e10, 2e-6 + macs / 4e10)
    base = KernelBase.fit(rows, seconds, precisions)
    assert set(base.coefficients) == {"fp32", "int8"}
    assert any(len(lines) > 1 for lines in base.coefficients.values())  # some rule has a line of its own
    assert all(c >= 0 for lines in base.coefficients.values() for line in lines.values() for c in line)
    np.testing.assert_allclose(np.exp(base.log_seconds_per_mac(rows, precisions)) * macs, seconds, rtol=1e-6)


@pytest.mark.slow
def test_cross_validated_accuracy_splits_each_kind_by_schedule_form():
    """`accuracy(by_rule=True)` (scripts/tune_predictor.py --by-rule) scores every schedule
    form within a kind; the forms' samples add up to the kind's."""
    from tvm_mulayer.planning.predictor import BOOSTER_PARAMS, training_samples

    _, _, by_role = training_samples(_synthetic_rows(2e9, 2e9), CPU, gpu_processor("cuda:sm_90", CPU))
    samples = by_role["gpu"]
    scores = samples.accuracy(samples.folds(3), dict(BOOSTER_PARAMS, seed=0), 20, by_rule=True)
    forms = {label: score for label, score in scores.items() if label.startswith("gpu fp32: ")}
    assert {"gpu fp32: direct conv", "gpu fp32: dense"} <= set(forms), sorted(forms)
    assert "gpu fp32: tensor-core GEMM" not in forms  # float32 slices never take the tensor cores
    assert sum(score["samples"] for score in forms.values()) == scores["gpu fp32"]["samples"]


@pytest.mark.slow
def test_learning_curve_fits_only_on_the_drawn_share_of_training_shapes():
    """`accuracy(trainable=...)` (scripts/tune_predictor.py --train-share) fits each fold on
    the other folds' samples that the mask allows, never on a held-out or masked-off one;
    the mask draws whole layer shapes, about the share asked."""
    from tvm_mulayer.planning.predictor import BOOSTER_PARAMS, training_samples

    _, _, by_role = training_samples(_synthetic_rows(2e9, 2e9), CPU, gpu_processor("cuda:sm_90", CPU))
    samples = by_role["cpu"]
    trainable = samples.drawn(0.5, seed=3)
    for shape in set(samples.shape):  # a shape is drawn whole
        assert len(set(trainable[samples.shape == shape])) == 1
    assert 0.2 < len(set(samples.shape[trainable])) / len(set(samples.shape)) < 0.8
    assert not samples.drawn(0.0).any() and samples.drawn(1.0).all()
    assert (samples.held_out(0.5, seed=3) == np.where(trainable, 0, -1)).all()
    whole = samples.drawn(0.5, seed=3, whole_layers=True)
    for family in set(samples.family):
        assert len(set(whole[samples.family == family])) == 1
    folds = samples.folds(3)
    fitted = []
    fit = samples.fit
    samples.fit = lambda chosen, params, rounds: fitted.append(chosen) or fit(chosen, params, rounds)
    scores = samples.accuracy(folds, dict(BOOSTER_PARAMS, seed=0), 5, trainable=trainable)
    assert len(fitted) == 3 and scores["cpu fp32"]["samples"] == len(samples.y)
    for fold, chosen in zip(sorted(set(folds)), fitted):
        assert (chosen == ((folds != fold) & trainable)).all()


@pytest.mark.slow
def test_whole_layer_folds_keep_every_split_part_of_a_layer_together():
    """`folds(whole_layers=True)` (tune_predictor --whole-layers) puts all split parts of one
    layer — as `Layer.part` makes them: fewer output channels, and for a grouped conv fewer
    input channels and groups — in one fold, while folds by shape split them up."""
    from tvm_mulayer.planning.predictor import split_family, training_samples

    layers = zoo_configs(["mobilenet_v1", "squeezenet1_1"], fractions=(1.0,), image_size=64, width=0.25)
    for layer in layers:  # (a one-unit part of a grouped conv is a plain conv: not checked)
        parts = {split_family(layer.part(units * layer.channels_per_unit)) for units in (2, layer.units // 2)}
        assert parts == {split_family(layer)}, layer
    conv = next(layer for layer in layers if layer.op == "conv2d" and layer.groups == 1)
    other = dataclasses.replace(conv, input_shape=(1, conv.input_shape[1] + 1, *conv.input_shape[2:]),
                                weight_shape=(conv.channels, conv.input_shape[1] + 1, *conv.weight_shape[2:]))
    assert split_family(other) != split_family(conv)  # other input channels: another layer

    _, _, by_role = training_samples(_synthetic_rows(2e9, 2e9), CPU, gpu_processor("cuda:sm_90", CPU))
    samples = by_role["cpu"]
    whole, by_shape = samples.folds(3, 0, whole_layers=True), samples.folds(3, 0)
    for family in set(samples.family):
        assert len(set(whole[samples.family == family])) == 1
    assert any(len(set(by_shape[samples.family == family])) > 1 for family in set(samples.family))


@pytest.mark.slow
def test_adaptive_configs_sample_new_shapes_around_the_missed_ones(tmp_path, monkeypatch):
    """scripts/adaptive_configs.py: the shapes whose kernels cross-validation predicts more
    than 10% off are found (here: GPU timings made 3x slower than the rest's rate), and the new
    shapes lie within the spread of one of those, keep its kernel, stride and kind, and are
    none of the profiled ones; a spread too small for the count asked is refused."""
    import csv
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    from adaptive_configs import main, missed_shapes

    from tvm_mulayer.planning.predictor import training_samples
    from tvm_mulayer.planning.profiler import sampled_configs
    from tvm_mulayer.base.records import CSV_FIELDS, layer_from_key

    rows = _synthetic_rows(2e9, 2e9)
    gpu_convs = [r for r in rows if r["kind"] == "kernel" and r["role"] == "gpu" and layer_from_key(r["config"]).op == "conv2d"]
    slowed = {r["config"] for r in gpu_convs[::9]}
    for row in rows:
        if row["kind"] == "kernel" and row["role"] == "gpu" and row["config"] in slowed:
            row["seconds"] *= 3
    _, _, by_role = training_samples(rows, CPU, gpu_processor("cuda:sm_90", CPU))
    assert slowed <= set(missed_shapes(by_role["gpu"], 3, 0))

    profile = tmp_path / "profile.csv"
    with open(profile, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(dict(row, processor="p", tvm="0", recorded="0") for row in rows)
    out = tmp_path / "next.json"
    assert main([str(profile), "--cpu", "host", "--gpu", "cuda:sm_90", "--role", "gpu",
                 "--count", "30", "--spread", "0.3", "--folds", "3", "-o", str(out)]) == 0
    new = [layer_from_key(key) for key in json.loads(out.read_text())]
    missed = [layer_from_key(key) for key in missed_shapes(by_role["gpu"], 3, 0)]
    assert len(new) == 30 and not {config_key(layer) for layer in new} & {r["config"] for r in rows}

    def near(layer, base):
        within = lambda a, b: 2 ** -0.3 - 0.02 <= (a + 0.5) / b and (a - 0.5) / b <= 2 ** 0.3 + 0.02  # noqa: E731
        return (layer.op, layer.strides, layer.padding, layer.weight_shape[2:], layer.groups > 1) == \
            (base.op, base.strides, base.padding, base.weight_shape[2:], base.groups > 1) and \
            within(layer.channels, base.channels) and within(layer.input_shape[1], base.input_shape[1]) and \
            all(within(a, b) for a, b in zip(layer.input_shape[2:], base.input_shape[2:]))

    assert all(any(near(layer, base) for base in missed) for layer in new)
    dense = next(layer for layer in zoo_configs(["vgg16"], fractions=(1.0,), image_size=64, width=0.25)
                 if layer.op == "dense")
    tiny = dataclasses.replace(dense, input_shape=(1, 2), output_shape=(1, 2), weight_shape=(2, 2))
    with pytest.raises(MulayerError, match="widen the spread"):
        sampled_configs([tiny], 50, spread=0.3)


@pytest.mark.slow
def test_blind_predictor_neither_measured_nor_trained_on_the_network_it_plans(balanced_async, monkeypatch):
    """scripts/blind_plans.py: the predictor blind to a network fits its boosters without any
    split part of the network's layers and answers none of them from measurements, while the
    other networks' layers keep theirs."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    from blind_plans import blind_predictor

    from tvm_mulayer.planning.predictor import BOOSTER_PARAMS, split_family, training_samples
    from tvm_mulayer.base.records import parse_config

    full, gpu = balanced_async
    _, _, samples = training_samples(_synthetic_rows(2e9, 2e9), CPU, gpu)
    mod, _ = import_onnx(tvm_mulayer.base.zoo.build("squeezenet1_1", image_size=64, width=0.25))
    families = {split_family(node.layer) for node in layer_graph(mod["main"]).layers}
    fitted = {}

    def recording(role, fit):
        def record(chosen, params, rounds):
            fitted[role] = chosen
            return fit(chosen, params, rounds)
        return record

    for role, role_samples in samples.items():
        role_samples.fit = recording(role, role_samples.fit)
    blind = blind_predictor(full, samples, families, dict(BOOSTER_PARAMS, seed=0), 5)
    for role, role_samples in samples.items():
        seen = np.isin(role_samples.family, list(families))
        assert seen.any() and (~seen).any() and (fitted[role] == ~seen).all()
        kept = blind.measured[role]["kernel"]
        assert not any(split_family(parse_config(key)[0]) in families for key in kept)
        assert len(kept) == sum(split_family(parse_config(key)[0]) not in families
                                for key in full.measured[role]["kernel"]) > 0


@pytest.mark.slow
def test_training_reports_alone_and_concurrent_accuracy_on_held_out_configs():
    """Concurrent measurements are a feature of the same regressor; a configuration's two
    measurements are held out together, and accuracy is reported for each kind."""
    rows = _synthetic_rows(2e9, 2e9)
    for row in [r for r in rows if r["kind"] == "kernel"][::3]:
        rows.append(dict(row, kind="kernel-concurrent", seconds=row["seconds"] * 1.5))
    predictor = train(rows, CPU, gpu_processor("cuda:sm_90", CPU))
    for role in ("cpu", "gpu"):
        assert predictor.meta["accuracy"][f"{role} fp32 concurrent"]["samples"] > 0
        assert predictor.meta["samples"][role]["fp32"]["concurrent"] > 0
    layers = zoo_configs(["vgg16"], fractions=(0.5,), image_size=64, width=0.25)
    ratio = predictor.kernel_times(layers, "cpu", True) / predictor.kernel_times(layers, "cpu", False)
    assert np.median(ratio) == pytest.approx(1.5, rel=0.15)


@pytest.mark.slow
def test_overheads_are_charged_and_calibration_fits_whole_model_runs(small_zoo, balanced_async):
    """With known overheads, simulated whole-model latencies are the 'measurements';
    calibrating a predictor without overheads on them reproduces them."""
    from tvm_mulayer.planning.partitioner import calibrate

    predictor, _ = balanced_async
    truth = {"gpu_launch": 8e-6, "gpu_call": 2e-6, "cpu_call": 15e-6, "gpu_byte": 2e-12, "cpu_byte": 2e-10,
             "copy_call": 10e-6, "base": 50e-6, "cpu_scale": 1.3, "gpu_scale": 1.1}
    runs = []
    for name in ("squeezenet1_1", "googlenet"):
        graph = layer_graph(import_onnx(small_zoo[name])[0]["main"])
        for ratio in (0.0, 0.5, 1.0):
            channels = {n.name: int(round(n.layer.channels * ratio)) for n in graph.layers}
            times = KernelTimes(graph, predictor, 8, include=channels)
            bare = simulate(graph, channels, times, predictor)
            seconds = simulate(graph, channels, times, predictor, overheads=truth)
            assert seconds > bare + len(graph.layers) * truth["cpu_call"] * (ratio < 1)
            runs.append({"model": name, "split": ratio, "graph": graph, "gpu_channels": channels, "seconds": seconds})
    report = calibrate(predictor, runs, 8)
    assert set(predictor.meta["overheads"]) == set(truth)
    for row in report:
        assert row["calibrated_ms"] == pytest.approx(row["measured_ms"], rel=0.05)
        assert row["kernels_only_ms"] < row["measured_ms"]
    del predictor.meta["overheads"], predictor.meta["calibration"]  # the fixture is shared


def test_layers_the_split_leaves_whole_get_a_prediction(balanced_async):
    """A transposed or 1-D convolution (run whole by the generic rules) still gets a time."""
    from tvm_mulayer.base.layers import Layer

    predictor, _ = balanced_async
    layers = [Layer("t", "conv2d_transpose", (1, 8, 16, 16), (1, 4, 32, 32), (8, 4, 2, 2), splittable=False),
              Layer("c", "conv1d", (1, 8, 64), (1, 16, 62), (16, 8, 3), splittable=False)]
    for role in ("cpu", "gpu"):
        times = predictor.kernel_times(layers, role)
        assert np.all(np.isfinite(times)) and np.all(times > 0)


def test_chain_search_splits_rows_in_chains_and_computes_the_right_answer(small_zoo, balanced_async):
    """With an equal-speed async GPU and costly copies, channel splits pay an exchange per
    layer; CoDL's row splits in chains cross only at chain ends, so the hybrid search finds
    a plan predicted faster than the channel-only one, with chains of several layers, and
    that plan, built and run, gives onnxruntime's answer."""
    _, gpu = balanced_async
    predictor = train(_synthetic_rows(2e9, 2e9, copy_per_byte=2e-9), CPU, gpu)
    model = small_zoo["vgg16"]
    mod, info = import_onnx(model)
    channel_plan, channel_only, _, _ = auto_plan(mod["main"], CPU, gpu, predictor, info.sources, 8, precision="fp32",
                                                 dims=("channel",))
    assert not channel_only.rows and {lp.dim for lp in channel_plan.layers} == {"channel"}
    plan, choice, graph, _ = auto_plan(mod["main"], CPU, gpu, predictor, info.sources, 8, precision="fp32")
    assert choice.latency < channel_only.latency <= min(channel_only.single.values()) * (1 + 1e-9)
    assert max(len(chain) for chain, _ in choice.chains) >= 2
    heights = [lp for lp in plan.layers if lp.dim == "height"]
    assert {lp.name for lp in heights} == set(choice.rows)
    assert all(lp.chain and lp.gpu_rows == choice.rows[lp.name].gpu_rows for lp in heights)
    # the simulated timeline marks each part with its chain
    _, events = simulate(graph, choice.gpu_channels, choice.times, predictor, timeline=True, rows=choice.rows)
    assert {e.chain for e in events if e.chain} == {split.chain for split in choice.rows.values()}
    x = np.random.default_rng(3).standard_normal(input_shape(model)).astype("float32")
    executable = tvm_mulayer.compile(model, gpu="emulated", split=plan, precision="fp32")
    assert [(lp.dim, lp.gpu_rows, lp.chain) for lp in executable.plan.layers] == \
        [(lp.dim, lp.gpu_rows, lp.chain) for lp in plan.layers]
    assert relative_error(executable.run(x)["logits"], ort_run(model, {"input": x})[0]) < 1e-4


def test_split_dims_must_include_channel(small_zoo, balanced_async):
    predictor, gpu = balanced_async
    mod, info = import_onnx(small_zoo["squeezenet1_1"])
    for dims in (("height",), ("channel", "width")):
        with pytest.raises(MulayerError, match="split dims"):
            auto_plan(mod["main"], CPU, gpu, predictor, info.sources, 8, dims=dims)
