"""The per-layer plan table printed by `mulayer compile/run`."""

from __future__ import annotations

from ..base.plan import Plan
from ..base.processors import Processor


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _render(rows: list, cpu: Processor, gpu: Processor, plan: Plan) -> list:
    """A header naming the processors and plan, then `rows` (the first is the heading) as
    aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"CPU: {cpu.label()}   GPU: {gpu.label()}   plan: {plan.description}"]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def _precisions(lp) -> str:
    """The data type of each slice present, GPU/CPU ("-" where a processor has none)."""
    return "/".join(lp.precision(p) if lp.on(p) else "-" for p in ("gpu", "cpu"))


def _shares(lp) -> tuple[str, str]:
    """What each processor computes: output channels, or output rows of a height split
    ("r" and the rows; "+N": halo rows it computes too, for the chain's next layers)."""
    if lp.dim != "height":
        return str(lp.gpu_channels), str(lp.channels - lp.gpu_channels)
    own = {"gpu": lp.gpu_rows, "cpu": lp.rows - lp.gpu_rows}
    return tuple(f"r{own[p]}" + (f"+{extra}" if extra else "") if lp.on(p) else "-"
                 for p, extra in zip(("gpu", "cpu"), lp.halo_rows))


def plan_table(plan: Plan, cpu: Processor, gpu: Processor, crossing: dict | None = None) -> str:
    """The plan per layer; `crossing` (see build.crossing_bytes) adds the bytes copied
    between the processors per inference."""
    rows = [("layer", "onnx node", "op", "input -> output", "placement", "dim", "chain", "ratio", "gpu part",
             "cpu part", "gpu/cpu dtype", "note")]
    for lp in plan.layers:
        ratio = f"{lp.ratio:.2f}"
        if abs(lp.effective_ratio - lp.ratio) > 1e-9:
            ratio += f"->{lp.effective_ratio:.2f}"
        rows.append((lp.name, lp.source or "-", lp.op, f"{_shape(lp.input_shape)} -> {_shape(lp.output_shape)}",
                     lp.placement, lp.dim, lp.chain or "-", ratio, *_shares(lp), _precisions(lp), lp.note))
    lines = _render(rows, cpu, gpu, plan)
    counts = {p: sum(1 for lp in plan.layers if lp.placement == p) for p in ("gpu", "split", "cpu")}
    lines.append(f"{len(plan.layers)} layers: {counts['split']} split, {counts['gpu']} whole on the GPU, "
                 f"{counts['cpu']} whole on the CPU")
    if crossing is not None:
        sides = []
        for side, label in (("to_gpu", "to the GPU"), ("to_cpu", "to the CPU")):
            by_dtype = crossing.get(side, {})
            detail = ", ".join(f"{dtype} {nbytes}" for dtype, nbytes in sorted(by_dtype.items()))
            sides.append(f"{sum(by_dtype.values())} {label}" + (f" ({detail})" if detail else ""))
        lines.append(f"bytes crossing per inference: {'; '.join(sides)}")
    return "\n".join(lines)


def predicted_table(plan: Plan, times, events: list, cpu: Processor, gpu: Processor) -> str:
    """The partitioner's view per layer: whole-layer times on each processor (`times`, a
    KernelTimes), the chosen split's part times, and the bytes copied in for it (from the
    plan's simulated `events`)."""
    moved: dict = {}
    for event in events:
        if event.lane == "copy":
            moved[event.label] = moved.get(event.label, 0.0) + event.nbytes
    rows = [("layer", "onnx node", "cpu only ms", "gpu only ms", "placement", "ratio", "gpu part ms", "cpu part ms",
             "bytes in", "note")]
    for lp in plan.layers:
        ms = lambda role, channels: f"{times.time(role, lp.name, channels) * 1e3:.3f}"  # noqa: E731
        rows.append((lp.name, lp.source or "-", ms("cpu", lp.channels), ms("gpu", lp.channels), lp.placement,
                     f"{lp.effective_ratio:.2f}", ms("gpu", lp.gpu_channels), ms("cpu", lp.channels - lp.gpu_channels),
                     f"{moved.get(lp.name, 0):.0f}", lp.note))
    lines = _render(rows, cpu, gpu, plan)
    total = sum(moved.values())
    lines.append(f"bytes copied between the processors per inference (predicted): {total:.0f}")
    return "\n".join(lines)
