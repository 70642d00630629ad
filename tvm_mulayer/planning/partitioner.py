"""Partitioner: choose each layer's placement and ratio to minimise predicted latency.

It works on a light model of the network that mirrors what `SplitChannels` will do:
*nodes* are layers (conv/dense) and ops that need a whole tensor; per-channel ops and
channel concats only carry channel *provenance* (which node's channels [lo, hi) a tensor
holds), exactly the parts the split pass keeps in place. For a plan, `simulate` replays the
executor: one host thread runs CPU kernels and issues GPU kernels (asynchronous on a real
GPU, inline on the emulated one), and each copy waits for the data it moves. Copies
are charged only for the channels a consumer's device lacks. Kernel and copy times come
from a `Predictor` (a split layer's parts with the other processor busy); so do the
overheads besides them — GPU launches on the host thread, per-kernel costs, the pooling/
LRN/concat kernels that follow layers, per-copy costs — which `calibrate` fits to
whole-model runs of single-processor and mixed plans.

Precision: the plan's slices compute in the requested precision (`--precision`, native by
default: int8 CPU slices, fp16 GPU slices), so the kernel times are the predictor's for
that precision, copies into a slice carry its compact form (uint8 or float16, a quarter or
half of float32's bytes), and converting an input into that form (quantize, cast) is
charged on the processor holding the data, once per piece, before it is copied — as the
split pass does it. A predictor without data for a requested precision (one profiled in
float32 only) plans that processor with float32 predictions and says so in the plan's
description and through `log` (a warning by default).

Search: the best uniform ratio first (0 and 1 — both single-processor plans — included),
then coordinate descent over each layer's ratio, then *branch distribution*: for each
multi-branch module (Inception, Fire: branches from one input joined by a channel concat)
every assignment of whole branches to the two processors is tried, and kept where the
simulation says it is faster. `auto` is thus never predicted slower than the best single
processor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tvm import relax

from ..base.layers import Layer, layer_bindings, static_shape
from ..base.plan import round_rows, round_split
from ..passes.row_chains import layer_window

RATIOS = tuple(i / 8 for i in range(9))


@dataclass
class Node:
    index: int
    name: str  # layer name, or the op of a whole-tensor node
    layer: Layer | None
    inputs: list  # [(source node index or -1 for a model input, lo, hi, bytes_per_channel)]
    channels: int
    depth: int = 0
    # bytes per channel of each pooling/LRN/reduction/concat kernel run on this node's
    # channels, where they are (ops a layer's kernel does not absorb)
    followers: list = field(default_factory=list)


@dataclass
class Module:
    """A multi-branch module: `branches` are disjoint sets of layer names."""

    name: str
    branches: list


@dataclass
class LayerGraph:
    nodes: list
    outputs: list  # segments feeding the model outputs
    modules: list = field(default_factory=list)

    @property
    def layers(self) -> list:
        return [n for n in self.nodes if n.layer is not None]



def layer_graph(func: relax.Function) -> LayerGraph:
    """The node/provenance model of `func` (a `main` ready for SplitChannels)."""
    from ..passes.split_channels import (BINARY, CHANNEL_WINDOW_POOLS, PER_CHANNEL_UNARY, POOLS, REDUCTIONS,
                                        RESHAPING)

    layers = layer_bindings(func)
    nodes: list[Node] = []
    modules: list[Module] = []
    env: dict = {}  # var -> list of segments (src, lo, hi, bytes_per_channel)
    ancestors: dict = {}  # var -> frozenset of layer names it depends on

    def segments_of(expr):
        return env.get(expr, [])

    def whole_segments(node_index, expr):
        shape = static_shape(expr)
        if shape is None or len(shape) < 2:
            return []
        channels = shape[1]
        per = float(np.prod(shape)) * 4 / max(channels, 1)
        return [(node_index, 0, channels, per)]

    def rebytes(segments, expr):
        shape = static_shape(expr)
        if shape is None or len(shape) < 2:
            return segments
        channels = sum(hi - lo for _, lo, hi, _ in segments) or 1
        per = float(np.prod(shape)) * 4 / channels
        return [(s, lo, hi, per) for s, lo, hi, _ in segments]

    def follow(segments):
        for src, _, _, per in segments:
            if src >= 0:
                nodes[src].followers.append(per)

    for param in func.params:
        env[param] = whole_segments(-1, param)
        ancestors[param] = frozenset()
    for block in func.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            used = [v for v in relax.analysis.free_vars(value) if v in ancestors]
            deps = frozenset().union(*(ancestors[v] for v in used)) if used else frozenset()
            if isinstance(value, relax.Var):
                env[var], ancestors[var] = env.get(value, []), ancestors.get(value, frozenset())
                continue
            op_name = value.op.name if isinstance(value, relax.Call) and hasattr(value.op, "name") else ""
            first = value.args[0] if isinstance(value, relax.Call) and value.args else None
            if var in layers:
                layer = layers[var]
                inputs = segments_of(first)
                depth = 1 + max((nodes[s].depth for s, *_ in inputs if s >= 0), default=0)
                nodes.append(Node(len(nodes), layer.name, layer, inputs, layer.channels, depth))
                env[var] = whole_segments(len(nodes) - 1, var)
                ancestors[var] = deps | {layer.name}
            elif op_name == "relax.concat" and isinstance(first, relax.Tuple) and all(f in env for f in first.fields):
                parts = [seg for f in first.fields for seg in segments_of(f)]
                follow(parts)
                env[var] = rebytes(parts, var)
                ancestors[var] = deps
                fields = [ancestors[f] for f in first.fields]
                if len(fields) >= 2:
                    common = frozenset.intersection(*fields)
                    branches = [sorted(f - common) for f in fields]
                    flat = [name for b in branches for name in b]
                    if all(branches) and len(flat) == len(set(flat)):
                        modules.append(Module(f"{len(branches)} branches from {branches[0][0]}", branches))
            elif first in env and (op_name in PER_CHANNEL_UNARY or op_name in POOLS or op_name in BINARY
                                   or op_name in RESHAPING or op_name in CHANNEL_WINDOW_POOLS
                                   or (op_name in REDUCTIONS and value.attrs.axis is not None
                                       and 1 not in {int(a) % len(static_shape(first)) for a in value.attrs.axis})):
                if op_name in POOLS or op_name in CHANNEL_WINDOW_POOLS or op_name in REDUCTIONS:
                    follow(segments_of(first))
                env[var] = rebytes(segments_of(first), var)
                ancestors[var] = deps
            else:
                inputs = [seg for v in used for seg in segments_of(v)]
                depth = 1 + max((nodes[s].depth for s, *_ in inputs if s >= 0), default=0)
                shape = static_shape(var)
                nodes.append(Node(len(nodes), op_name or type(value).__name__, None, inputs,
                                  shape[1] if shape and len(shape) >= 2 else 0, depth))
                env[var] = whole_segments(len(nodes) - 1, var)
                ancestors[var] = deps
        outputs = []
        for out in (func.body.body.fields if isinstance(func.body.body, relax.Tuple) else [func.body.body]):
            outputs += segments_of(out)
    return LayerGraph(nodes, outputs, modules)


@dataclass
class Event:
    """One bar of the timeline: what ran where, from when to when (seconds)."""

    lane: str  # "cpu", "gpu", "copy"
    label: str
    start: float
    end: float
    nbytes: float = 0.0  # for copies: bytes moved (to the layer named by label)
    chain: str = ""  # the operator chain of a height-split layer's part


FLOAT32_SLICES = {"cpu": "fp32", "gpu": "fp32"}
WHOLE = (0.0, 1.0)  # all rows of a tensor, as fractions of its height
# the dtype a slice of each precision reads its input in (float32 needs no conversion)
SLICE_INPUT_DTYPE = {"int8": "uint8", "fp16": "float16", "fp32": "float32"}
DTYPE_BYTES = {"uint8": 1, "float16": 2, "float32": 4}


def planned_precision(predictor, requested: dict) -> tuple[dict, list]:
    """(role -> the precision the partitioner predicts each processor's slices in, notes):
    the requested one where the predictor was profiled in it, else float32, with a note
    saying so (and one where conversions into the requested form were not profiled)."""
    used, notes = {}, []
    for role in ("cpu", "gpu"):
        wanted = requested.get(role, "fp32")
        if wanted in predictor.precisions(role):
            used[role] = wanted
            dtype = SLICE_INPUT_DTYPE[wanted]
            missing = [side for side in ("cpu", "gpu") if dtype != "float32" and not predictor.has_conversion(side, dtype)]
            if missing:
                notes.append(f"the predictor has no {dtype} conversion timings on the {' and '.join(missing)}: "
                             "conversions into the slices' form are not charged")
        else:
            used[role] = "fp32"
            notes.append(f"the predictor has no {wanted} {role.upper()} kernel timings (profiled in "
                         f"{', '.join(predictor.precisions(role))}): {role.upper()} slices planned with fp32 "
                         f"predictions; profile with `mulayer profile --precision` and retrain for {wanted}")
    return used, notes


class KernelTimes:
    """Predicted kernel seconds of every candidate part of every layer, alone and with the
    other processor busy (a split layer's parts run at the same time), in one batch, with
    each processor's slices in `precision` (role -> precision; the split pass runs layers it
    cannot divide whole in float32)."""

    def __init__(self, graph: LayerGraph, predictor, channel_multiple: int, ratios=RATIOS, include: dict | None = None,
                 precision: dict | None = None, row_splits: bool = False):
        self.precision = dict(precision or FLOAT32_SLICES)
        self.layers = {node.name: node.layer for node in graph.layers}
        self.row_grid: dict = {}  # layer name -> the row counts predicted (see row_time)
        self.choices: dict = {}  # layer name -> sorted candidate GPU channel counts
        wanted = {"cpu": {}, "gpu": {}}
        for node in graph.layers:
            layer = node.layer
            options = sorted({round_split(layer, r, channel_multiple) for r in ratios}) if layer.splittable \
                else [0, layer.channels]
            if include and layer.name in include:  # a given plan's parts (to simulate that plan)
                options = sorted({*options, include[layer.name]})
            self.choices[layer.name] = options
            for k in options:
                if k > 0:
                    wanted["gpu"][(layer.name, k)] = layer.part(k) if layer.splittable else layer
                if k < layer.channels:
                    wanted["cpu"][(layer.name, layer.channels - k)] = layer.part(layer.channels - k) if layer.splittable else layer
            if row_splits and RowSplitter.splits(layer):
                self.row_grid[layer.name] = _row_grid(layer, ratios)
                for rows in self.row_grid[layer.name]:
                    for role in wanted:
                        wanted[role][(layer.name, "rows", rows)] = layer.row_part(rows)
        self.seconds = {}
        whole = {node.layer.name for node in graph.layers if not node.layer.splittable}
        for role, parts in wanted.items():
            by_precision: dict = {}
            for key in parts:
                by_precision.setdefault("fp32" if key[0] in whole else self.precision[role], []).append(key)
            for precision, keys in by_precision.items():
                for concurrent in (False, True):
                    for key, value in zip(keys, predictor.kernel_times([parts[k] for k in keys], role, concurrent,
                                                                       precision)):
                        self.seconds[(role, *key, concurrent)] = float(value)

    def slice_precision(self, role: str, layer: Layer) -> str:
        """The precision `role`'s slice of `layer` computes in (float32 for a layer the
        split pass runs whole)."""
        return self.precision[role] if layer.splittable else "fp32"

    def time(self, role: str, name: str, channels: int, concurrent: bool = False) -> float:
        return self.seconds[(role, name, channels, concurrent)] if channels > 0 else 0.0

    def row_time(self, role: str, name: str, rows: int, concurrent: bool = False) -> float:
        """Predicted seconds of `role`'s slice of layer `name` computing `rows` output rows (a
        height split's part, its halo included): predicted at the grid of row counts the
        ratios give (one batch, as every prediction here: a call costs far more than a row),
        linear between them — a conv's time grows with its rows, and a chain's halos make
        any count."""
        if rows <= 0:
            return 0.0
        grid = self.row_grid[name]
        above = next((g for g in grid if g >= rows), grid[-1])
        below = max((g for g in grid if g < above), default=0)
        at = lambda g: self.seconds[(role, name, "rows", g, concurrent)] if g else 0.0  # noqa: E731
        return at(below) + (at(above) - at(below)) * (rows - below) / (above - below)


def _row_grid(layer: Layer, ratios) -> list:
    """The output row counts of `layer`'s row parts at `ratios` (ascending, all rows last)."""
    rows = int(layer.output_shape[2])
    return sorted({round_rows(rows, r) for r in ratios if r > 0} | {rows})


@dataclass(frozen=True)
class RowSplit:
    """A height-split layer of a candidate plan: the GPU computes output rows [0, gpu_rows),
    the CPU the rest, and each `halo` (GPU, CPU) rows more for later members of `chain`,
    inside which nothing crosses."""

    gpu_rows: int
    halo: tuple = (0, 0)
    chain: str = ""

    def computed(self, layer: Layer) -> dict:
        """device (0 CPU, 1 GPU) -> output rows it computes, its halo included."""
        rows = int(layer.output_shape[2])
        return {1: self.gpu_rows + self.halo[0] if self.gpu_rows else 0,
                0: rows - self.gpu_rows + self.halo[1] if self.gpu_rows < rows else 0}

    def input_span(self, layer: Layer, device: int) -> tuple:
        """The input rows `device`'s part reads, as fractions [a, b) of the input height."""
        rows = self.computed(layer)[device]
        lo = 0 if device else int(layer.output_shape[2]) - rows
        first, end, _, _ = layer_window(layer).input_rows(lo, lo + rows)
        height = int(layer.input_shape[2])
        return first / height, end / height


def simulate(graph: LayerGraph, gpu_channels: dict, times: KernelTimes, predictor, timeline: bool = False,
             overheads: dict | None = None, rows: dict | None = None):
    """Predicted latency (s) of running `graph` with `gpu_channels` per layer, or by output
    rows for the layers in `rows` (name -> RowSplit); with `timeline`, also the list of
    Events. A height-split part reads the input rows its window needs (copying those the
    other processor holds), except from an earlier member of its chain, whose rows (halo
    included) are already its own; tensors hold channels, rows or the whole tensor per
    processor, so a consumer copies only what its processor lacks. `overheads` (default: the predictor's) charges
    what runs besides layer kernels: each GPU kernel costs the host `gpu_launch` to issue
    and the GPU `gpu_call` besides its compute, each CPU kernel `cpu_call`; the pooling/LRN/
    concat kernels after a layer (its `followers`) and whole-tensor ops cost per byte on
    their processor (`gpu_byte`, `cpu_byte`); each copy costs the host `copy_call` besides
    the profiled transfer (allocation, synchronisation); `base` is paid once per inference;
    `cpu_scale`/`gpu_scale` multiply the profiled layer kernel times (a whole model runs
    them with cold caches, between other kernels)."""
    asynchronous = predictor.gpu_async
    cost = predictor.overheads if overheads is None else overheads
    host = cost["base"]
    gpu = 0.0
    rows = rows or {}
    ready = {}  # (node, device) -> time its part is available there; device 0 cpu, 1 gpu
    # node -> (k, whole_on, gpu_share): the GPU holds channels [0, k) and the CPU the rest,
    # or the whole tensor is on device whole_on, or (height splits) the GPU holds the first
    # gpu_share of its rows and the CPU the rest
    placement = {}
    chain_of = {}  # node -> its chain (height-split layers in chains)
    events = []

    def held_on(src, lo, hi, device, span=WHOLE):
        """Channels of [lo, hi) of src, within the rows `span` (fractions of the height),
        that live on device (a fraction of a channel where only some of its rows do)."""
        a, b = span
        if src < 0:
            return (hi - lo) * (b - a) if device == 0 else 0
        k, whole_on, gpu_share = placement.get(src, (0, None, None))
        if gpu_share is not None:
            on_gpu = max(0.0, min(b, gpu_share) - a)
            return (hi - lo) * (on_gpu if device == 1 else (b - a) - on_gpu)
        if whole_on is not None:
            return (hi - lo) * (b - a) if device == whole_on else 0
        on_gpu = max(0, min(hi, k) - lo)
        return (on_gpu if device == 1 else (hi - lo) - on_gpu) * (b - a)

    copied = {}  # (src, lo, hi, device, dtype) -> arrival: like the split pass, each copy is made once
    converted = {}  # (src, lo, hi, holder, dtype) -> when the converted piece is ready on holder

    def convert(src, lo, hi, per, holder, dtype, label, span=WHOLE):
        """When channels [lo, hi) of src that `holder` has are ready there in `dtype`: the
        split pass converts each piece once, on the device holding it, before any copy."""
        key = (src, lo, hi, holder, dtype, span)
        if key not in converted:
            role = "gpu" if holder else "cpu"
            seconds = predictor.convert_time(held_on(src, lo, hi, holder, span) * per, role, dtype) + cost[f"{role}_call"]
            converted[key] = run(holder, f"{label} input to {dtype}", seconds, 1, ready.get((src, holder), 0.0))
        return converted[key]

    def local(src, lo, hi, per, device, dtype, label, span):
        return ready.get((src, device), 0.0) if dtype == "float32" \
            else convert(src, lo, hi, per, device, dtype, label, span)

    def bring(segments, device, label, dtype="float32", span=WHOLE, chain=""):
        """Copy the channels (within the rows `span`) of `segments` that `device` lacks, in
        `dtype` (converted first where they are), except from members of `chain`; returns
        when all are there."""
        nonlocal host
        arrival = 0.0
        scale = DTYPE_BYTES[dtype] / 4  # segments count float32 bytes per channel
        for src, lo, hi, per in segments:
            if chain and chain_of.get(src) == chain:
                arrival = max(arrival, local(src, lo, hi, per, device, dtype, label, span))
                continue
            missing = held_on(src, lo, hi, 1 - device, span)
            key = (src, lo, hi, device, dtype, span)
            if missing and key in copied:
                arrival = max(arrival, copied[key])
            elif missing:
                source_ready = local(src, lo, hi, per, 1 - device, dtype, label, span)
                direction = "h2d" if device == 1 else "d2h"
                start = max(host, source_ready, gpu if asynchronous else 0.0)  # a copy drains the GPU queue
                host = start + cost["copy_call"] + predictor.copy_time(missing * per * scale, direction)
                if timeline:
                    events.append(Event("copy", label, start, host, missing * per * scale))
                copied[key] = host
                arrival = max(arrival, host)
            if held_on(src, lo, hi, device, span):
                arrival = max(arrival, local(src, lo, hi, per, device, dtype, label, span))
        return arrival

    def extra(node: Node, channels: int, device: int, own_bytes: float = 0.0) -> tuple:
        """(kernels, seconds) of a node's part besides its compute: its followers, per call
        and per byte on `device`."""
        name = "gpu" if device else "cpu"
        nbytes = own_bytes + sum(per * channels for per in node.followers)
        kernels = 1 + len(node.followers)
        return kernels, kernels * cost[f"{name}_call"] + nbytes * cost[f"{name}_byte"]

    def run_gpu(label, seconds, kernels, inputs_ready, chain=""):
        nonlocal host, gpu
        issued = host + cost["gpu_launch"]  # the first kernel can start once issued
        host += cost["gpu_launch"] * kernels
        start = max(gpu, issued, inputs_ready)
        gpu = max(start + seconds, host)
        if not asynchronous:
            host = gpu
        if timeline:
            events.append(Event("gpu", label, start, gpu, chain=chain))
        return gpu

    def run_cpu(label, seconds, inputs_ready, chain=""):
        nonlocal host
        start = max(host, inputs_ready)
        host = start + seconds
        if timeline:
            events.append(Event("cpu", label, start, host, chain=chain))
        return host

    def run(device, label, seconds, kernels, inputs_ready, chain=""):
        return run_gpu(label, seconds, kernels, inputs_ready, chain) if device \
            else run_cpu(label, seconds, inputs_ready, chain)

    # Like OrderForOverlap, each step (nodes of one depth) first makes its copies, then
    # queues its GPU kernels, then runs its CPU kernels.
    for depth in sorted({n.depth for n in graph.nodes}):
        step = [n for n in graph.nodes if n.depth == depth]
        arrivals, parts = {}, []
        for node in step:
            if node.layer is None:  # whole-tensor op: on the side holding most of its input
                on_gpu = sum(held_on(s, lo, hi, 1) * per for s, lo, hi, per in node.inputs)
                on_cpu = sum(held_on(s, lo, hi, 0) * per for s, lo, hi, per in node.inputs)
                device = 1 if on_gpu > on_cpu else 0
                inputs_ready = bring(node.inputs, device, node.name)
                placement[node.index] = (0, device, None)
                kernels, seconds = extra(node, node.channels, device, sum((hi - lo) * per for _, lo, hi, per in node.inputs))
                ready[(node.index, device)] = run(device, node.name, seconds, kernels, inputs_ready)
                continue
            if node.name in rows:
                split_rows = rows[node.name]
                layer = node.layer
                placement[node.index] = (0, None, split_rows.gpu_rows / int(layer.output_shape[2]))
                chain_of[node.index] = split_rows.chain
                computed = split_rows.computed(layer)
                for device, count in computed.items():
                    if count:
                        role = "gpu" if device else "cpu"
                        dtype = SLICE_INPUT_DTYPE[times.slice_precision(role, layer)]
                        arrivals[(node.index, device)] = bring(node.inputs, device, node.name, dtype,
                                                               split_rows.input_span(layer, device), split_rows.chain)
                        kernels, seconds = extra(node, layer.channels * count / int(layer.output_shape[2]), device)
                        compute = times.row_time(role, node.name, count, all(computed.values())) * cost[f"{role}_scale"]
                        parts.append((device, node, compute + seconds, kernels, split_rows.chain))
                continue
            k = gpu_channels.get(node.name, 0)
            placement[node.index] = (k, None, None)
            split = 0 < k < node.layer.channels
            for device, channels, lo, hi in ((1, k, 0, k), (0, node.layer.channels - k, k, node.layer.channels)):
                if channels:
                    role = "gpu" if device else "cpu"
                    dtype = SLICE_INPUT_DTYPE[times.slice_precision(role, node.layer)]
                    arrivals[(node.index, device)] = bring(_needed_inputs(node, lo, hi), device, node.name, dtype)
                    kernels, seconds = extra(node, channels, device)
                    compute = times.time(role, node.name, channels, split) * cost[f"{role}_scale"]
                    parts.append((device, node, compute + seconds, kernels, ""))
        for device, node, seconds, kernels, chain in sorted(parts, key=lambda part: -part[0]):  # GPU parts first
            ready[(node.index, device)] = run(device, node.name, seconds, kernels, arrivals[(node.index, device)], chain)
    end = bring(graph.outputs, 0, "output")
    latency = max(end, host)
    return (latency, events) if timeline else latency


def _needed_inputs(node: Node, lo: int, hi: int) -> list:
    """Input segments a part computing output channels [lo, hi) reads (grouped convs read
    only their groups' input channels)."""
    layer = node.layer
    if layer.groups <= 1 or not layer.splittable:
        return node.inputs
    per_group_in = layer.input_shape[1] // layer.groups
    first, last = lo // layer.channels_per_unit * per_group_in, hi // layer.channels_per_unit * per_group_in
    out, offset = [], 0
    for src, s_lo, s_hi, per in node.inputs:
        a, b = max(first, offset), min(last, offset + s_hi - s_lo)
        if a < b:
            out.append((src, s_lo + a - offset, s_lo + b - offset, per))
        offset += s_hi - s_lo
    return out


# starting values (and scales) of the overheads the calibration fits; factors start at 1
OVERHEAD_SCALES = {"gpu_launch": 1e-5, "gpu_call": 1e-6, "cpu_call": 1e-5, "gpu_byte": 1e-12, "cpu_byte": 1e-10,
                   "copy_call": 1e-5, "base": 1e-4}
FACTORS = ("cpu_scale", "gpu_scale")


def whole_model_runs(paths, channel_multiple: int) -> list:
    """Whole-model latencies measured by `scripts/gpu_host_run.py` (results.json files) as
    dicts model/graph/gpu_channels/seconds; a run's plan is its recorded `gpu_channels`,
    else rebuilt from its split (cpu, gpu or a global ratio)."""
    import json
    from pathlib import Path

    from ..base import zoo
    from ..compiler.frontend import import_onnx

    graphs, runs = {}, []
    for path in paths:
        for row in json.loads(Path(path).read_text())["runs"]:
            name = row["model"].removesuffix("-small")
            if name not in graphs:
                kwargs = zoo.small(name) if row["model"].endswith("-small") else {}
                graphs[name] = layer_graph(import_onnx(zoo.build(name, **kwargs))[0]["main"])
            graph = graphs[name]
            if row.get("dims"):
                continue  # a plan with row splits: its rows and chains are not recorded in the row
            if "gpu_channels" in row:
                channels = row["gpu_channels"]
            elif row["split"] in ("cpu", "gpu") or isinstance(row["split"], (int, float)):
                ratio = {"cpu": 0.0, "gpu": 1.0}.get(row["split"], row["split"])
                channels = {n.name: round_split(n.layer, ratio, channel_multiple) if n.layer.splittable
                            else (n.layer.channels if ratio >= 0.5 else 0) for n in graph.layers}
            else:
                continue  # an auto plan that was not recorded
            runs.append({"model": row["model"], "split": row["split"], "graph": graph, "gpu_channels": channels,
                         "seconds": row["median_ms"] / 1e3, "precision": row.get("precision") or "fp32"})
    return runs


def calibrate(predictor, runs: list, channel_multiple: int) -> dict:
    """Fit the predictor's overheads (see `simulate`) to measured whole-model `runs`
    (`whole_model_runs`), minimising the squared log error of the simulated latencies, and
    store them in its meta. Returns a report: per run, the latency simulated with kernel
    times alone, with the fitted overheads, and with overheads fitted without that model's
    runs (leave one model out: what calibration does for a model it has not seen)."""
    from scipy.optimize import minimize

    names = list(OVERHEAD_SCALES)
    from ..base.quantization import parse_precision

    # each run simulated in its own precision where the predictor has it (float32 otherwise)
    times = [KernelTimes(run["graph"], predictor, channel_multiple, include=run["gpu_channels"],
                         precision=planned_precision(predictor, parse_precision(run.get("precision", "fp32")))[0])
             for run in runs]

    def overheads(u):  # u: square roots of the overheads in their scales, then log factors
        values = {name: OVERHEAD_SCALES[name] * float(v) ** 2 for name, v in zip(names, u)}
        return {**values, **{name: math.exp(float(v)) for name, v in zip(FACTORS, u[len(names):])}}

    start = np.concatenate([np.ones(len(names)), np.zeros(len(FACTORS))])
    bare = np.concatenate([np.zeros(len(names)), np.zeros(len(FACTORS))])

    def simulated(u, which):
        return np.array([simulate(runs[i]["graph"], runs[i]["gpu_channels"], times[i], predictor, overheads=overheads(u))
                         for i in which])

    def fit(which):
        measured = np.log([runs[i]["seconds"] for i in which])
        loss = lambda u: float(np.sum((np.log(simulated(u, which)) - measured) ** 2))  # noqa: E731
        return minimize(loss, start, method="Nelder-Mead",
                        options={"maxiter": 3000, "xatol": 1e-3, "fatol": 1e-6}).x

    everything = list(range(len(runs)))
    best = fit(everything)
    report = []
    for model in dict.fromkeys(run["model"] for run in runs):
        mine = [i for i in everything if runs[i]["model"] == model]
        others = [i for i in everything if runs[i]["model"] != model]
        unseen = simulated(fit(others), mine) if others else [math.nan] * len(mine)
        for i, held in zip(mine, unseen):
            report.append({"model": model, "split": runs[i]["split"], "measured_ms": runs[i]["seconds"] * 1e3,
                           "kernels_only_ms": float(simulated(bare, [i])[0]) * 1e3,
                           "calibrated_ms": float(simulated(best, [i])[0]) * 1e3,
                           "model_held_out_ms": float(held) * 1e3})
    predictor.meta["overheads"] = overheads(best)
    predictor.meta["calibration"] = report
    return report


@dataclass
class Choice:
    """The partitioner's answer: GPU channels per layer, the predicted latency, and why."""

    gpu_channels: dict
    latency: float
    single: dict  # "cpu"/"gpu" -> predicted latency of the single-processor plans
    distributed: list  # names of modules placed by branch distribution
    times: KernelTimes  # the predicted kernel times the search used
    notes: list = field(default_factory=list)  # where the predictions differ from the request (precision)
    rows: dict = field(default_factory=dict)  # height-split layers: name -> RowSplit
    chains: list = field(default_factory=list)  # the chains of height-split layers: ([names], ratio)


def partition(graph: LayerGraph, predictor, channel_multiple: int, ratios=RATIOS, sweeps: int = 3,
              precision: dict | None = None, row_splitter: "RowSplitter | None" = None) -> Choice:
    """Search the plan of least simulated latency (see the module docstring) with slices in
    `precision` (role -> precision; default float32), or float32 where the predictor has no
    data for it (`Choice.notes` says so); with a `row_splitter`, then also height splits
    in chains (`chain_search`)."""
    used, notes = planned_precision(predictor, precision or FLOAT32_SLICES)
    times = KernelTimes(graph, predictor, channel_multiple, ratios, precision=used, row_splits=row_splitter is not None)
    layers = {n.name: n.layer for n in graph.layers}

    def uniform(ratio):
        return {name: (round_split(l, ratio, channel_multiple) if l.splittable else (l.channels if ratio >= 0.5 else 0))
                for name, l in layers.items()}

    single = {"cpu": simulate(graph, uniform(0.0), times, predictor), "gpu": simulate(graph, uniform(1.0), times, predictor)}
    best, best_time = min(((uniform(r), simulate(graph, uniform(r), times, predictor)) for r in ratios),
                          key=lambda pair: pair[1])
    for _ in range(sweeps):
        improved = False
        for name in layers:
            for k in times.choices[name]:
                if k == best[name]:
                    continue
                trial = dict(best, **{name: k})
                latency = simulate(graph, trial, times, predictor)
                if latency < best_time * (1 - 1e-9):
                    best, best_time, improved = trial, latency, True
        if not improved:
            break
    for module in graph.modules:
        for mask in range(2 ** len(module.branches)):
            trial = dict(best)
            for index, branch in enumerate(module.branches):
                for name in branch:
                    trial[name] = layers[name].channels if mask >> index & 1 else 0
            latency = simulate(graph, trial, times, predictor)
            if latency < best_time * (1 - 1e-9):
                best, best_time = trial, latency
    # A module is distributed when each branch runs whole on one processor and both are used
    # (whichever stage of the search got there).
    rows, chains = {}, []
    if row_splitter is not None:
        rows, chains, best_time = chain_search(graph, best, best_time, times, predictor, row_splitter, ratios)
    distributed = [m.name for m in graph.modules if _distributed(m, best, layers)
                   and not any(name in rows for branch in m.branches for name in branch)]
    return Choice(best, best_time, single, distributed, times, notes, rows, chains)


class RowSplitter:
    """The RowSplits of one chain of height-split layers at one ratio, from the split pass's
    own chain analysis of `func` (a chain's halos depend on its members alone, so each
    chain is analysed once)."""

    def __init__(self, func, channel_multiple: int):
        from ..base.layers import find_layers
        from ..passes.split_channels import ChainRecorder

        self.record = ChainRecorder(func)
        self.layers = find_layers(func)
        self.channel_multiple = channel_multiple
        self.analysed: dict = {}

    @staticmethod
    def splits(layer: Layer) -> bool:
        """Whether `layer` can split by output rows (a conv with rows to divide)."""
        return layer.splittable and layer.op == "conv2d" and int(layer.output_shape[2]) > 1

    def chain(self, names: tuple, ratio: float) -> dict:
        """name -> RowSplit of the layers `names` chained at `ratio`."""
        from ..base.plan import make_plan

        key = (names, ratio)
        if key not in self.analysed:
            plan = make_plan(self.layers, {"default_ratio": 0.0, "chains": [list(names)],
                                           "layers": {n: {"dim": "height", "ratio": ratio} for n in names}},
                             self.channel_multiple)
            self.record(plan)
            self.analysed[key] = {n: RowSplit(plan[n].gpu_rows, tuple(plan[n].halo_rows),
                                              f"{names[0]}/{plan[n].chain}" if plan[n].chain else "") for n in names}
        return self.analysed[key]

    @staticmethod
    def alone(layer: Layer, ratio: float) -> RowSplit:
        """A layer split by rows on its own, without halo (a chain's head before the chain
        analysis confirms it)."""
        return RowSplit(round_rows(int(layer.output_shape[2]), ratio), (0, 0), layer.name)


def chain_search(graph: LayerGraph, gpu_channels: dict, best_time: float, times: KernelTimes, predictor,
                 splitter: RowSplitter, ratios=RATIOS) -> tuple:
    """CoDL's chain search (its Algorithm 1), greedy over the layers in order: a layer that
    can split by rows heads a chain at the ratio where its row split alone is predicted
    fastest, if that beats the plan so far; the chain then takes the layer reading only its
    last member while the predicted latency keeps falling (halos, computed by both
    processors, grow with every member; nothing crosses inside). Layers left out keep their
    channel plan. Returns (name -> RowSplit, [(chain's layer names, ratio)], latency)."""
    tall = {n.name for n in graph.layers if splitter.splits(n.layer)}
    readers: dict = {}
    for node in graph.layers:
        for src in {s for s, *_ in node.inputs}:
            readers.setdefault(src, []).append(node)

    def successor(node):
        return next((r for r in readers.get(node.index, []) if r.name in tall
                     and {s for s, *_ in r.inputs} == {node.index}), None)

    rows, chains = {}, []

    def latency(extra: dict) -> float:
        return simulate(graph, gpu_channels, times, predictor, rows={**rows, **extra})

    for node in graph.layers:
        if node.name not in tall or node.name in rows:
            continue
        head_time, ratio = min((latency({node.name: splitter.alone(node.layer, r)}), r) for r in ratios if 0 < r < 1)
        if head_time >= best_time * (1 - 1e-9):
            continue
        chain, members = [node.name], splitter.chain((node.name,), ratio)
        chain_time = latency(members)
        if chain_time >= best_time * (1 - 1e-9):
            continue
        follower = successor(node)
        while follower is not None and follower.name not in rows:
            longer = splitter.chain((*chain, follower.name), ratio)
            longer_time = latency(longer)
            if longer_time >= chain_time * (1 - 1e-9):
                break
            chain, members, chain_time = [*chain, follower.name], longer, longer_time
            follower = successor(follower)
        rows.update(members)
        chains.append((chain, ratio))
        best_time = chain_time
    return rows, chains, best_time


def _distributed(module: Module, gpu_channels: dict, layers: dict) -> bool:
    sides = set()
    for branch in module.branches:
        branch_sides = {"gpu" if gpu_channels[n] == layers[n].channels else "cpu" if gpu_channels[n] == 0 else "split"
                        for n in branch}
        if len(branch_sides) != 1 or "split" in branch_sides:
            return False
        sides |= branch_sides
    return sides == {"cpu", "gpu"}


def default_predictor(cpu, gpu):
    """The shipped predictor measured on exactly these processors (`--split auto` measures
    processors without one: `predictor_cache.measured_predictor`)."""
    from ..base.errors import MulayerError
    from .predictor_cache import shipped_predictor

    predictor = shipped_predictor(cpu, gpu)
    if predictor is not None:
        return predictor
    raise MulayerError(f"no latency predictor for CPU {cpu.label()} {cpu.target} + GPU {gpu.label()}; "
                       "measure these processors with `mulayer profile` and `mulayer train`, then pass "
                       "--predictor FILE")


DIMS = ("channel", "height")


def auto_plan(func, cpu, gpu, predictor=None, sources=None, channel_multiple: int = 8, precision=None, log=None,
              dims=DIMS):
    """(Plan chosen by the partitioner, its Choice, the layer graph, the predictor) for
    `func`, the imported `main`, with slices in `precision` (a mode or overrides as
    `--precision` takes them, or a role -> precision dict; default native), splitting
    layers along `dims` ("channel", and "height" for CoDL's row splits in chains). Where the
    predictor has no data for that precision the plan is made with float32 predictions:
    `log` (default: a warning) and the plan's description say so."""
    import warnings

    from ..base.errors import MulayerError
    from ..base.layers import find_layers
    from ..base.plan import make_plan
    from .predictor import Predictor
    from ..base.quantization import parse_precision

    requested = parse_precision(precision)
    if predictor is None:
        from .predictor_cache import measured_predictor, shipped_predictor

        predictor = shipped_predictor(cpu, gpu) or measured_predictor(find_layers(func), cpu, gpu, channel_multiple,
                                                                            requested, log)
    elif not isinstance(predictor, Predictor):
        predictor = Predictor.load(predictor)
    predictor.check_processors(cpu, gpu)
    graph = layer_graph(func)
    unknown = set(dims) - set(DIMS)
    if "channel" not in dims or unknown:
        raise MulayerError(f"split dims {list(dims)}: give \"channel\", or \"channel\" and \"height\" "
                           "(a plan splits layers by output channels, and convs also by output rows)")
    splitter = RowSplitter(func, channel_multiple) if "height" in dims else None
    choice = partition(graph, predictor, channel_multiple, precision=requested, row_splitter=splitter)
    if choice.notes:  # once per plan, every gap in one message
        message = "--split auto: " + "; ".join(choice.notes)
        if log:
            log(f"warning: {message}")
        else:
            warnings.warn(message, stacklevel=2)
    layers = find_layers(func)
    channels = {layer.name: layer.channels for layer in layers}
    description = (f"auto: predicted {choice.latency * 1e3:.3f} ms (cpu only {choice.single['cpu'] * 1e3:.3f} ms, "
                   f"gpu only {choice.single['gpu'] * 1e3:.3f} ms; kernels predicted in cpu "
                   f"{choice.times.precision['cpu']}, gpu {choice.times.precision['gpu']})")
    if choice.distributed:
        description += f"; branch distribution in {len(choice.distributed)} module(s)"
    if choice.chains:
        description += (f"; {len(choice.rows)} layer(s) split by rows in {len(choice.chains)} chain(s)")
    if choice.notes:
        description += "; " + "; ".join(choice.notes)
    ratio_of = {name: ratio for chain, ratio in choice.chains for name in chain}
    spec = {"description": description, "chains": [chain for chain, _ in choice.chains],
            "layers": {name: {"dim": "height", "ratio": ratio_of[name]} if name in ratio_of
                       else {"gpu_channels": k, "ratio": k / channels[name]} for name, k in choice.gpu_channels.items()}}
    plan = make_plan(layers, spec, channel_multiple, sources or {})
    if splitter is not None:
        splitter.record(plan)
    branch_of = {name: module.name for module in graph.modules if module.name in choice.distributed
                 for branch in module.branches for name in branch}
    for layer_plan in plan.layers:
        if layer_plan.name in branch_of:
            layer_plan.note = f"branch distribution ({branch_of[layer_plan.name]})"
    return plan, choice, graph, predictor
