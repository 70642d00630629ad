"""Latency predictor: XGBoost regressors of kernel time per processor, plus a copy model.

Kernel time is predicted per multiply-accumulate, in log space (so errors are relative and
the trees learn a kernel's efficiency, not its size), from the layer's shape and costs and
from what the project's schedule rules make of it on that processor (tiles, parallel tasks,
thread blocks, tails), alone or with the other processor busy. The trees correct an
analytic base (`KernelBase`): a fixed cost plus time per multiply-accumulate, per byte
moved and per unit of the busiest parallel slot's work, fitted per precision and schedule
rule. Without it the trees had to build the launch floor (a GPU kernel's few
microseconds) and the throughput line out of steps, and missed between them. Copies are a line,
seconds = latency + bytes / bandwidth, per direction. What runs besides the layers (VM
dispatch, GPU launches, pooling/LRN/concat kernels) is a small overhead model fitted to
whole-model runs by `partitioner.calibrate`. Configurations the profile measured are
answered with their measurement.

Each kernel has a slice *precision* (CPU int8/fp32, GPU fp16/fp32, see the profiler): the
features carry its element size and what the rules for that form do with it — the int8
dot-product conv/dense rules' tiles on the CPU, the tensor-core GEMM's on a CUDA GPU, the
generic rules with float16 inputs otherwise. The predictor records which precisions each
processor was profiled in (`precisions`); one trained before precisions were profiled
knows float32 only. Converting an input into a slice's form (quantize to uint8, cast to
float16) is a line per processor and dtype, like the copies.

A predictor holds XGBoost's model per processor and its base's coefficients, with the
processors it was measured on, the data it was trained on (and those measurements), its
held-out accuracy and the overheads. It is saved (`Predictor.save`) as XGBoost saves a
model, by extension: to a `.json` path as one JSON file, the models embedded as XGBoost's
JSON text and the measurements keyed by configuration (readable; 7-11 MB for the shipped
profiles); to any other (`.zip` by convention, the shipped predictors) as a zip archive of
XGBoost's binary UBJSON model per processor and one JSON file of the rest, its measurements
in columns, one per configuration field, compressed (1.3-1.7 MB for the same: UBJSON holds
a tree's float in 4 bytes, JSON in a decimal string). Both load without pickle, with the
same predictions (XGBoost writes its JSON floats exactly), and `Predictor.load` tells them
apart by content.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np

from ..base.errors import MulayerError
from ..base.layers import Layer
from ..base.records import KERNEL_KINDS, config_key, parse_config
from ..schedules.cpu.dot_intrin import slice_input_channels

PREDICTOR_FORMAT = "tvm-mulayer-predictor/5"  # one JSON file
ARCHIVE_FORMAT = "tvm-mulayer-predictor/6"  # a zip archive: TABLES_MEMBER and a UBJSON model per processor
TABLES_MEMBER = "predictor.json"
# What the regressors see: the layer's shape and costs, and what the project's schedule
# rules will make of it on that processor (tiles, parallel tasks, thread blocks, tails),
# since those — not the shape alone — decide a kernel's speed.
FEATURES = (
    "dense", "depthwise", "grouped", "dtype_bytes", "concurrent", "in_channels", "out_channels", "height", "width",
    "out_height", "out_width", "kernel", "stride", "groups", "log_macs", "log_input_bytes", "log_weight_bytes",
    "log_output_bytes", "log_reduction", "log_output_elements", "log_intensity", "channel_tail", "width_tail",
    "rule", "tile_channels", "tile_width", "tile_waste", "log_tasks", "task_imbalance", "log_work_per_task",
    "threads_per_block", "log_shared_bytes", "reduction_splits", "vector_load",
    "reduction_steps", "reduction_waste", "gather_channel_tail", "tile_height", "log_staged_per_thread",
    "resident_blocks", "sm_fill", "log_step_chain", "log_block_path",
)
# An H100/H200-class SM, for the direct conv's occupancy: how many of its blocks one SM holds
# at once (by threads, blocks and shared memory) and so how many waves the grid runs in.
# Only relative values matter to the trees; a phone's GPU differs, and its own profile trains them.
SM_COUNT, SM_THREADS, SM_BLOCKS, SM_SHARED = 132, 2048, 32, 228 * 1024


# seconds per GPU kernel issued (host), per GPU / CPU kernel run besides its compute, per byte
# of the pooling/LRN/concat ops that follow a layer, per copy besides the transfer, per
# inference, and factors on the layer kernels' profiled times (see partitioner.simulate)
NO_OVERHEADS = {"gpu_launch": 0.0, "gpu_call": 0.0, "cpu_call": 0.0, "gpu_byte": 0.0, "cpu_byte": 0.0,
                "copy_call": 0.0, "base": 0.0, "cpu_scale": 1.0, "gpu_scale": 1.0}


def _dtype_bytes(dtype: str) -> int:
    return max(1, int("".join(c for c in dtype if c.isdigit()) or 32) // 8)


# slice precision -> (input dtype, weight dtype, accumulator/output dtype) of its kernel
SLICE_DTYPES = {"int8": ("uint8", "int8", "int32"), "fp16": ("float16", "float16", "float32"),
                "fp32": ("float32", "float32", "float32")}
# rule codes of the precision-specific rules, after the float32 ones (0-5), and of the
# pointwise-conv GEMM tile (added later, so after them)
RULE_INT8_CONV, RULE_INT8_DENSE, RULE_TENSOR_CORE, RULE_POINTWISE_GEMM = 6, 7, 8, 9
# what each rule code is, on an LLVM CPU (the emulated GPU's too) and on a real GPU
RULE_NAMES = {
    "cpu": {0: "conv, width-vectorized", 1: "conv, channel-vectorized", 2: "depthwise conv", 3: "dense",
            4: "dense, split K", 5: "left whole", RULE_INT8_CONV: "int8 conv, dot product",
            RULE_INT8_DENSE: "int8 dense, dot product", RULE_POINTWISE_GEMM: "pointwise conv GEMM"},
    "gpu": {0: "direct conv", 1: "dlight GEMM", 2: "depthwise conv", 3: "dense", 4: "conv fallback",
            5: "left whole", RULE_TENSOR_CORE: "tensor-core GEMM"}}


class KernelFeatures:
    """Feature rows for layer parts run on one processor (`target`: its TVM target JSON;
    `threads`: the CPU thread pool the kernels were timed with)."""

    def __init__(self, target: dict, threads: int, fp32_prepacked: bool = False):
        import tvm

        self.target = tvm.target.Target(target)
        self.gpu = target.get("kind") != "llvm"
        self.threads = max(1, int(threads))
        # whether float32 kernels were timed with their weights repacked at compile time (the
        # profiler since slice precisions; before, the repack ran in the kernel, which makes
        # the Conv2d rule prefer another form for some layers)
        self.fp32_prepacked = fp32_prepacked

    def __call__(self, layer: Layer, concurrent: bool = False, precision: str = "fp32") -> list[float]:
        if precision not in SLICE_DTYPES:
            raise MulayerError(f"no kernel features for precision {precision!r}; known: {', '.join(SLICE_DTYPES)}")
        # a float32 layer's slice reads the precision's input dtype (fp32: the layer's own)
        in_dtype = layer.dtype if precision == "fp32" else SLICE_DTYPES[precision][0]
        nbytes = _dtype_bytes(in_dtype)
        size = lambda shape: float(np.prod(shape))  # noqa: E731
        spatial = lambda shape: (shape[2], shape[3]) if len(shape) == 4 else (1, 1)  # noqa: E731
        (h, w), (oh, ow) = spatial(layer.input_shape), spatial(layer.output_shape)
        kernel = layer.weight_shape[2] if layer.op == "conv2d" else 1
        reduction = size(layer.weight_shape[1:]) if layer.op == "conv2d" else float(layer.weight_shape[0])
        input_bytes, weight_bytes = size(layer.input_shape) * nbytes, size(layer.weight_shape) * nbytes
        output_bytes = size(layer.output_shape) * nbytes
        macs = max(layer.macs, 1)
        depthwise = layer.groups > 1 and layer.channels_per_unit == 1 and layer.weight_shape[1] == 1
        if layer.op not in ("conv2d", "dense"):  # a conv the split pass leaves whole: the generic rules run it
            schedule = {"rule": 5, "lanes": 1, "tile_channels": 1, "tile_width": 1, "waste": 1.0,
                        "tasks": size(layer.output_shape), "slots": 1, "work": macs / size(layer.output_shape)}
        elif self.gpu:
            schedule = self._gpu_schedule(layer, depthwise, precision)
        else:
            schedule = self._cpu_schedule(layer, depthwise, precision)
        lanes = 32 if self.gpu else schedule["lanes"]
        tasks = max(schedule["tasks"], 1)
        waves = -(-tasks // schedule["slots"])
        return [
            float(layer.op == "dense"), float(depthwise), float(layer.groups > 1), float(nbytes), float(concurrent),
            float(layer.input_shape[1]), float(layer.channels), float(h), float(w), float(oh), float(ow),
            float(kernel), float(layer.strides[0]), float(layer.groups), math.log(macs), math.log(input_bytes),
            math.log(weight_bytes), math.log(output_bytes), math.log(max(reduction, 1)),
            math.log(size(layer.output_shape)), math.log(macs / (input_bytes + weight_bytes + output_bytes)),
            float(layer.channels % lanes), float(ow % lanes),
            float(schedule["rule"]), float(schedule["tile_channels"]), float(schedule["tile_width"]),
            float(schedule["waste"]), math.log(tasks), waves * schedule["slots"] / tasks,
            math.log(max(schedule["work"], 1.0)), float(schedule.get("threads", 1)),
            math.log(max(schedule.get("shared", 0.0), 1.0)), float(schedule.get("splits", 1)),
            float(schedule.get("vector", 1)), float(schedule.get("steps", 1)),
            float(schedule.get("reduction_waste", 1.0)), float(schedule.get("gather_tail", 0)),
            float(schedule.get("rows", 1)), math.log(max(schedule.get("staged", 1.0), 1.0)),
            float(schedule.get("resident", 0)), float(schedule.get("fill", 0.0)),
            math.log(max(schedule.get("step_chain", 1.0), 1.0)), math.log(max(schedule.get("block_path", 1.0), 1.0)),
        ]

    def _conv_info(self, layer: Layer, depthwise: bool, precision: str = "fp32"):
        """The facts the conv rules read from a kernel, from the layer's shapes and the
        slice's dtypes."""
        from types import SimpleNamespace

        in_dtype, _, out_dtype = SLICE_DTYPES[precision] if precision != "fp32" else \
            (layer.dtype, layer.dtype, "int32" if "int" in layer.dtype else layer.dtype)
        nbytes = _dtype_bytes(in_dtype)
        # input channels past the layer's: the padding an int8 slice reads (slice_input_channels)
        extra = slice_input_channels(layer, precision, self.target) - layer.input_shape[1]
        rc, in_c = layer.weight_shape[1] + extra, layer.input_shape[1] + extra
        return SimpleNamespace(
            n=1, f=layer.channels, oh=layer.output_shape[2], ow=layer.output_shape[3], rc=rc,
            kh=layer.weight_shape[2], kw=layer.weight_shape[3], stride_h=layer.strides[0], stride_w=layer.strides[1],
            in_c=in_c, in_h=layer.input_shape[2], in_w=layer.input_shape[3], depthwise=depthwise,
            in_dtype=in_dtype, out_dtype=out_dtype,
            weight_bytes=layer.channels * rc * layer.weight_shape[2] * layer.weight_shape[3] * nbytes,
            input_bytes=in_c * layer.input_shape[2] * layer.input_shape[3] * nbytes)

    def _cpu_schedule(self, layer: Layer, depthwise: bool, precision: str = "fp32") -> dict:
        from ..schedules.target import num_cores, vector_bits
        from ..schedules.cpu import conv2d_int8, dense_int8
        from ..schedules.cpu.conv2d import Conv2d
        from ..schedules.cpu.dense import Dense
        from ..schedules.cpu.dot_intrin import DEPTH, dot_product_for

        in_dtype, _, out_dtype = SLICE_DTYPES[precision] if precision != "fp32" else (layer.dtype,) * 3
        # int8/float16 slices were always timed as the build runs them, weights repacked at
        # compile time; float32 ones too unless the predictor predates that
        prepacked = precision != "fp32" or self.fp32_prepacked
        lanes = max(vector_bits(self.target) // (8 * _dtype_bytes(in_dtype)), 1)
        out_bits = 8 * _dtype_bytes(out_dtype)
        slots = self.threads
        dot = dot_product_for(self.target) if precision == "int8" else None
        if layer.op == "dense":
            k, n = layer.weight_shape
            if dot is not None:  # dense_int8: column tiles of NB x LANES on the dot product
                tile = dense_int8.column_blocks(n, dot.lanes, num_cores(self.target)) * dot.lanes
                return {"rule": RULE_INT8_DENSE, "lanes": dot.lanes, "tile_channels": tile, "tile_width": 1,
                        "waste": -(-n // tile) * tile / n, "tasks": -(-n // tile), "slots": slots, "work": k * tile}
            if k * n * out_bits // 8 >= (1 << 20) and k >= 64 * slots:  # the rule's split-K case
                return {"rule": 4, "lanes": lanes, "tile_channels": n, "tile_width": 1, "waste": 1.0,
                        "tasks": slots, "slots": slots, "work": k * n / slots}
            t = Dense.tiles(n, k, self.target, out_bits)
            tile = t["NU"] * t["VL"]
            return {"rule": 3, "lanes": lanes, "tile_channels": tile, "tile_width": 1,
                    "waste": -(-n // tile) * tile / n, "tasks": -(-n // tile), "slots": slots, "work": k * tile}
        info = self._conv_info(layer, depthwise, precision)
        # conv2d_int8.fits: groups 1 (not grouped or depthwise), input channels in whole quads (the
        # slice pads them to quads on such a CPU)
        if dot is not None and layer.groups == 1 and info.rc % DEPTH == 0:
            t = conv2d_int8.tiles(info, self.target, dot)
            channels = t["FB"] * dot.lanes
            tasks = -(-info.f // channels) * info.oh  # parallel (channel block, output row)
            return {"rule": RULE_INT8_CONV, "lanes": dot.lanes, "tile_channels": channels, "tile_width": t["XI"],
                    "waste": -(-info.f // channels) * channels / info.f, "tasks": tasks, "slots": slots,
                    "work": layer.macs / tasks}
        t = Conv2d.tiles(info, self.target, prepacked)
        if t["mode"] == "gemm":  # parallel over channel blocks of FO x FV, pixel tiles of PU
            channels = t["FO"] * t["FV"]
            tasks = -(-info.f // channels)
            return {"rule": RULE_POINTWISE_GEMM, "lanes": lanes, "tile_channels": channels, "tile_width": t["PU"],
                    "waste": tasks * channels / info.f, "tasks": tasks, "slots": slots, "work": layer.macs / tasks}
        if t["mode"] == "fvec":  # parallel (channel vector, output row); channels padded to whole vectors
            blocks = -(-info.f // t["FV"])
            tasks = blocks * info.oh
            return {"rule": 1, "lanes": lanes, "tile_channels": t["FV"], "tile_width": t["XU"],
                    "waste": blocks * t["FV"] / info.f * -(-info.ow // t["XU"]) * t["XU"] / info.ow, "tasks": tasks,
                    "slots": slots, "work": layer.macs / tasks}
        channel_blocks = -(-info.f // t["FI"])
        width_blocks = -(-info.ow // t["XI"])
        tasks = channel_blocks * -(-info.oh // t["YI"])
        vectors = -(-t["XI"] // lanes) * lanes
        waste = channel_blocks * t["FI"] / info.f * width_blocks * vectors / info.ow
        return {"rule": 2 if depthwise else 0, "lanes": lanes, "tile_channels": t["FI"], "tile_width": t["XI"],
                "waste": waste, "tasks": tasks, "slots": slots, "work": layer.macs / tasks}

    def _gpu_schedule(self, layer: Layer, depthwise: bool, precision: str = "fp32") -> dict:
        from ..schedules.gpu.base import max_threads
        from ..schedules.gpu.conv2d import Conv2d
        from ..schedules.gpu.dense import Dense
        from ..schedules.gpu.tensor_core import TensorCoreGemm, is_sm70_cuda, gemm_tiles

        slots = 132 * 4  # resident blocks of a large GPU: only the relative wave count matters
        in_dtype = SLICE_DTYPES[precision][0] if precision != "fp32" else layer.dtype
        if precision == "fp16" and is_sm70_cuda(self.target) and layer.groups == 1:
            # TensorCoreGemm's eligibility: channels x pixels x reduction, each big enough
            m = layer.channels
            n = 1 if layer.op == "dense" else layer.output_shape[2] * layer.output_shape[3]
            k = layer.weight_shape[0] if layer.op == "dense" else int(np.prod(layer.weight_shape[1:]))
            if n >= TensorCoreGemm.min_pixels and m >= TensorCoreGemm.min_channels and k >= 16:
                # as the rule calls it: the K window is kh * kw of a conv (1 for a matmul)
                window = 1 if layer.op == "dense" else layer.weight_shape[2] * layer.weight_shape[3]
                in_channels = 0 if layer.op == "dense" else layer.weight_shape[1]
                t = gemm_tiles(m, n, k, window, TensorCoreGemm.stages, in_channels)
                tiles = -(-m // t.bm) * -(-n // t.bn)
                # thread blocks: output tiles times the K ranges the rule splits the reduction
                # into, each block multiplying its range's slabs (steps)
                steps = -(-k // (t.bk * t.split_k))
                # The gather's cost hangs on its layout: ordered (ky, kx, c), a 32-deep slab whose
                # channels do not fill it straddles two window positions (a slower index path:
                # 94 or 105 channels took 1.34x the time per step of 128 on the H200 host, same
                # tiles and grid, benchmarks/log/2026-11-30.md "GPU features"); K padding is multiplied for nothing.
                return {"rule": RULE_TENSOR_CORE, "tile_channels": t.bm, "tile_width": t.bn,
                        "waste": tiles * t.bm * t.bn / (m * n), "tasks": tiles * t.split_k, "slots": slots,
                        "work": steps * t.bk * t.bm * t.bn / (t.warps * 32), "threads": t.warps * 32,
                        "shared": t.shared_bytes(), "splits": t.split_k, "vector": t.vector_w, "steps": steps,
                        "reduction_waste": steps * t.bk * t.split_k / k,
                        "gather_tail": in_channels % t.bk if t.channels_inner else -1}
        if layer.op == "dense":
            k, n = layer.weight_shape
            t = Dense.tiles(n, k, 8 * _dtype_bytes(in_dtype), max_threads(self.target))
            columns = t["LANES"] * t["VEC"]
            return {"rule": 3, "tile_channels": columns, "tile_width": t["VEC"], "waste": -(-n // columns) * columns / n,
                    "tasks": -(-n // columns), "slots": slots, "work": k / t["TK"] * t["VEC"],
                    "threads": t["LANES"] * t["TK"]}
        info = self._conv_info(layer, depthwise, precision)
        outputs = info.f * info.oh * info.ow
        if depthwise:
            return {"rule": 2, "tile_channels": 1, "tile_width": 1, "waste": -(-outputs // 256) * 256 / outputs,
                    "tasks": -(-outputs // 256), "slots": slots, "work": info.kh * info.kw, "threads": 256}
        if info.kh == info.kw == 1 and info.stride_h == info.stride_w == 1:  # dlight's GEMM
            m, n = info.oh * info.ow, info.f
            return {"rule": 1, "tile_channels": n, "tile_width": m, "waste": -(-m // 32) * 32 / m,
                    "tasks": -(-m // 32) * -(-n // 32), "slots": slots, "work": info.rc, "threads": 256}
        try:
            t = Conv2d.tiles(info, self.target)
        except ValueError:  # no tiling fits shared memory: the fallback rule runs it
            return {"rule": 4, "tile_channels": 1, "tile_width": 1, "waste": 1.0, "tasks": -(-outputs // 256),
                    "slots": slots, "work": info.rc * info.kh * info.kw, "threads": 256}
        channels, threads, shared = t["TF"] * t["FI"], t["TF"] * t["TY"] * t["TX"], Conv2d.shared_bytes(info, t)
        blocks, steps = Conv2d.blocks(info, t), -(-info.rc // t["RC"])
        staged = shared / _dtype_bytes(in_dtype) / threads  # elements a thread stages per reduction step
        step_chain = t["FI"] * t["RC"] * info.kh * info.kw  # multiply-adds a thread chains per step
        resident = max(1, min(SM_THREADS // threads, SM_BLOCKS, SM_SHARED // max(shared, 1)))
        waves = -(-blocks // (resident * SM_COUNT))
        # The grid runs in waves of the blocks the SMs hold at once; a block walks the
        # reduction in steps, each staging its share of the patch then chaining its
        # multiply-adds. Both halves of a step matter: with few channels per step (a prime
        # channel count steps one at a time) the staging and its barriers dominate.
        return {"rule": 0, "tile_channels": channels, "tile_width": t["TX"],
                "waste": -(-info.f // channels) * channels / info.f, "tasks": blocks,
                "slots": slots, "work": t["FI"] * info.rc * info.kh * info.kw, "threads": threads, "shared": shared,
                "steps": steps, "rows": t["TY"], "staged": staged, "resident": resident,
                "fill": blocks / (resident * SM_COUNT), "step_chain": step_chain,
                "block_path": waves * steps * (staged + step_chain)}


def _accuracy(predicted, actual) -> dict:
    rel = np.abs(np.asarray(predicted) - np.asarray(actual)) / np.asarray(actual)
    return {"samples": int(len(rel)), "within_10pct": float(np.mean(rel <= 0.10)),
            "median_error": float(np.median(rel)), "p90_error": float(np.quantile(rel, 0.9))}


class KernelBase:
    """The analytic base the boosters correct, for one processor: seconds = fixed + macs x
    per_mac + bytes x per_byte + critical x per_unit, where `critical` is the busiest
    parallel slot's work (waves of tasks x work per task, from the schedule features).
    Coefficients are fitted per precision and per schedule rule with enough samples (the
    precision's own otherwise), non-negative, in relative error: {precision: {"any" or
    rule code: [fixed, per_mac, per_byte, per_unit]}}."""

    MIN_RULE_SAMPLES = 20  # fewer, and a rule's kernels take their precision's line

    def __init__(self, coefficients: dict):
        self.coefficients = coefficients

    @staticmethod
    def terms(rows: np.ndarray) -> np.ndarray:
        """The base's columns for feature rows: 1, multiply-accumulates, bytes moved, critical work."""
        column = lambda name: rows[:, FEATURES.index(name)]  # noqa: E731
        moved = sum(np.exp(column(name)) for name in ("log_input_bytes", "log_weight_bytes", "log_output_bytes"))
        # task_imbalance x tasks = waves x slots: proportional to the waves on one slot
        critical = column("task_imbalance") * np.exp(column("log_tasks") + column("log_work_per_task"))
        return np.column_stack([np.ones(len(rows)), np.exp(column("log_macs")), moved, critical])

    @staticmethod
    def _line(terms: np.ndarray, seconds: np.ndarray) -> list:
        """Non-negative coefficients minimising the relative error (terms dropped while
        the fit gives them a negative one, a kernel costs no less for doing more)."""
        scaled = terms / seconds[:, None]
        norm = scaled.max(axis=0)  # columns scaled to 1 for the solver (MACs run to 1e10)
        kept = list(range(terms.shape[1]))
        while True:  # ends: every term is positive, so any one of them alone fits positive
            solved, *_ = np.linalg.lstsq(scaled[:, kept] / norm[kept], np.ones(len(seconds)), rcond=None)
            solved = solved / norm[kept]
            if (solved >= 0).all():
                break
            kept = [k for k, value in zip(kept, solved) if value > 0] or [0]
        coefficients = np.zeros(terms.shape[1])
        coefficients[kept] = solved
        return coefficients.tolist()

    @classmethod
    def fit(cls, rows: np.ndarray, seconds: np.ndarray, precisions: np.ndarray) -> "KernelBase":
        terms, rules = cls.terms(rows), rows[:, FEATURES.index("rule")]
        coefficients = {}
        for precision in sorted(set(precisions)):
            mine = precisions == precision
            lines = {"any": cls._line(terms[mine], seconds[mine])}
            for rule in sorted(set(rules[mine])):
                ruled = mine & (rules == rule)
                if ruled.sum() >= cls.MIN_RULE_SAMPLES:
                    lines[str(int(rule))] = cls._line(terms[ruled], seconds[ruled])
            coefficients[precision] = lines
        return cls(coefficients)

    def log_seconds_per_mac(self, rows: np.ndarray, precisions) -> np.ndarray:
        """The base's log seconds per multiply-accumulate of each feature row (the boosters' margin)."""
        terms, rules = self.terms(rows), rows[:, FEATURES.index("rule")]
        lines = [self.coefficients[precision] for precision in precisions]
        chosen = np.array([line.get(str(int(rule)), line["any"]) for line, rule in zip(lines, rules)])
        return np.log(np.sum(terms * chosen, axis=1)) - rows[:, FEATURES.index("log_macs")]


def _boosted_matrix(base: KernelBase, rows: np.ndarray, precisions, label=None):
    """The booster's input: feature rows with the base as margin (what the trees correct)."""
    import xgboost as xgb

    return xgb.DMatrix(rows, label, base_margin=base.log_seconds_per_mac(rows, precisions),
                       feature_names=list(FEATURES))


def _predict_log(booster, base: KernelBase, rows: np.ndarray, precisions) -> np.ndarray:
    """Log seconds per multiply-accumulate: the base, corrected by the booster."""
    return booster.predict(_boosted_matrix(base, rows, precisions))


def _threads(rows: list[dict], cpu) -> int:
    """The CPU thread pool the rows were timed with: the profiler records it in the device
    column ("..., 15 threads"); older profiles were timed with TVM's default, half the
    target's cores."""
    for row in rows:
        found = re.search(r"(\d+) threads", row["device"])
        if found:
            return int(found.group(1))
    return max(1, int(cpu.target.get("num-cores") or 2) // 2)


class Predictor:
    def __init__(self, boosters: dict, bases: dict, copy_model: dict, meta: dict, measured: dict | None = None,
                 convert_model: dict | None = None):
        # role -> xgboost.Booster: log seconds per multiply-accumulate, corrections to bases[role] (KernelBase)
        self.boosters = boosters
        self.bases = bases
        self.copy_model = copy_model  # "h2d"/"d2h" -> [seconds_fixed, seconds_per_byte]
        self.meta = meta
        # role -> profile kind -> config key -> seconds: configurations the profile measured
        # are answered from it (the regressor is for the others)
        self.measured = measured or {}
        # role -> dtype -> [seconds_fixed, seconds_per_float32_byte] of converting an input
        self.convert_model = convert_model or {}
        self._features = {}

    def precisions(self, role: str) -> list:
        """The slice precisions `role`'s kernels were profiled in (float32 only for a
        predictor trained before precisions were profiled)."""
        return list(self.meta.get("precisions", {}).get(role, ["fp32"]))

    def convert_time(self, nbytes: float, role: str, dtype: str) -> float:
        """Seconds `role` takes to convert `nbytes` of float32 into `dtype` (0 when the
        profile has no such conversion: see `has_conversion`)."""
        if nbytes <= 0 or dtype not in self.convert_model.get(role, {}):
            return 0.0
        fixed, per_byte = self.convert_model[role][dtype]
        return fixed + per_byte * nbytes

    def has_conversion(self, role: str, dtype: str) -> bool:
        return dtype in self.convert_model.get(role, {})

    @property
    def gpu_async(self) -> bool:
        """Whether GPU kernels run asynchronously to the host thread (not when emulated)."""
        return bool(self.meta.get("gpu_async", False))

    @property
    def overheads(self) -> dict:
        """What runs besides the layer kernels, fitted to whole-model runs
        (`partitioner.calibrate`); none until then."""
        return {**NO_OVERHEADS, **self.meta.get("overheads", {})}

    def features(self, role: str) -> KernelFeatures:
        if role not in self._features:
            self._features[role] = KernelFeatures(self.meta[f"{role}_target"], self.meta["cpu_threads"],
                                                  self.meta.get("fp32_weights_prepacked", False))
        return self._features[role]

    def kernel_times(self, layers: list[Layer], role: str, concurrent: bool = False,
                     precision: str = "fp32") -> np.ndarray:
        """Seconds of each layer part's slice kernel on `role` computing in `precision`
        (which must be one of `precisions(role)`)."""
        if precision not in self.precisions(role):
            raise MulayerError(f"the predictor has no {precision} {role} kernel measurements (it was profiled in "
                               f"{', '.join(self.precisions(role))}); profile with `mulayer profile --precision`")
        if not layers:
            return np.zeros(0)
        rows = np.array([self.features(role)(layer, concurrent, precision) for layer in layers])
        log_macs = np.log([max(layer.macs, 1) for layer in layers])
        predicted = np.exp(_predict_log(self.boosters[role], self.bases[role], rows, [precision] * len(rows)) + log_macs)
        table = self.measured.get(role, {}).get(KERNEL_KINDS[concurrent], {})
        return np.array([table.get(config_key(layer, precision), p) for layer, p in zip(layers, predicted)])

    def copy_time(self, nbytes: float, direction: str) -> float:
        if nbytes <= 0:
            return 0.0
        fixed, per_byte = self.copy_model[direction]
        return fixed + per_byte * nbytes

    def save(self, path) -> None:
        """Write the predictor to `path`: one JSON file if it ends in `.json`, else a zip
        archive (see the module's docstring)."""
        common = {"meta": self.meta, "copy_model": self.copy_model, "convert_model": self.convert_model,
                  "bases": {role: base.coefficients for role, base in self.bases.items()}}
        if Path(path).suffix == ".json":
            Path(path).write_text(json.dumps({
                "format": PREDICTOR_FORMAT, **common, "measured": self.measured,
                "boosters": {role: bytes(b.save_raw("json")).decode() for role, b in self.boosters.items()}}))
            return
        members = {f"{role}.ubj": bytes(booster.save_raw("ubj")) for role, booster in self.boosters.items()}
        tables = {"format": ARCHIVE_FORMAT, **common, "measured": _measured_columns(self.measured),
                  "boosters": {role: f"{role}.ubj" for role in self.boosters}}
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in {TABLES_MEMBER: json.dumps(tables).encode(), **members}.items():
                # a fixed date, so that saving the same predictor again gives the same bytes
                member = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                member.external_attr = 0o644 << 16
                archive.writestr(member, content, zipfile.ZIP_DEFLATED, 9)

    @staticmethod
    def load(path) -> "Predictor":
        """A predictor saved by `save`, in either form (told apart by content, not name)."""
        import io

        try:
            content = Path(path).read_bytes()
            if content.startswith(b"PK\x03\x04"):  # a zip archive's first local file header
                with zipfile.ZipFile(io.BytesIO(content)) as archive:
                    data = _checked_format(json.loads(archive.read(TABLES_MEMBER)), ARCHIVE_FORMAT, path)
                    models = {role: archive.read(member) for role, member in data["boosters"].items()}
                measured = _measured_from_columns(data["measured"])
            else:
                data = _checked_format(json.loads(content), PREDICTOR_FORMAT, path)
                models = {role: text.encode() for role, text in data["boosters"].items()}
                measured = data.get("measured")
            boosters = {role: _booster(model) for role, model in models.items()}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:  # XGBoostError is a ValueError
            raise MulayerError(f"cannot read predictor {path}: {err}") from None
        bases = {role: KernelBase(coefficients) for role, coefficients in data["bases"].items()}
        return Predictor(boosters, bases, data["copy_model"], data["meta"], measured, data.get("convert_model"))

    def check_processors(self, cpu, gpu) -> None:
        """A predictor measured on other processors predicts nothing useful: refuse it."""
        measured = (self.meta.get("cpu_target"), self.meta.get("gpu_target"))
        if measured != (cpu.target, gpu.target):
            raise MulayerError(
                f"the predictor was measured on CPU {json.dumps(measured[0])} + GPU {json.dumps(measured[1])}, "
                f"not on {json.dumps(cpu.target)} + {json.dumps(gpu.target)}; run `mulayer profile` and "
                "`mulayer train` for these processors")


def _checked_format(data, expected: str, path) -> dict:
    """`data` if it is a predictor of the `expected` format."""
    found = data.get("format") if isinstance(data, dict) else None
    if found != expected:
        raise MulayerError(f"{path} is not a tvm-mulayer predictor (format {found!r}, expected {expected!r}); "
                           "train it again with this version (`mulayer train`)")
    return data


def _booster(model: bytes):
    """An XGBoost booster from its saved model, JSON or UBJSON (XGBoost tells them apart)."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(model))
    return booster


def _measured_columns(measured: dict) -> dict:
    """`Predictor.measured` ({role: {kind: {config key: seconds}}}) in columns, per role: its
    configurations (every kind's, in key order) as one column per key field, None where a
    key lacks the field (float32 keys have no precision), and one column of seconds per
    kind, None where that kind was not measured. A key's fields repeat across thousands of
    keys; in columns they compress 2x better than the keys do."""
    columns = {}
    for role, kinds in measured.items():
        keys = sorted({key for table in kinds.values() for key in table})
        fields = [json.loads(key) for key in keys]
        names = sorted({name for config in fields for name in config})
        columns[role] = {"configs": {name: [config.get(name) for config in fields] for name in names},
                         "seconds": {kind: [table.get(key) for key in keys] for kind, table in kinds.items()}}
    return columns


def _measured_from_columns(columns: dict) -> dict:
    """`_measured_columns` undone: the keys rebuilt as `config_key` writes them."""
    measured = {}
    for role, table in columns.items():
        names, values = list(table["configs"]), zip(*table["configs"].values())
        keys = [json.dumps({name: value for name, value in zip(names, row) if value is not None}, sort_keys=True)
                for row in values]
        measured[role] = {kind: {key: s for key, s in zip(keys, seconds) if s is not None}
                          for kind, seconds in table["seconds"].items()}
    return measured


# Chosen by 5-fold cross-validation over layer shapes on the H200 host's profiles
# (scripts/tune_predictor.py; depth 4-8, eta 0.01-0.05, row/column sampling, leaf weight):
# depth 6 gained 2-7 points within +-10% over depth 4 alone, 1-13 concurrent, on every
# processor and precision of the two-pass profile;
# 2000 rounds at eta 0.02 scored within 4 points of these 800 at 0.05 but made a shipped
# predictor 2.5x larger (17 MB). On the noise-bound 2-core machine's profile all scored alike.
BOOSTER_PARAMS = {"max_depth": 6, "eta": 0.05, "subsample": 0.8, "colsample_bytree": 0.8, "min_child_weight": 3,
                  "objective": "reg:squarederror"}
BOOSTER_ROUNDS = 800


def _label(role: str, precision: str, concurrent: bool) -> str:
    """How accuracy and repeatability name a kind of kernel ("cpu int8", "gpu fp16 concurrent")."""
    return f"{role} {precision}{' concurrent' if concurrent else ''}"


def _repeatability(rows: list[dict]) -> dict:
    """How well a profile's repeated timings of the same kernel (`mulayer profile --passes`)
    agree, by kind: the share of kernels whose first two timings differ by at most 10% of
    the faster, and the median difference — the measurement's own noise, which bounds what
    any predictor of it can reach. With four timings or more, also ("halves") how the
    fastest of the first half of them agrees with the fastest of the second: the noise of
    a fastest-of-several timing, such as the predictor's own target."""
    timings = {}
    for row in rows:
        timings.setdefault((row["kind"], row["role"], row["config"]), []).append(float(row["seconds"]))
    pairs = {}
    for (kind, role, config), seconds in timings.items():
        label = _label(role, parse_config(config)[1], kind != "kernel")
        if len(seconds) >= 2:
            pairs.setdefault(label, {}).setdefault("first two", []).append(seconds[:2])
        if len(seconds) >= 4:
            half = len(seconds) // 2
            pairs[label].setdefault("halves", []).append((min(seconds[:half]), min(seconds[half:])))

    def agreement(timing_pairs):
        d = np.array([abs(a - b) / min(a, b) for a, b in timing_pairs])
        return {"samples": len(d), "within_10pct": float(np.mean(d <= 0.10)), "median_difference": float(np.median(d))}

    return {label: {**agreement(compared["first two"]),
                    **({"halves": agreement(compared["halves"])} if "halves" in compared else {})}
            for label, compared in sorted(pairs.items())}


def fastest_rows(rows: list[dict]) -> dict:
    """(kind, role, config) -> the fastest of its measurements (a profile may hold repeats)."""
    fastest = {}
    for row in rows:
        key = (row["kind"], row["role"], row["config"])
        fastest[key] = min(fastest.get(key, math.inf), float(row["seconds"]))
    return fastest


def _line(points: list) -> list:
    """[seconds_fixed, seconds_per_byte] through (bytes, seconds) points, fitted in relative
    error so the small transfers (most of a split's) are not drowned out by the large ones."""
    sizes, seconds = np.array(points).T
    per_byte, fixed = np.polyfit(sizes, seconds, 1, w=1 / seconds)
    return [max(float(fixed), 0.0), max(float(per_byte), 0.0)]


def split_family(layer: Layer) -> str:
    """What the split parts of one layer share (`Layer.part` changes only the output channels,
    and a grouped conv's input channels and groups with them): its key with those left out."""
    import dataclasses

    grouped = layer.groups > 1
    in_channels = 0 if grouped else layer.input_shape[1]
    weight = (layer.weight_shape[0], 0) if layer.op == "dense" else (0, *layer.weight_shape[1:])
    return config_key(dataclasses.replace(
        layer, input_shape=(layer.input_shape[0], in_channels, *layer.input_shape[2:]),
        output_shape=(layer.output_shape[0], 0, *layer.output_shape[2:]), weight_shape=weight, groups=int(grouped)))


class KernelSamples:
    """One processor's training data from a profile: every measured kernel (its fastest
    timing), its feature row, target (log seconds per multiply-accumulate), precision,
    concurrency and layer shape (the unit held out together)."""

    def __init__(self, predictor: Predictor, fastest: dict, role: str):
        self.role = role
        self.rule_names = RULE_NAMES["gpu" if predictor.features(role).gpu else "cpu"]
        self.keys = [key for key in fastest if key[1] == role]
        if sum(kind == "kernel" for kind, _, _ in self.keys) < 10:
            raise MulayerError(f"only {len(self.keys)} {role} kernel measurements; profile more configurations")
        parsed = [parse_config(config) for _, _, config in self.keys]
        layers = [layer for layer, _ in parsed]
        self.precision = np.array([precision for _, precision in parsed])
        self.concurrent = np.array([kind != "kernel" for kind, _, _ in self.keys])
        self.shape = np.array([config_key(layer) for layer in layers])
        self.family = np.array([split_family(layer) for layer in layers])
        self.x = np.array([predictor.features(role)(layer, c, p)
                           for layer, c, p in zip(layers, self.concurrent, self.precision)])
        self.seconds = np.array([fastest[key] for key in self.keys])
        self.log_macs = np.log([max(layer.macs, 1) for layer in layers])
        self.y = np.log(self.seconds) - self.log_macs

    @property
    def precisions(self) -> list:
        """The slice precisions measured, in the order int8, fp16, fp32."""
        return sorted(set(self.precision), key=["int8", "fp16", "fp32"].index)

    def fit(self, chosen, params: dict, rounds: int) -> tuple:
        """(booster, KernelBase) fitted on the `chosen` samples."""
        import xgboost as xgb

        base = KernelBase.fit(self.x[chosen], self.seconds[chosen], self.precision[chosen])
        data = _boosted_matrix(base, self.x[chosen], self.precision[chosen], self.y[chosen])
        return xgb.train(params, data, rounds), base

    def folds(self, count: int, seed: int = 0, whole_layers: bool = False) -> np.ndarray:
        """Each sample's fold of `count`, drawn by layer shape (for `accuracy`); with
        `whole_layers`, by the layer a shape is a split part of (`split_family`), so that no
        other part of a held-out layer is trained on: the accuracy on a network never profiled."""
        groups = self._units(whole_layers)
        keys = sorted(set(groups))
        fold = {key: n % count for n, key in enumerate(np.random.default_rng(seed).permutation(keys))}
        return np.array([fold[key] for key in groups])

    def _units(self, whole_layers: bool) -> np.ndarray:
        """What is held out together, per sample: its layer shape, or the layer it is a split part of."""
        return self.family if whole_layers else self.shape

    def drawn(self, share: float, seed: int = 0, whole_layers: bool = False) -> np.ndarray:
        """Whether each sample's layer shape (or with `whole_layers`, the layer it is a split
        part of) is among about `share` of them, drawn at random."""
        groups = self._units(whole_layers)
        keys = np.array(sorted(set(groups)))
        chosen = keys[np.random.default_rng(seed).random(len(keys)) < share]
        return np.isin(groups, chosen)

    def held_out(self, share: float, seed: int = 0, whole_layers: bool = False) -> np.ndarray:
        """Folds (for `accuracy`) holding out about `share` of the layer shapes (or whole
        layers) as fold 0, the rest never (-1)."""
        return np.where(self.drawn(share, seed, whole_layers), 0, -1)

    def cross_predicted(self, folds, params: dict, rounds: int, trainable=None) -> np.ndarray:
        """Each sample's seconds as predicted by boosters fitted with `params` for `rounds`
        on the other folds' samples (those `trainable` allows, a mask); NaN where `folds`
        gives -1 (never held out)."""
        folds = np.asarray(folds)
        trainable = np.ones(len(self.y), bool) if trainable is None else np.asarray(trainable)
        predicted = np.full(len(self.y), np.nan)
        for fold in set(folds[folds >= 0].tolist()):
            test = folds == fold
            predicted[test] = _predict_log(*self.fit(~test & trainable, params, rounds), self.x[test],
                                           self.precision[test])
        return np.exp(predicted + self.log_macs)

    def accuracy(self, folds, params: dict, rounds: int, by_rule: bool = False, trainable=None) -> dict:
        """Accuracy by kind ("cpu int8", "gpu fp16 concurrent") of boosters fitted with
        `params` for `rounds`, on held-out samples: `folds` gives each sample's fold (-1:
        never held out); each fold is predicted by boosters fitted on all other samples
        (of those `trainable` allows, a mask: to see how accuracy grows with the data).
        `by_rule`: also by the schedule form within each kind ("gpu fp16: dense")."""
        predicted = self.cross_predicted(folds, params, rounds, trainable)
        tested = ~np.isnan(predicted)
        rules = self.x[:, FEATURES.index("rule")]
        result = {}
        for form in self.precisions:
            for concurrent in (False, True):
                chosen = tested & (self.precision == form) & (self.concurrent == concurrent)
                groups = {_label(self.role, form, concurrent): chosen}
                if by_rule:
                    groups.update({f"{_label(self.role, form, concurrent)}: {self.rule_names[int(rule)]}":
                                   chosen & (rules == rule) for rule in sorted(set(rules[chosen]))})
                result.update({label: _accuracy(predicted[members], self.seconds[members])
                               for label, members in groups.items() if members.any()})
        return result


def training_samples(rows: list[dict], cpu, gpu) -> tuple:
    """(an untrained Predictor for `cpu` + `gpu` whose features the samples use, the kernel
    rows of `rows`, {role: KernelSamples}): what `train` fits and scores, and what
    scripts/tune_predictor.py cross-validates."""
    kernel_rows = [r for r in rows if r["kind"] in KERNEL_KINDS.values()]
    meta = {"cpu_target": cpu.target, "gpu_target": gpu.target, "gpu_async": gpu.device_type != "cpu",
            "gpu_label": gpu.label(), "cpu_label": cpu.label(), "accuracy": {}, "accuracy_whole_layers": {}, "devices": {},
            "cpu_threads": _threads([r for r in kernel_rows if r["role"] == "cpu"], cpu), "samples": {},
            "precisions": {},
            # the profiler times float32 kernels with compile-time weight repacks (profiles
            # made before slice precisions repacked in the kernel: retraining one of them
            # gives its float32 rows the rule choice of prepacked weights)
            "fp32_weights_prepacked": True}
    predictor = Predictor({}, {}, {}, meta)
    fastest = fastest_rows(kernel_rows)
    return predictor, kernel_rows, {role: KernelSamples(predictor, fastest, role) for role in ("cpu", "gpu")}


def train(rows: list[dict], cpu, gpu, *, holdout: float = 0.2, seed: int = 0) -> Predictor:
    """Fit per-processor boosters on profiler rows (kernel time per multiply-accumulate in
    log space, from features of the layer, its slice precision and its schedule, alone or
    with the other processor busy). Accuracy is measured on held-out layer shapes — a
    shape's measurements in every precision, alone and concurrent, are held out together —
    and reported per processor, precision and kind ("cpu int8", "gpu fp16 concurrent")."""
    predictor, kernel_rows, samples_by_role = training_samples(rows, cpu, gpu)
    meta = predictor.meta
    meta["repeatability"] = _repeatability(kernel_rows)
    params = dict(BOOSTER_PARAMS, seed=seed)
    for role, samples in samples_by_role.items():
        meta["accuracy"].update(samples.accuracy(samples.held_out(holdout, seed), params, BOOSTER_ROUNDS))
        # the same with every split part of a held-out layer held out too: what a network
        # never profiled gets (held-out shapes have their sibling parts in the training data)
        meta["accuracy_whole_layers"].update(samples.accuracy(samples.held_out(holdout, seed, whole_layers=True),
                                                              params, BOOSTER_ROUNDS))
        meta["devices"][role] = sorted({r["device"] for r in kernel_rows if r["role"] == role})
        meta["precisions"][role] = samples.precisions
        meta["samples"][role] = {form: {"alone": int(((samples.precision == form) & ~samples.concurrent).sum()),
                                        "concurrent": int(((samples.precision == form) & samples.concurrent).sum())}
                                 for form in samples.precisions}
        predictor.boosters[role], predictor.bases[role] = samples.fit(slice(None), params, BOOSTER_ROUNDS)
        for key, seconds in zip(samples.keys, samples.seconds):
            kind, _, config = key
            predictor.measured.setdefault(role, {}).setdefault(kind, {})[config] = seconds
    for direction in ("h2d", "d2h"):
        points = [(float(r["bytes"]), float(r["seconds"])) for r in rows if r["kind"] == "copy" and r["config"] == direction]
        if len(points) < 2:
            raise MulayerError(f"no {direction} copy measurements in the profile; profile with copies")
        predictor.copy_model[direction] = _line(points)
    conversions = {}
    for r in rows:
        if r["kind"] == "convert":
            conversions.setdefault((r["role"], r["config"]), []).append((float(r["bytes"]), float(r["seconds"])))
    for (role, dtype), points in conversions.items():
        if len({size for size, _ in points}) >= 2:
            predictor.convert_model.setdefault(role, {})[dtype] = _line(points)
    return predictor
