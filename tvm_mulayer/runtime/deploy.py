"""Deploy an artifact over TVM RPC: to a phone's TVM RPC app, a board, another host.

`connect(rpc="HOST:PORT")` or `connect(tracker="HOST:PORT", key="android")` opens a TVM RPC
session (the profiler reuses it); `deploy(artifact_dir, session, inputs, repeat)` uploads the
artifact's library, loads it on the remote, builds the VM on the remote devices that match
the artifact's processors (remote cpu(0) + cpu(1) for an emulated GPU, remote cuda/opencl
otherwise), copies each weight to the device the manifest places it on, runs, and returns
the outputs (keyed by ONNX output name) and the latency measured on the remote.

Every failure a user can meet is a `MulayerError`: no server at the address, a tracker with
no server under the key, a server that goes away while we use it, a remote without the GPU
the artifact needs, a damaged artifact.
"""

from __future__ import annotations

import json
import socket
import statistics
import struct
import threading
import uuid
from pathlib import Path

import numpy as np

from ..base.errors import MulayerError

DEFAULT_TIMEOUT = 60.0
RPC_ENTRY = "mulayer_rpc_main"  # main with its weights read from the remote's tensor cache
WEIGHT_PREFIX = "tvm_mulayer.w"


# ---- connecting ------------------------------------------------------------------------
def parse_address(text: str, what: str = "--rpc") -> tuple[str, int]:
    """"HOST:PORT" -> (host, port); IPv6 hosts may be bracketed: [::1]:9090."""
    host, sep, port = str(text).strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        if not sep or not host:
            raise ValueError
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise MulayerError(f"{what} {text!r}: write HOST:PORT, such as 127.0.0.1:9090") from None
    return host, number


def connect(rpc: str | None = None, tracker: str | None = None, key: str | None = None,
            timeout: float = DEFAULT_TIMEOUT, session_timeout: float = 0, priority: int = 1):
    """A TVM RPC session (`tvm.rpc.RPCSession`) to a server, directly or through a tracker.

    `rpc="HOST:PORT"` connects to that server (`key` is then the server's key, if it has one).
    `tracker="HOST:PORT"` with `key=KEY` asks the tracker for a free server registered under
    KEY. `timeout` bounds connecting and waiting for a free server (seconds);
    `session_timeout` (0: none) lets the server end the session after that long.
    """
    if (rpc is None) == (tracker is None):
        raise MulayerError("give exactly one of --rpc HOST:PORT (a server) or --tracker HOST:PORT --key KEY")
    if rpc is not None:
        host, port = parse_address(rpc, "--rpc")
        return _open_session(host, port, key or "", timeout, session_timeout,
                             where=f"TVM RPC server at {host}:{port}")
    if not key:
        raise MulayerError("--tracker needs --key KEY: the key the device's RPC server registered with "
                           "(e.g. `python -m tvm.exec.rpc_server --tracker HOST:PORT --key android`)")
    host, port = parse_address(tracker, "--tracker")
    url, server_port, matchkey = _request_from_tracker(host, port, key, timeout, priority)
    return _open_session(url, server_port, matchkey, timeout, session_timeout,
                         where=f"TVM RPC server {url}:{server_port} (key {key!r}, from the tracker at {host}:{port})")


def _open_session(host: str, port: int, key: str, timeout: float, session_timeout: float, where: str):
    """tvm.rpc.connect, bounded by `timeout` (the C++ connect has no timeout of its own)."""
    import tvm.rpc

    result = {}

    def attempt():
        try:
            result["session"] = tvm.rpc.connect(host, port, key, session_timeout=session_timeout)
        except Exception as err:  # noqa: BLE001 - TVM raises its own error types; reported below
            result["error"] = err

    worker = threading.Thread(target=attempt, name="mulayer-rpc-connect", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise MulayerError(f"no answer from the {where} within {timeout:g} s; check the address, that the "
                           "server is running and reachable, and that no other client holds it (a TVM RPC "
                           "server serves one session at a time)")
    if "error" in result:
        message = _last_line(result["error"])
        if "Connect to" in message and "failed" in message:
            raise MulayerError(f"nothing is listening at {host}:{port}: no {where.split(' at ')[0]} there. "
                               "Start one (`python -m tvm.exec.rpc_server --host 0.0.0.0 --port "
                               f"{port}`, or the TVM RPC app on the phone) or fix the address") from None
        raise MulayerError(f"could not open a session with the {where}: {message}") from None
    return result["session"]


def _request_from_tracker(host: str, port: int, key: str, timeout: float, priority: int) -> tuple:
    """Ask a tracker for a free server under `key`: (host, port, matchkey)."""
    from tvm.rpc import base

    where = f"RPC tracker at {host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise MulayerError(f"nothing is listening at {host}:{port}: no {where}. Start one with "
                           f"`python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {port}`") from None
    except OSError as err:
        raise MulayerError(f"cannot reach the {where}: {err}") from None
    try:
        with sock:
            sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
                raise MulayerError(f"{host}:{port} answered, but it is not a TVM RPC tracker")
            base.sendjson(sock, [base.TrackerCode.SUMMARY])
            code, summary = base.recvjson(sock)
            if code != base.TrackerCode.SUCCESS:
                raise MulayerError(f"the {where} refused a summary request (code {code})")
            keys = sorted({info["key"].partition(":")[2] for info in summary.get("server_info", [])
                           if str(info.get("key", "")).startswith("server:")})
            if key not in keys:
                listed = ", ".join(repr(k) for k in keys) if keys else "none"
                raise MulayerError(f"the {where} has no server registered under key {key!r} (registered keys: "
                                   f"{listed}); start the device's RPC server with --tracker {host}:{port} "
                                   f"--key {key}, or pass one of the registered keys")
            base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", priority])
            try:
                value = base.recvjson(sock)
            except (socket.timeout, TimeoutError):
                raise MulayerError(f"every server under key {key!r} at the {where} stayed busy for "
                                   f"{timeout:g} s; try again later or raise --timeout") from None
            if value[0] != base.TrackerCode.SUCCESS:
                raise MulayerError(f"the {where} could not give a server for key {key!r}: {value}")
            url, server_port, matchkey = value[1]
            return url, int(server_port), matchkey
    except MulayerError:
        raise
    except (OSError, ValueError, struct.error) as err:
        raise MulayerError(f"the {where} dropped the connection: {err}") from None


def _last_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[-1] if text else type(err).__name__


# ---- deploying -------------------------------------------------------------------------
def remote_devices(session, cpu, gpu) -> list:
    """The remote VM's device list [cpu, gpu] for the artifact's processors, checked to exist."""
    devices = [session.cpu(0)]
    if gpu.device_type == "cpu":  # emulated GPU: a second CPU device, as locally
        devices.append(session.cpu(1))
        return devices
    device = session.device(gpu.device_type, 0)
    try:
        present = bool(device.exist)
    except Exception:  # noqa: BLE001 - the remote runtime lacks that device API altogether
        present = False
    if not present:
        raise MulayerError(
            f"the artifact runs its GPU part on {gpu.device_type} ({gpu.name}), but the remote has no "
            f"{gpu.device_type} device (its TVM runtime lacks {gpu.device_type} support or sees no such GPU); "
            "deploy to a device that has one, or compile with --gpu emulated")
    devices.append(device)
    return devices


def deploy(artifact_dir, session, inputs=None, repeat: int = 10, progress=None) -> dict:
    """Run an exported artifact on the remote of `session` (from `connect`).

    `inputs`: dict name -> array, one array, or None (seeded random data, as `mulayer run`).
    Returns {"outputs": {ONNX output name: array}, "latency": median seconds over `repeat`
    remote runs (None if repeat is 0), "times": the per-run seconds, "devices": [str, str]}.
    `progress(stage)` is called with "uploaded", "loaded", "placed", "ran", "timed".
    """
    from ..base.plan import Plan
    from ..base.processors import Processor
    from .executable import Executable, read_manifest

    root = Path(artifact_dir)
    manifest = read_manifest(root)  # format, TVM version and checksums, as tvm_mulayer.load does
    cpu = Processor.from_json(manifest["cpu"])
    gpu = Processor.from_json(manifest["gpu"])
    with np.load(root / "weights.npz", allow_pickle=False) as data:
        weights = [data[f"w{i}"] for i in range(len(data.files))]
    plan = Plan.from_json(json.loads((root / "plan.json").read_text()))
    model_inputs = {name: (tuple(v["shape"]), v["dtype"]) for name, v in manifest["inputs"].items()}
    # the local Executable without a module: its input checks and conversions, remote devices
    local = Executable(None, plan, cpu, gpu, model_inputs, manifest["outputs"], manifest.get("sources", {}),
                       weights, manifest["weight_devices"], manifest)
    step = progress or (lambda stage: None)
    stage = "checking the remote's devices"
    cached = []
    try:
        import tvm
        import tvm.runtime.vm

        devices = remote_devices(session, cpu, gpu)
        stage = "uploading the artifact"
        # a fresh name per deploy: rewriting a library the remote has loaded would crash it
        tag = f"mulayer-{manifest['files']['model.so'][:12]}-{uuid.uuid4().hex[:8]}"
        for name in ("model.so", "plan.json", "manifest.json"):
            session.upload(str(root / name), f"{tag}.{name}")
        step("uploaded")
        stage = "loading model.so on the remote"
        module = session.load_module(f"{tag}.model.so")
        vm = tvm.runtime.vm.VirtualMachine(module, devices)
        try:
            vm.module["get_function_arity"](RPC_ENTRY)
        except Exception:  # noqa: BLE001 - an artifact from before deploy existed
            raise MulayerError(f"{root} has no {RPC_ENTRY} function (it was compiled before `mulayer "
                               "deploy` existed); recompile it with `mulayer compile`") from None
        step("loaded")
        # RPC hands tensors to the remote as DLTensor handles, and the VM's set_input copies
        # those to its first device; the weights must stay on their own devices, so they go
        # to the remote's tensor cache (which keeps each on the device it was copied to) and
        # the artifact's RPC entry reads them from there.
        stage = "placing the weights on the remote devices"
        update = session.get_function("vm.builtin.tensor_cache.update")
        for index, (weight, device) in enumerate(zip(weights, manifest["weight_devices"])):
            update(f"{WEIGHT_PREFIX}{index}", tvm.runtime.tensor(weight, devices[device]), True)
            cached.append(f"{WEIGHT_PREFIX}{index}")
        vm.set_input(RPC_ENTRY, *local.input_tensors(inputs, devices[0]))
        step("placed")
        stage = "running the model on the remote"
        vm.invoke_stateful(RPC_ENTRY)
        result = vm.get_outputs(RPC_ENTRY)
        results = [result] if hasattr(result, "numpy") else list(result)
        outputs = {name: value.numpy() for name, value in zip(manifest["outputs"], results)}
        step("ran")
        times = []
        if repeat:
            stage = f"timing {repeat} runs on the remote"
            # sync the GPU's queue where there is one (CPU kernels run on the calling thread)
            timer = vm.time_evaluator("invoke_stateful", devices[1] if gpu.device_type != "cpu" else devices[0],
                                      number=1, repeat=int(repeat))
            times = [float(t) for t in timer(RPC_ENTRY).results]
            step("timed")
        stage = "freeing the weights on the remote"
        remove = session.get_function("vm.builtin.tensor_cache.remove")
        while cached:
            remove(cached.pop())
    except MulayerError:
        _forget(session, cached)
        raise
    except Exception as err:  # noqa: BLE001 - TVM raises its own error types for a dropped session
        message = _last_line(err)
        lost = any(word in message.lower() for word in
                   ("shutdown", "socket", "connection", "closed", "broken pipe", "reset by peer", "recv", "send"))
        if lost:
            raise MulayerError(f"the RPC server disconnected while {stage} (TVM: {message}); check that it "
                               "is still running (the phone's RPC app in the foreground, the tracker and "
                               "server up) and deploy again") from None
        _forget(session, cached)
        raise MulayerError(f"the remote failed while {stage}: {message}") from None
    return {"outputs": outputs, "latency": statistics.median(times) if times else None, "times": times,
            "devices": [str(d) for d in devices]}


def _forget(session, names: list) -> None:
    """Best effort: drop our weights from the remote's tensor cache after a failure."""
    try:
        remove = session.get_function("vm.builtin.tensor_cache.remove")
        while names:
            remove(names.pop())
    except Exception:  # noqa: BLE001 - the session may be gone; nothing more to free then
        pass
