"""An Executable called from several threads at once, as a service calls it (issue 27).

Every concurrent caller runs its own inputs and gets, bit for bit, what one thread alone got
for them: a CPU-only plan, a split int8 plan loaded from its artifact (the case that crashed
when the calls shared one VM), and an OpenCL plan where this machine has an OpenCL device.
The soak (`scripts/soak.py`: thousands of runs from four threads, an artifact loaded and
released many times, memory flat) is in the slow tier.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tvm_mulayer
from tvm_mulayer.base import zoo
from tvm_mulayer.runtime.executable import concurrent_runs

SOAK = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"
THREADS = 4
CALLS = 6  # per thread


@pytest.fixture(scope="module")
def squeezenet():
    return zoo.build("squeezenet1_1", **zoo.small("squeezenet1_1"))


def _opencl_here() -> bool:
    import tvm

    return tvm.opencl(0).exist


@pytest.fixture(scope="module")
def split_artifact(squeezenet, tmp_path_factory):
    """SqueezeNet split 0.5, int8 CPU slices, exported: what a service loads."""
    compiled = tvm_mulayer.compile(squeezenet, cpu="host", gpu="emulated", split=0.5, precision="native")
    return compiled.export(tmp_path_factory.mktemp("artifact") / "squeezenet")


@pytest.fixture(scope="module", params=[
    pytest.param(("cpu", "emulated", "fp32"), id="cpu-only"),
    pytest.param("artifact", id="split-int8-artifact"),
    pytest.param((0.5, "opencl", "fp32"), id="opencl"),
])
def executable(request, squeezenet):
    if request.param == "artifact":  # as a service gets it: loaded from disk
        return tvm_mulayer.load(request.getfixturevalue("split_artifact"))
    split, gpu, precision = request.param
    if gpu == "opencl" and not _opencl_here():
        pytest.skip("no OpenCL device on this machine")
    return tvm_mulayer.compile(squeezenet, cpu="host", gpu=gpu, split=split, precision=precision)


def _inputs(seed: int) -> dict:
    return {"input": np.random.default_rng(seed).standard_normal((1, 3, 47, 47)).astype("float32")}


def _threads(work, count: int) -> list:
    """Run `work(index)` on `count` threads started together; the exceptions they raised."""
    barrier, errors = threading.Barrier(count), []

    def body(index):
        barrier.wait()
        try:
            work(index)
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    workers = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


def test_concurrent_runs_give_each_caller_its_own_outputs(executable):
    """Each thread alternates two inputs of its own; every output equals the single-threaded
    reference for that input exactly (same kernels, same data: no tolerance)."""
    seeds = [[2 * t, 2 * t + 1] for t in range(THREADS)]
    references = {seed: executable.run(_inputs(seed)) for pair in seeds for seed in pair}
    assert not np.array_equal(references[0]["logits"], references[1]["logits"])  # inputs tell apart
    wrong = []

    def work(index):
        for call in range(CALLS):
            seed = seeds[index][call % 2]
            outputs = executable.run(_inputs(seed))
            if set(outputs) != set(references[seed]) or any(
                    not np.array_equal(outputs[name], references[seed][name]) for name in outputs):
                wrong.append((index, call))

    assert _threads(work, THREADS) == []
    assert wrong == []


def test_benchmark_and_trace_run_beside_concurrent_runs(executable):
    """benchmark and trace hold VMs of their own while other threads run."""
    reference = executable.run(_inputs(7))
    results, wrong = {}, []

    def work(index):
        if index == 0:
            results["benchmark"] = executable.benchmark(_inputs(8), repeat=4, warmup=1)
        elif index == 1:
            results["trace"] = executable.trace(_inputs(8))
        else:
            for _ in range(CALLS):
                if not np.array_equal(executable.run(_inputs(7))["logits"], reference["logits"]):
                    wrong.append(index)

    assert _threads(work, THREADS) == []
    assert wrong == []
    assert len(results["benchmark"]["times"]) == 4 and results["benchmark"]["median"] > 0
    assert {call["lane"] for call in results["trace"]} >= {"cpu"}


def test_a_wrong_input_in_one_thread_leaves_the_others_correct(executable):
    """A call refused for its input gets its MulayerError; the calls beside it are unaffected."""
    reference = executable.run(_inputs(3))
    refused, wrong = [], []

    def work(index):
        for _ in range(CALLS):
            if index == 0:
                try:
                    executable.run({"input": np.zeros((1, 3, 9, 9), "float32")})
                except tvm_mulayer.MulayerError:
                    refused.append(index)
            elif not np.array_equal(executable.run(_inputs(3))["logits"], reference["logits"]):
                wrong.append(index)

    assert _threads(work, THREADS) == []
    assert len(refused) == CALLS and wrong == []


def test_short_lived_caller_threads_leave_no_threads_behind(executable):
    """A thread per request: TVM's per-thread kernel pools stay on the runner threads, so the
    process's threads grow at most by the runners and their pools, not with the callers (on
    the callers' threads they grew by TVM_NUM_THREADS for each caller, for good)."""
    def one_call(_):
        executable.run(_inputs(5))

    before = len(os.listdir("/proc/self/task"))
    for _ in range(5):
        assert _threads(one_call, THREADS) == []
    runners_and_pools = concurrent_runs() * (1 + int(os.environ["TVM_NUM_THREADS"]))
    assert len(os.listdir("/proc/self/task")) - before <= runners_and_pools < 5 * THREADS


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_concurrent_runs_setting_gets_one_clear_error(monkeypatch, value):
    monkeypatch.setenv("TVM_MULAYER_CONCURRENT_RUNS", value)
    with pytest.raises(tvm_mulayer.MulayerError, match="TVM_MULAYER_CONCURRENT_RUNS"):
        concurrent_runs()


@pytest.mark.slow
def test_soak_identical_outputs_and_flat_memory(tmp_path):
    """scripts/soak.py: 2,000 runs from 4 threads, each output identical to the reference;
    resident memory flat over the runs and over 30 loads and releases of the artifact."""
    report = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, str(SOAK), "--small", "--threads", "4", "--runs", "2000",
                             "--compare", "", "--reloads", "30", "--json", str(report)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(report.read_text())
    soak, reload = figures["soak"], figures["reload"]
    assert soak["runs"] == 2000 and soak["mismatches"] == 0
    assert soak["end_mib"] - soak["start_mib"] < 8, soak
    assert reload["last_mib"] - reload["first_mib"] < 8, reload
    assert reload["settled_mib_per_reload"] < 0.05, reload  # TVM kept 0.2 MiB of each load


def test_an_artifact_loaded_and_released_again_and_again_keeps_no_memory(split_artifact, tmp_path):
    """Each tvm.runtime.load_module keeps 0.2 MiB of this library for good (TVM): loads of
    one artifact share its code, so a service reloading it stays flat. Measured by the soak
    script in a process of its own (here a compile's freed heap would hide the growth)."""
    report = tmp_path / "reload.json"
    result = subprocess.run([sys.executable, str(SOAK), "--artifact", str(split_artifact), "--runs", "0",
                             "--compare", "", "--reloads", "24", "--json", str(report)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    reload = json.loads(report.read_text())["reload"]
    assert reload["settled_mib_per_reload"] < 0.05, reload


def test_a_forked_child_runs_on_runners_of_its_own_or_refuses_a_dead_gpu(executable):
    """After fork the parent's runner threads do not exist in the child: its calls start new
    ones (they waited forever on the parent's). A GPU context the parent opened is dead in the
    child too (pocl's child hung on it for ever): there the child's run is refused with an error
    that says to spawn workers instead."""
    reference = executable.run(_inputs(4))["logits"]
    pid = os.fork()
    if pid == 0:  # the child's exit status: 0 its run matches the parent's, 3 refused for fork
        status = 1
        try:
            status = 0 if np.array_equal(executable.run(_inputs(4))["logits"], reference) else 1
        except tvm_mulayer.MulayerError as error:
            status = 3 if "does not survive fork" in str(error) and "spawn" in str(error) else 1
        finally:
            os._exit(status)
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's run did not return in 120 s")
        time.sleep(0.2)
    emulated = executable.gpu.device_type == "cpu"
    assert os.waitstatus_to_exitcode(status) == (0 if emulated else 3)
