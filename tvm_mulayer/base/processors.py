"""The two processors a plan runs on: what they are, how TVM compiles for them, where they run.

A processor is a TVM target plus what the partitioner and the runtime need to know about
it: whether it is the CPU or the GPU, the device type the runtime opens, the channel
multiple its kernels like (ratios are rounded to it), and whether it is *emulated* (a
second LLVM device standing in for a GPU on machines that have none, so the identical
two-device code path runs everywhere).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .errors import MulayerError

# Fixed CPU targets by preset name ("host" is detected instead). Phones: Armv8.2 dotprod is
# on nearly every 64-bit phone since 2018; Armv8.6 i8mm (Snapdragon 8 Gen 1, Dimensity 9000,
# Armv9 cores and later) adds usdot, the exact uint8 x int8 dot product our int8 slices use,
# but code using it dies (SIGILL) on older phones, so it is a preset of its own.
CPU_PRESET_TARGETS = {
    # AVX-512 with VNNI (int8 dot products): Xeons since Cascade Lake, AMD since Zen 4
    "x86-avx512": {"kind": "llvm", "mcpu": "cascadelake", "num-cores": 16},
    "arm64-android": {"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon", "+dotprod"]},
    "arm64-android-i8mm": {"kind": "llvm", "mtriple": "aarch64-linux-android",
                           "mattr": ["+neon", "+dotprod", "+i8mm"]},
}
CPU_PRESETS = ("host", *CPU_PRESET_TARGETS)
GPU_PRESETS = ("emulated", "cuda", "opencl", "adreno", "mali")


@dataclass(frozen=True)
class Processor:
    """One side of the CPU/GPU pair.

    `target` is a TVM target JSON dict (without host); `device_type` is the runtime device
    kind ("cpu", "cuda", "opencl"); `channel_multiple` is the granularity its kernels
    vectorize over, used to round split ratios.
    """

    name: str
    role: str  # "cpu" or "gpu"
    target: dict = field(hash=False)
    device_type: str = "cpu"
    channel_multiple: int = 8
    emulated: bool = False

    def tvm_target(self, host: "Processor | None" = None):
        import tvm

        if host is None or self.device_type == "cpu":
            return tvm.target.Target(self.target)
        return tvm.target.Target(self.target, host=host.target)

    def label(self) -> str:
        text = self.name
        if self.emulated:
            text += " (emulated GPU: a second LLVM device)"
        return text

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "target": self.target,
            "device_type": self.device_type,
            "channel_multiple": self.channel_multiple,
            "emulated": self.emulated,
        }

    @staticmethod
    def from_json(data: dict) -> "Processor":
        return Processor(**data)


def _host_cpu_target() -> dict:
    """LLVM for the machine we are on, with its CPU model (and so its SIMD features)."""
    import tvm

    mcpu = tvm.target.codegen.llvm_get_system_cpu()
    target = {"kind": "llvm", "num-cores": os.cpu_count() or 1}
    if mcpu and mcpu != "generic":
        target["mcpu"] = mcpu
    return target


def _simd_lanes(target: dict) -> int:
    """float32 lanes of the widest vector the target has (channel rounding granularity)."""
    import tvm

    bits = tvm.target.codegen.llvm_get_vector_width(tvm.target.Target(target))
    return max(4, int(bits) // 32) if bits and bits > 0 else 4


def cpu_processor(spec: str | dict = "host") -> Processor:
    """The CPU side from a preset name or a TVM target JSON (dict or JSON text)."""
    target = _parse_json_spec(spec)
    if target is None:
        if spec == "host":
            target = _host_cpu_target()
        elif spec in CPU_PRESET_TARGETS:
            target = dict(CPU_PRESET_TARGETS[spec])
        else:
            raise MulayerError(
                f"unknown CPU preset {spec!r}: use one of {', '.join(CPU_PRESETS)} "
                "or a TVM target JSON such as '{\"kind\": \"llvm\", \"mcpu\": \"cascadelake\"}'"
            )
        name = spec
    else:
        name = "custom"
    if target.get("kind") != "llvm":
        raise MulayerError(f"the CPU target must be an llvm target, got kind {target.get('kind')!r}")
    _check_target(target)
    return Processor(name, "cpu", target, "cpu", _simd_lanes(target))


def gpu_processor(spec: str | dict, cpu: Processor) -> Processor:
    """The GPU side from a preset name (`cuda` or `cuda:sm_80`, ...) or a TVM target JSON."""
    target = _parse_json_spec(spec)
    if target is None:
        preset, _, option = str(spec).partition(":")
        if preset == "emulated":
            target = dict(cpu.target)
        elif preset == "cuda":
            target = {"kind": "cuda", "arch": option or "sm_90"}
        elif preset == "opencl":
            target = {"kind": "opencl"}
        elif preset in ("adreno", "mali"):
            target = {"kind": "opencl", "device": preset}
        else:
            raise MulayerError(
                f"unknown GPU preset {spec!r}: use one of {', '.join(GPU_PRESETS)} "
                "(cuda takes an arch: cuda:sm_80) or a TVM target JSON"
            )
        name = str(spec)
    else:
        name = "custom"
    _check_target(target)
    kind = target["kind"]
    if kind == "llvm":
        # A non-emulated llvm "GPU" is still a CPU device; label it honestly.
        return Processor(name, "gpu", target, "cpu", cpu.channel_multiple, emulated=True)
    if kind not in ("cuda", "opencl", "vulkan", "metal", "rocm"):
        raise MulayerError(f"unsupported GPU target kind {kind!r}: use cuda, opencl or an llvm emulation")
    return Processor(name, "gpu", target, kind, 8 if kind == "cuda" else 4)


def default_gpu(cpu: Processor) -> Processor:
    """CUDA when this machine has a CUDA GPU, otherwise the emulated GPU."""
    import tvm

    if tvm.cuda(0).exist:
        return gpu_processor("cuda:sm_" + tvm.cuda(0).compute_version.replace(".", ""), cpu)
    return gpu_processor("emulated", cpu)


def resolve_processors(cpu: "Processor | str | dict" = "host", gpu: "Processor | str | dict | None" = None) -> tuple:
    """(CPU, GPU) Processors from presets, target JSON or Processors; GPU None: `default_gpu`."""
    cpu_proc = cpu if isinstance(cpu, Processor) else cpu_processor(cpu)
    if gpu is None:
        return cpu_proc, default_gpu(cpu_proc)
    return cpu_proc, gpu if isinstance(gpu, Processor) else gpu_processor(gpu, cpu_proc)


def _parse_json_spec(spec) -> dict | None:
    if isinstance(spec, dict):
        return dict(spec)
    text = str(spec).strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise MulayerError(f"the target JSON {text!r} does not parse: {err}") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise MulayerError(f"a target JSON needs a \"kind\" key, got {text!r}")
    return data


def _check_target(target: dict) -> None:
    import tvm

    try:
        tvm.target.Target(target)
    except Exception as err:  # TVM raises its own error types; the message is what matters
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise MulayerError(f"TVM does not accept the target {json.dumps(target)}: {first}") from None
