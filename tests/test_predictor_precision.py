"""Precision in the profiler, predictor and partitioner (issue 5).

* The profiler's int8 / fp16 kernel of a layer is the split pass's slice: same numbers.
* A predictor trained on a tiny profile measured here keeps the precisions apart.
* The partitioner plans native precision with int8/fp16 predictions (a much faster int8
  CPU gets more of the network than at fp32), charges compact copies exactly as the split
  pass emits them, and says so — once — when the predictor knows float32 only.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper

from tvm_mulayer.compiler.lowering import build_executable
from tvm_mulayer.base.errors import MulayerError
from tvm_mulayer.compiler.frontend import import_onnx
from tvm_mulayer.base.layers import find_layers, layer_weights
from tvm_mulayer.planning.partitioner import KernelTimes, auto_plan, layer_graph, partition, simulate
from tvm_mulayer.base.plan import make_plan
from tvm_mulayer.planning.predictor import train
from tvm_mulayer.base.processors import cpu_processor, gpu_processor
from tvm_mulayer.schedules.cpu.dot_intrin import dot_product_for
from tvm_mulayer.planning.profiler import PROFILE_INPUT_RANGE, build_kernels, input_form, profile, profile_precisions, zoo_configs
from tvm_mulayer.base.records import config_key, parse_config, read_rows

from conftest import fast_params

CPU = cpu_processor("host")
EMULATED = gpu_processor("emulated", CPU)


def _one_layer_model(op: str, rng, in_channels: int = 8) -> onnx.ModelProto:
    """Conv (3x3, pad 1, `in_channels` -> 12 channels) or Gemm (40 -> 12), with bias, then Relu."""
    if op == "conv2d":
        x_shape = [1, in_channels, 9, 11]
        w = rng.standard_normal((12, in_channels, 3, 3)).astype("float32") * 0.2
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    else:
        x_shape, w = [1, 40], rng.standard_normal((40, 12)).astype("float32") * 0.2
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"])
    b = rng.standard_normal(12).astype("float32") * 0.1
    out_shape = [1, 12, 9, 11] if op == "conv2d" else [1, 12]
    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["y"], ["out"])], "one_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
         helper.make_tensor("b", TensorProto.FLOAT, b.shape, b.ravel())])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op,precision,in_channels", [("conv2d", "int8", 8), ("conv2d", "int8", 6),
                                                     ("conv2d", "int8", 3),
                                                     ("dense", "int8", 40), ("conv2d", "fp16", 8)])
def test_profiled_slice_kernel_computes_what_the_split_pass_emits(op, precision, in_channels):
    """The profiler's kernel for an int8 (fp16) slice, fed the slice's uint8 (float16) input,
    equals the split pass's slice — built by compile's own path — fed the float32 input that
    converts to exactly that. A 6-channel int8 conv reads its input padded to 8 channels on
    a CPU with a dot product (the kernel computes the same: the padding meets zero weights);
    a 3-channel one (a first layer) is not padded. int8: the same int32 sums and the same per-channel float32
    dequantize, so equal to float32 rounding (rtol 1e-6); fp16: float16 products summed in
    float32, in whatever order each schedule chose (rtol 1e-5, ~100x float32 epsilon for a
    72-term sum)."""
    rng = np.random.default_rng(7)
    model = _one_layer_model(op, rng, in_channels)
    mod, info = import_onnx(model)
    layer = find_layers(mod["main"])[0]
    weight = layer_weights(mod["main"])[layer.name]
    bias = np.array([t for t in model.graph.initializer if t.name == "b"][0].float_data, "float32")
    form = input_form(precision)
    if precision == "int8":  # uint8 codes; the float32 input that quantizes to exactly them
        codes = rng.integers(0, 256, layer.input_shape).astype("uint8")
        x = ((codes.astype("float32") - form.zero_point) * np.float32(form.scale)).astype("float32")
    else:
        codes = rng.standard_normal(layer.input_shape).astype("float16")
        x = codes.astype("float32")

    # the split pass: the whole layer on one processor in `precision`, range = the profile's
    role = "cpu" if precision == "int8" else "gpu"
    plan = make_plan([layer], role, 8)
    plan.layers[0].cpu_precision, plan.layers[0].gpu_precision = ("int8", "fp32") if role == "cpu" else ("fp32", "fp16")
    plan.layers[0].input_range = list(PROFILE_INPUT_RANGE)
    split = build_executable(mod, info, plan, CPU, EMULATED).run({"x": x})["out"]

    processor = CPU if role == "cpu" else EMULATED
    module, weights, inputs = build_kernels([(layer, precision)], processor, CPU, values=[(weight, bias)])
    padded = 2 if in_channels == 6 and dot_product_for(CPU.tvm_target()) is not None else 0
    assert inputs["k0"] == ([1, in_channels + padded, *layer.input_shape[2:]], codes.dtype.name)
    codes = np.pad(codes, ((0, 0), (0, padded)) + ((0, 0),) * (codes.ndim - 2), constant_values=7)
    device = tvm.cpu(0) if role == "cpu" else tvm.cpu(1)
    vm = tvm.runtime.vm.VirtualMachine(module, device)
    args = [tvm.runtime.tensor(a, device) for a in (codes, *weights["k0"])]
    profiled = vm["k0"](*args).numpy()
    assert profiled.shape == split.shape and np.abs(split).max() > 0.1
    np.testing.assert_allclose(profiled, split, rtol=1e-6 if precision == "int8" else 1e-5, atol=1e-6)


def test_config_keys_stay_compatible_and_bad_precisions_are_refused():
    import dataclasses

    layer = dataclasses.replace(zoo_configs(["alexnet"], fractions=(1.0,), image_size=67, width=0.1)[0], name="")
    # a float32 key is what profiles written before precisions were profiled hold
    assert "precision" not in config_key(layer) and parse_config(config_key(layer)) == (layer, "fp32")
    assert parse_config(config_key(layer, "int8")) == (layer, "int8")
    assert profile_precisions(["native", "fp32"]) == {"cpu": ("int8", "fp32"), "gpu": ("fp16", "fp32")}
    assert profile_precisions("cpu=int8,gpu=fp32") == {"cpu": ("int8",), "gpu": ("fp32",)}
    with pytest.raises(MulayerError, match="precision"):
        profile_precisions("int4")
    with pytest.raises(MulayerError, match="precision 'int4'"):
        parse_config(config_key(layer).replace('"dilation"', '"precision": "int4", "dilation"'))


@pytest.fixture(scope="module")
def measured_profile(tmp_path_factory):
    """A tiny profile measured on this machine: 6 layer parts of a small VGG in int8 and
    fp32 on the CPU, fp16 and fp32 on the emulated GPU, the conversions and copies."""
    configs = zoo_configs(["vgg16"], fractions=(0.5, 1.0), image_size=32, width=0.25, channel_multiple=16)[:6]
    path = tmp_path_factory.mktemp("profile") / "tiny.csv"
    profile(path, CPU, EMULATED, configs, precisions=profile_precisions(["native", "fp32"]), quiet=True)
    return read_rows(path), configs


@pytest.mark.slow
def test_predictor_trained_on_a_measured_profile_keeps_precisions_apart(measured_profile):
    rows, configs = measured_profile
    kinds = {(r["kind"], r["role"], parse_config(r["config"])[1] if r["kind"] == "kernel" else r["config"])
             for r in rows}
    assert {("kernel", "cpu", "int8"), ("kernel", "cpu", "fp32"), ("kernel", "gpu", "fp16"), ("kernel", "gpu", "fp32"),
            ("convert", "cpu", "uint8"), ("convert", "gpu", "float16"), ("copy", "gpu", "h2d")} <= kinds
    predictor = train(rows, CPU, EMULATED, holdout=0.0)
    assert predictor.precisions("cpu") == ["int8", "fp32"] and predictor.precisions("gpu") == ["fp16", "fp32"]
    measured = {(r["role"], r["config"]): float(r["seconds"]) for r in rows if r["kind"] == "kernel"}
    for role, forms in (("cpu", ("int8", "fp32")), ("gpu", ("fp16", "fp32"))):
        times = {p: predictor.kernel_times(configs, role, precision=p) for p in forms}
        for p in forms:  # each precision answers with its own measurements
            np.testing.assert_allclose(times[p], [measured[(role, config_key(c, p))] for c in configs], rtol=1e-9)
        assert not np.allclose(times[forms[0]], times[forms[1]])
        # the regressor sees the precision too: an unmeasured shape gets different times
        unmeasured = [configs[-1].part(configs[-1].channels - 3)]
        rows_of = [predictor.features(role)(unmeasured[0], False, p) for p in forms]
        assert rows_of[0] != rows_of[1]
    with pytest.raises(MulayerError, match="no fp16 cpu kernel"):
        predictor.kernel_times(configs, "cpu", precision="fp16")
    # conversions: a line per processor and dtype, growing with the bytes converted
    for role in ("cpu", "gpu"):
        for dtype in ("uint8", "float16"):
            assert 0 < predictor.convert_time(1 << 12, role, dtype) < predictor.convert_time(1 << 24, role, dtype)


@pytest.mark.slow
def test_profile_passes_time_each_kernel_again_and_train_reports_their_agreement(tmp_path):
    """--passes N: every kernel gets N rows (resuming tops up to N), the predictor answers
    with the fastest, and `train` reports how well the two first timings agree."""
    configs = zoo_configs(["vgg16"], fractions=(0.5, 1.0), image_size=32, width=0.25, channel_multiple=16)[:10]
    path = tmp_path / "passes.csv"
    fp32 = profile_precisions("fp32")
    with pytest.raises(MulayerError, match="passes must be at least 1"):
        profile(path, CPU, EMULATED, configs, precisions=fp32, quiet=True, passes=0)
    profile(path, CPU, EMULATED, configs, precisions=fp32, quiet=True, passes=2)

    def kernel_counts():
        counts = {}
        for r in read_rows(path):
            if r["kind"] == "kernel":
                counts[(r["role"], r["config"])] = counts.get((r["role"], r["config"]), 0) + 1
        return counts

    keys = {(role, config_key(c, "fp32")) for role in ("cpu", "gpu") for c in configs}
    assert kernel_counts() == {key: 2 for key in keys}
    profile(path, CPU, EMULATED, configs, precisions=fp32, quiet=True, passes=2)  # nothing left to do
    assert kernel_counts() == {key: 2 for key in keys}
    profile(path, CPU, EMULATED, configs, precisions=fp32, quiet=True, passes=3)  # one more each
    assert kernel_counts() == {key: 3 for key in keys}
    rows = read_rows(path)
    predictor = train(rows, CPU, EMULATED, holdout=0.0)
    for role in ("cpu", "gpu"):
        fastest = [min(float(r["seconds"]) for r in rows if r["kind"] == "kernel" and r["role"] == role
                       and r["config"] == config_key(c, "fp32")) for c in configs]
        np.testing.assert_allclose(predictor.kernel_times(configs, role), fastest, rtol=1e-9)
        assert predictor.meta["repeatability"][f"{role} fp32"]["samples"] == len(configs)


def test_train_reads_gzipped_profiles_and_names_a_missing_one(tmp_path, capsys):
    """A profile gzipped (.csv.gz, as the repository keeps large ones) reads as the same rows
    and trains; `mulayer train` names a profile path that does not exist instead of training
    without it; profiling into a .csv.gz (which cannot be appended to) is refused before
    anything is compiled."""
    import gzip

    from tvm_mulayer.cli import main

    configs = zoo_configs(["vgg16"], fractions=(0.5, 1.0), image_size=32, width=0.25, channel_multiple=16)[:10]
    plain = tmp_path / "p.csv"
    profile(plain, CPU, EMULATED, configs, precisions=profile_precisions("fp32"), quiet=True)
    packed = tmp_path / "p.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_rows(packed) == read_rows(plain)
    out = tmp_path / "predictor.json"
    assert main(["train", str(packed), "--cpu", "host", "--gpu", "emulated", "--holdout", "0", "-o", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["train", str(packed), str(tmp_path / "typo.csv"), "--cpu", "host", "--gpu", "emulated",
                 "-o", str(tmp_path / "other.json")]) == 2
    assert "no such profile: " + str(tmp_path / "typo.csv") in capsys.readouterr().err
    assert not (tmp_path / "other.json").exists()
    with pytest.raises(MulayerError, match="cannot append measurements to the compressed profile"):
        profile(packed, CPU, EMULATED, configs, precisions=profile_precisions("fp32"), quiet=True)


def test_profile_configs_measures_exactly_the_listed_layers(tmp_path, capsys):
    """`mulayer profile --configs FILE`: the layers of a JSON list of configuration keys (a
    key's precision dropped: each layer is measured in the precisions asked for), each once;
    a file that is not such a list, or --configs with the zoo's options, is refused."""
    import json

    from tvm_mulayer.cli import main

    configs = zoo_configs(["vgg16"], fractions=(0.5, 1.0), image_size=32, width=0.25, channel_multiple=16)[:2]
    listed = tmp_path / "configs.json"
    listed.write_text(json.dumps([config_key(configs[0], "int8"), config_key(configs[0]), config_key(configs[1])]))
    out = tmp_path / "fresh.csv"
    assert main(["profile", "--configs", str(listed), "--gpu", "emulated", "--precision", "fp32", "-o", str(out)]) == 0
    measured = sorted((r["role"], r["config"]) for r in read_rows(out) if r["kind"] == "kernel")
    assert measured == sorted((role, config_key(c)) for role in ("cpu", "gpu") for c in configs)
    listed.write_text(json.dumps({"not": "a list"}))
    for extra, message in (([], "cannot read configurations from .*JSON list of configuration keys"),
                           (["--models", "vgg16"], "--configs profiles exactly the layers it lists")):
        capsys.readouterr()
        assert main(["profile", "--configs", str(listed), "--gpu", "emulated", "-o", str(out), *extra]) == 2
        assert re.search(message, capsys.readouterr().err)


def test_repeatability_is_the_agreement_of_the_first_two_timings_and_of_the_halves_fastest():
    from tvm_mulayer.planning.predictor import _repeatability

    layer = zoo_configs(["vgg16"], fractions=(1.0,), image_size=32, width=0.25)[0]
    rows = [{"kind": kind, "role": role, "config": config_key(part, precision), "seconds": s}
            for kind, role, part, precision, timings in [
                ("kernel", "cpu", layer, "int8", (1.0, 1.05, 9.0)),  # third timing not compared
                ("kernel", "cpu", layer.part(8), "int8", (1.3, 1.0)),
                ("kernel", "cpu", layer.part(4), "int8", (1.0,)),  # timed once: no agreement to tell
                ("kernel-concurrent", "gpu", layer, "fp16", (2.0, 2.1)),
                # four timings: halves' fastest 1.5 and 1.6 agree, though the first two do not
                ("kernel", "gpu", layer, "fp32", (2.0, 1.5, 1.6, 3.0))]
            for s in timings]
    assert _repeatability(rows) == {
        "cpu int8": {"samples": 2, "within_10pct": 0.5, "median_difference": pytest.approx((0.05 + 0.3) / 2)},
        "gpu fp16 concurrent": {"samples": 1, "within_10pct": 1.0, "median_difference": pytest.approx(0.05)},
        "gpu fp32": {"samples": 1, "within_10pct": 0.0, "median_difference": pytest.approx(0.5 / 1.5),
                     "halves": {"samples": 1, "within_10pct": 1.0, "median_difference": pytest.approx(0.1 / 1.5)}}}


def _synthetic_rows(rates: dict, launch: float = 20e-6):
    """Kernel seconds = launch + MACs / rate per (role, precision); conversions and copies
    cost little. Known answers for the partitioner."""
    rows = []
    configs = zoo_configs(["vgg16", "squeezenet1_1"], fractions=(0.125, 0.25, 0.5, 0.75, 1.0), image_size=64,
                          width=0.25)
    for layer in configs:
        for (role, precision), rate in rates.items():
            rows.append({"kind": "kernel", "role": role, "config": config_key(layer, precision),
                         "device": "synthetic", "seconds": launch + layer.macs / rate, "bytes": ""})
    for size in (1024, 65536, 1 << 20):
        for direction in ("h2d", "d2h"):
            rows.append({"kind": "copy", "role": "gpu", "config": direction, "bytes": size, "device": "synthetic",
                         "seconds": 2e-6 + size * 1e-11})
        for role in ("cpu", "gpu"):
            for dtype in ("uint8", "float16"):
                rows.append({"kind": "convert", "role": role, "config": dtype, "bytes": size, "device": "synthetic",
                             "seconds": 1e-6 + size * 1e-11})
    return rows


ASYNC_GPU = gpu_processor("cuda:sm_90", CPU)


@pytest.fixture(scope="module")
def int8_fast_predictor():
    """CPU and an asynchronous GPU equally fast in float32 (so float32 plans split); the
    int8 CPU slices 8x faster, fp16 GPU slices as fast as float32."""
    rates = {("cpu", "fp32"): 2e9, ("cpu", "int8"): 16e9, ("gpu", "fp32"): 2e9, ("gpu", "fp16"): 2e9}
    return train(_synthetic_rows(rates), CPU, ASYNC_GPU)


def _cpu_macs(plan, layers) -> float:
    by_name = {layer.name: layer for layer in layers}
    return sum(by_name[lp.name].macs * (1 - lp.effective_ratio) for lp in plan.layers)  # channels or rows


def test_native_plans_use_int8_predictions_and_give_the_cpu_more(small_zoo, int8_fast_predictor):
    mod, info = import_onnx(small_zoo["vgg16"])
    layers = find_layers(mod["main"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the predictor has every precision asked for: no warning
        native, choice, _, _ = auto_plan(mod["main"], CPU, ASYNC_GPU, int8_fast_predictor, info.sources, 8,
                                         precision="native")
        fp32, fp32_choice, _, _ = auto_plan(mod["main"], CPU, ASYNC_GPU, int8_fast_predictor, info.sources, 8,
                                            precision="fp32")
    assert choice.times.precision == {"cpu": "int8", "gpu": "fp16"} and not choice.notes
    assert fp32_choice.times.precision == {"cpu": "fp32", "gpu": "fp32"}
    total = sum(layer.macs for layer in layers)
    assert 0.2 * total < _cpu_macs(fp32, layers) < 0.8 * total  # equal speeds: shared
    assert _cpu_macs(native, layers) > _cpu_macs(fp32, layers) + 0.1 * total
    assert choice.latency < fp32_choice.latency
    assert "kernels predicted in cpu int8, gpu fp16" in native.description


def test_a_float32_only_predictor_falls_back_and_says_so_once(small_zoo):
    rates = {("cpu", "fp32"): 2e9, ("gpu", "fp32"): 2e9}
    predictor = train(_synthetic_rows(rates), CPU, EMULATED)
    mod, info = import_onnx(small_zoo["squeezenet1_1"])
    with pytest.warns(UserWarning) as caught:
        plan, choice, _, _ = auto_plan(mod["main"], CPU, EMULATED, predictor, info.sources, 8)  # native by default
    messages = [str(w.message) for w in caught if "split auto" in str(w.message)]
    assert len(messages) == 1
    assert "no int8 CPU kernel timings" in messages[0] and "no fp16 GPU kernel timings" in messages[0]
    assert choice.times.precision == {"cpu": "fp32", "gpu": "fp32"}
    assert "planned with fp32 predictions" in plan.description
    logged = []
    auto_plan(mod["main"], CPU, EMULATED, predictor, info.sources, 8, precision="cpu=int8,gpu=fp32", log=logged.append)
    assert len(logged) == 1 and "int8" in logged[0] and "fp16" not in logged[0]


@pytest.mark.parametrize("name", fast_params(["squeezenet1_1"], ["mobilenet_v1"]))
def test_simulated_copies_at_native_precision_are_the_split_pass_copies(small_zoo, int8_fast_predictor, name):
    """Copies into int8 CPU slices move uint8, into fp16 GPU slices float16: the simulated
    bytes equal the bytes of the split pass's transfers, by dtype."""
    from tvm_mulayer.passes import SplitChannels

    mod, _ = import_onnx(small_zoo[name])
    graph = layer_graph(mod["main"])
    layers = find_layers(mod["main"])
    rng = np.random.default_rng(len(name))
    plan = make_plan(layers, {"layers": {l.name: float(rng.choice([0, 0.25, 0.5, 1])) for l in layers}}, 8)
    for lp, layer in zip(plan.layers, layers):
        if layer.splittable:
            lp.gpu_precision = "fp16"
            if lp.gpu_channels < lp.channels:
                lp.cpu_precision, lp.input_range = "int8", [0.0, 1.0]
    times = KernelTimes(graph, int8_fast_predictor, 8, include={lp.name: lp.gpu_channels for lp in plan.layers},
                        precision={"cpu": "int8", "gpu": "fp16"})
    _, events = simulate(graph, {lp.name: lp.gpu_channels for lp in plan.layers}, times, int8_fast_predictor,
                         timeline=True)
    predicted = sum(e.nbytes for e in events if e.lane == "copy")
    llvm = tvm.target.Target({"kind": "llvm"})
    split = SplitChannels(plan, llvm, llvm)(mod)
    emitted, dtypes = 0, set()
    for binding in split["main"].body.blocks[0].bindings:
        value = binding.value
        if isinstance(value, tvm.relax.Call) and getattr(value.op, "name", "") == "relax.to_vdevice":
            ty = binding.var.ty
            emitted += int(np.prod([int(d) for d in ty.shape.values])) * tvm.runtime.DataType(ty.dtype).bits // 8
            dtypes.add(str(ty.dtype))
    assert {"uint8", "float16"} & dtypes
    assert predicted == pytest.approx(emitted)
    # and the conversions are charged as kernels on the processor holding the data
    assert any("input to uint8" in e.label for e in events) and any("input to float16" in e.label for e in events)


def test_partition_without_precision_is_float32(small_zoo, int8_fast_predictor):
    graph = layer_graph(import_onnx(small_zoo["squeezenet1_1"])[0]["main"])
    choice = partition(graph, int8_fast_predictor, 8)
    assert choice.times.precision == {"cpu": "fp32", "gpu": "fp32"}
    assert choice.latency <= min(choice.single.values()) * (1 + 1e-9)


@pytest.mark.slow
def test_exported_kernels_are_measured_with_the_tvm_runtime_alone(tmp_path):
    """A GPU host has only the TVM runtime (no Relax, no compiler; scripts/gpu_host_run.py
    carries it): measuring exported int8/fp16 kernels must not import the compiler side (it
    once did, through the split pass, to learn the slices' input dtype)."""
    import json
    import os
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    import tvm_ffi

    from tvm_mulayer.planning.profiler import export_kernels

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from gpu_host_run import _runtime_tarball  # pylint: disable=import-outside-toplevel

    configs = zoo_configs(["alexnet"], fractions=(1.0,), small=True)[:2]
    export_kernels(tmp_path / "kernels", CPU, EMULATED, configs, profile_precisions("native"))
    site = tmp_path / "site"
    _runtime_tarball(tmp_path / "runtime.tar.gz")
    with tarfile.open(tmp_path / "runtime.tar.gz") as tar:
        tar.extractall(site, filter="data")
    os.symlink(Path(tvm_ffi.__file__).parent, site / "tvm_ffi")
    repo = Path(__file__).resolve().parents[1]
    code = ("import json, sys\n"
            "from tvm_mulayer.planning.profiler import measure_exported\n"
            f"measure_exported({str(tmp_path / 'kernels')!r}, {str(tmp_path / 'p.csv')!r}, quiet=True)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('tvm.relax', 'passes', 'tvm_mulayer.passes')))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "TVM_USE_RUNTIME_LIB": "1", "PYTHONPATH": f"{site}{os.pathsep}{repo}"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    kernels = {(r["role"], r["config"]) for r in read_rows(tmp_path / "p.csv") if r["kind"] == "kernel"}
    assert kernels == {(role, config_key(c, p)) for role, p in (("cpu", "int8"), ("gpu", "fp16")) for c in configs}
