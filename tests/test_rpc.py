"""`mulayer deploy` against real TVM RPC servers and a tracker on 127.0.0.1.

The servers run in child processes (`rpc_servers.py`: their own process groups, killed in
teardown); every wait is bounded. The artifact is a small SqueezeNet 1.1 with an emulated GPU, so the remote
VM gets the same two devices (cpu(0), cpu(1)) as a local run and outputs must match exactly.
"""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

import tvm_mulayer
from tvm_mulayer import MulayerError
from tvm_mulayer.base import zoo
from tvm_mulayer.cli import main
from tvm_mulayer.runtime.deploy import connect, deploy

from conftest import ort_run, relative_error
from rpc_servers import Served, free_port, wait_registered

pytestmark = pytest.mark.rpc  # full tier: RPC servers and trackers on loopback

MODEL = "squeezenet1_1"

pytest.importorskip("tornado", reason="the TVM RPC tracker needs tornado (pip install tornado)")

@pytest.fixture(scope="module")
def model():
    return zoo.build(MODEL, **zoo.small(MODEL))


@pytest.fixture(scope="module")
def artifact(model, tmp_path_factory):
    """(artifact dir, the local executable, an input, the local outputs)."""
    executable = tvm_mulayer.compile(model, cpu="host", gpu="emulated", split=0.5)
    path = executable.export(tmp_path_factory.mktemp("rpc") / "artifact")
    x = np.random.default_rng(7).standard_normal(executable.inputs["input"][0]).astype("float32")
    return path, executable, x, executable.run({"input": x})


@pytest.fixture(scope="module")
def servers():
    """A plain server, and a tracker with a second server registered under the key 'mulayer-test'."""
    started = []
    try:
        started.append(Served("server"))
        started.append(Served("tracker"))
        started.append(Served("server", "127.0.0.1", started[1].port, "mulayer-test"))
        wait_registered(started[1], "mulayer-test")
        yield {"rpc": started[0], "tracker": started[1]}
    finally:
        for served in started:
            served.stop()


def test_deploy_over_rpc_cli_matches_local_and_onnxruntime(artifact, model, servers, tmp_path, capsys):
    path, executable, x, local = artifact
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    code = main(["deploy", str(path), "--rpc", servers["rpc"].address, "--input", f"input={tmp_path / 'x.npy'}",
                 "-o", str(out), "--repeat", "3"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "median latency over 3 remote runs" in printed.out and servers["rpc"].address in printed.out
    with np.load(out) as data:
        assert list(data.files) == executable.outputs
        for name in executable.outputs:
            assert np.array_equal(data[name], local[name])  # same kernels, same devices: bit-exact
        expected = ort_run(model, {"input": x})
        for name, value in zip(executable.outputs, expected):
            # the artifact is native (int8 CPU half, fp16 GPU half, calibrated on random
            # inputs): ~1e-2 per int8 layer, compounding over SqueezeNet's 26 conv layers
            assert relative_error(data[name], value) < 5e-2


def test_deploy_through_tracker_api_and_cli(artifact, servers, tmp_path, capsys):
    path, executable, x, local = artifact
    session = connect(tracker=servers["tracker"].address, key="mulayer-test", timeout=30)
    result = deploy(path, session, {"input": x}, repeat=3)
    assert result["devices"][0].endswith("cpu:0") and result["devices"][1].endswith("cpu:1")
    assert len(result["times"]) == 3 and result["latency"] > 0
    for name in executable.outputs:
        assert np.array_equal(result["outputs"][name], local[name])
    del session  # a server serves one session at a time: free it for the next request
    out = tmp_path / "out.npz"
    np.save(tmp_path / "x.npy", x)
    assert main(["deploy", str(path), "--tracker", servers["tracker"].address, "--key", "mulayer-test",
                 "--input", str(tmp_path / "x.npy"), "-o", str(out), "--repeat", "2"]) == 0
    assert "median latency over 2 remote runs" in capsys.readouterr().out
    with np.load(out) as data:
        for name in executable.outputs:
            assert np.array_equal(data[name], local[name])


def test_deploy_random_input_without_timing(artifact, servers):
    path, executable, _, _ = artifact
    result = deploy(path, connect(rpc=servers["rpc"].address), repeat=0)
    assert result["latency"] is None and result["times"] == []
    expected = executable.run(None)  # the same seeded random data as `mulayer run`
    for name in executable.outputs:
        assert np.array_equal(result["outputs"][name], expected[name])


def test_tracker_without_the_key(servers):
    with pytest.raises(MulayerError, match="no server registered under key 'phone'.*'mulayer-test'"):
        connect(tracker=servers["tracker"].address, key="phone", timeout=10)


def test_nothing_listening(artifact, capsys):
    port = free_port()
    with pytest.raises(MulayerError, match=f"nothing is listening at 127.0.0.1:{port}.*rpc_server"):
        connect(rpc=f"127.0.0.1:{port}", timeout=10)
    with pytest.raises(MulayerError, match=f"nothing is listening at 127.0.0.1:{port}.*rpc_tracker"):
        connect(tracker=f"127.0.0.1:{port}", key="x", timeout=10)
    assert main(["deploy", str(artifact[0]), "--rpc", f"127.0.0.1:{port}", "--timeout", "10"]) == 2
    assert "nothing is listening" in capsys.readouterr().err


def test_bad_addresses_and_arguments(artifact, capsys):
    for bad in ("localhost", "127.0.0.1:x", ":9090", "127.0.0.1:70000"):
        with pytest.raises(MulayerError, match="HOST:PORT"):
            connect(rpc=bad)
    with pytest.raises(MulayerError, match="--key"):
        connect(tracker="127.0.0.1:9190")
    with pytest.raises(MulayerError, match="exactly one"):
        connect()
    assert main(["deploy", str(artifact[0]), "--tracker", "127.0.0.1:9", "--repeat", "1"]) == 2
    assert "--tracker needs --key" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --rpc and --tracker are exclusive
        main(["deploy", str(artifact[0]), "--rpc", "127.0.0.1:9", "--tracker", "127.0.0.1:9"])


def test_damaged_artifact_is_refused_before_upload(artifact, servers, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(artifact[0], damaged)
    with open(damaged / "model.so", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\0\1\2\3")
    with pytest.raises(MulayerError, match="does not match its checksum"):
        deploy(damaged, connect(rpc=servers["rpc"].address), repeat=0)


def test_server_killed_mid_run(artifact):
    """The server dies while the remote is timing runs: a clear error, not a hang."""
    path, _, x, _ = artifact
    server = Served("server")
    try:
        session = connect(rpc=server.address, timeout=30)
        latency = deploy(path, session, {"input": x}, repeat=5)["latency"]
        repeat = max(2000, int(15.0 / max(latency, 1e-6)))  # ~15 s of runs if nothing kills them
        killer = []

        def progress(stage):
            if stage == "ran":  # the timed runs start next; kill the server while they run
                timer = threading.Timer(1.0, server.stop)
                killer.append(timer)
                timer.start()

        started = time.monotonic()
        with pytest.raises(MulayerError, match="RPC server disconnected while timing"):
            deploy(path, session, {"input": x}, repeat=repeat, progress=progress)
        assert time.monotonic() - started < 12  # it failed on the kill, not after the runs
        killer[0].join(timeout=15)
    finally:
        server.stop()


def test_remote_without_the_gpu(model, tmp_path):
    """An OpenCL artifact on a server that sees no OpenCL device: refused before loading. (Its
    runtime may have TVM's OpenCL plugin, as CI's has: an empty OCL_ICD_VENDORS folder then
    hides every OpenCL driver from it.)"""
    executable = tvm_mulayer.compile(model, cpu="host", gpu="opencl", split=0.5)
    path = executable.export(tmp_path / "opencl")
    (tmp_path / "no-drivers").mkdir()
    server = Served("server", env={"OCL_ICD_VENDORS": str(tmp_path / "no-drivers")})
    try:
        with pytest.raises(MulayerError, match="remote has no opencl device"):
            deploy(path, connect(rpc=server.address), repeat=0)
    finally:
        server.stop()


def test_profile_over_rpc_measures_both_remote_devices(servers, tmp_path, capsys):
    """`mulayer profile --rpc` compiles the kernels here and times them on the server."""
    from tvm_mulayer.cli import main
    from tvm_mulayer.base.records import read_rows

    csv_path = tmp_path / "remote.csv"
    assert main(["profile", "--rpc", servers["rpc"].address, "--gpu", "emulated", "--models", "alexnet",
                 "--image-size", "67", "--width", "0.1", "--fractions", "1.0", "-o", str(csv_path)]) == 0
    assert "on the remote" in capsys.readouterr().out
    rows = read_rows(csv_path)
    kernels = {(r["role"], r["config"]) for r in rows if r["kind"] == "kernel"}
    from tvm_mulayer.planning.profiler import zoo_configs
    from tvm_mulayer.base.records import config_key

    layers = zoo_configs(["alexnet"], fractions=(1.0,), image_size=67, width=0.1)
    assert len(layers) == 8  # AlexNet's 5 conv + 3 dense
    # the default --precision (native and fp32): each processor in both of its slice precisions
    precisions = {"cpu": ("int8", "fp32"), "gpu": ("fp16", "fp32")}
    assert kernels == {(role, config_key(c, p)) for role, ps in precisions.items() for p in ps for c in layers}
    assert all(float(r["seconds"]) > 0 for r in rows)
    assert {r["config"] for r in rows if r["kind"] == "copy"} == {"h2d", "d2h"}
