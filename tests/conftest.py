"""Shared helpers: onnxruntime references and the error measure the numerical tests use."""

from __future__ import annotations

import functools
import os

import numpy as np
import onnx
import pytest

# A schedule rule that raises fails the build in tests (users' builds log it and fall back to
# the next rule): set before anything is compiled, inherited by the scripts tests start.
os.environ["TVM_MULAYER_STRICT_SCHEDULES"] = "1"
# Each pytest-xdist worker has a core: TVM's spinning thread pool on every core in every worker
# would make the workers fight for them.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("TVM_NUM_THREADS", "1")


def ort_run(model: onnx.ModelProto, inputs: dict) -> list:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def relative_error(actual, expected) -> float:
    """max |a - e| / max |e|, computed in float64."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def input_shape(model: onnx.ModelProto, index: int = 0) -> tuple:
    return tuple(d.dim_value for d in model.graph.input[index].type.tensor_type.shape.dim)


@pytest.fixture(scope="session")
def small_zoo():
    """Small variants of every zoo model, built once."""
    from tvm_mulayer.base import zoo

    return {name: zoo.build(name, **zoo.small(name)) for name in zoo.NAMES}


# ---- test tiers ---------------------------------------------------------------------------
# `pytest -q` runs the fast tier (one end-to-end compile per feature, rule tests on small
# shapes, error paths); `pytest -q --full` adds the tests marked with one of these.
FULL_TIER = {
    "slow": "every zoo model, ratio and fuzz case; long profiling and training runs",
    "rpc": "a TVM RPC server and tracker on loopback",
    "cross": "phone (aarch64) cross-compilation, and QEMU where installed",
}


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help=f"also run the full tier: tests marked {', '.join(FULL_TIER)}")


_RUN = {"full": False}


def examples(full_tier: int) -> int:
    """A property test's example count: `full_tier` with --full, an eighth (at least 4) in the
    fast tier."""
    return full_tier if _RUN["full"] else max(4, full_tier // 8)


def fast_params(fast: list, rest: list) -> list:
    """Parameters of which `fast` run in the fast tier and `rest` only with --full."""
    return [*fast, *(pytest.param(*(value if isinstance(value, tuple) else (value,)), marks=pytest.mark.slow)
                     for value in rest)]


def pytest_configure(config):
    _RUN["full"] = bool(config.getoption("--full"))
    for marker, meaning in FULL_TIER.items():
        config.addinivalue_line("markers", f"{marker}: full tier ({meaning}); runs with --full")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--full") or config.getoption("markexpr"):
        return
    full = [item for item in items if any(item.get_closest_marker(m) for m in FULL_TIER)]
    if full:
        config.hook.pytest_deselected(items=full)
        deselected = set(full)
        items[:] = [item for item in items if item not in deselected]


# ---- OpenCL ---------------------------------------------------------------------------------
# OpenCL kernels run where TVM's OpenCL runtime plugin is loaded and an OpenCL driver offers a
# device (pocl in CI: .ci/run installs it and builds the plugin from ../shared/tvm-opencl-runtime).
@functools.lru_cache(maxsize=None)
def opencl_missing() -> str | None:
    """Why OpenCL kernels cannot run here (the error `mulayer run` would give), or None."""
    from tvm_mulayer import MulayerError
    from tvm_mulayer.base.processors import cpu_processor, gpu_processor
    from tvm_mulayer.runtime.devices import tvm_device

    try:
        tvm_device(gpu_processor("opencl", cpu_processor("host")), 1)
    except MulayerError as err:
        return f"no OpenCL device here ({err}); .ci/run installs pocl and builds the plugin"
    return None


@functools.lru_cache(maxsize=None)
def opencl_float16_missing() -> str | None:
    """Why float16 OpenCL kernels cannot run here, or None."""
    import tvm

    from tvm_mulayer.runtime.devices import FLOAT16_EXTENSIONS, opencl_extensions

    if opencl_missing():
        return opencl_missing()
    name = tvm.opencl(0).device_name
    if not (opencl_extensions(name) or frozenset()).intersection(FLOAT16_EXTENSIONS):
        return (f"the OpenCL device {name!r} has no cl_khr_fp16 (Debian 12's pocl 3.1 has none): float16 "
                "OpenCL kernels are only compiled here")
    return None


@pytest.fixture
def opencl():
    """The OpenCL device (pocl's CPU device in CI); the test skips, saying why, where there is none."""
    import tvm

    reason = opencl_missing()
    if reason:
        pytest.skip(reason)
    return tvm.opencl(0)
