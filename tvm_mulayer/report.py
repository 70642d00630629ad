"""The per-layer plan table printed by `mulayer compile/run`."""

from __future__ import annotations

from .plan import Plan
from .processors import Processor


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def plan_table(plan: Plan, cpu: Processor, gpu: Processor) -> str:
    rows = [("layer", "onnx node", "op", "input -> output", "placement", "ratio", "gpu ch", "cpu ch", "note")]
    for lp in plan.layers:
        ratio = f"{lp.ratio:.2f}"
        if abs(lp.effective_ratio - lp.ratio) > 1e-9:
            ratio += f"->{lp.effective_ratio:.2f}"
        rows.append((lp.name, lp.source or "-", lp.op, f"{_shape(lp.input_shape)} -> {_shape(lp.output_shape)}",
                     lp.placement, ratio, str(lp.gpu_channels), str(lp.channels - lp.gpu_channels), lp.note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"CPU: {cpu.label()}   GPU: {gpu.label()}   plan: {plan.description}"]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    counts = {p: sum(1 for lp in plan.layers if lp.placement == p) for p in ("gpu", "split", "cpu")}
    lines.append(f"{len(plan.layers)} layers: {counts['split']} split, {counts['gpu']} whole on the GPU, "
                 f"{counts['cpu']} whole on the CPU")
    return "\n".join(lines)
