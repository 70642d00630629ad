"""TVM RPC servers and trackers on 127.0.0.1 for the tests (`tests/test_rpc.py`,
`tests/test_opencl.py`): each in a child process of its own process group, killed in teardown;
every wait is bounded."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time

START_TIMEOUT = 60  # seconds for a server or tracker process to bind its port

# Runs TVM's own RPC server / tracker state in this child process (what `python -m
# tvm.exec.rpc_server` runs inside a popen worker), prints the bound port, serves until killed.
_SERVE = r"""
import sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "tracker":
    from tvm.rpc.tracker import PopenTrackerServerState as State
    state = State(host, port, port + 200, silent=True)
else:
    from tvm.rpc.server import PopenRPCServerState as State
    tracker = (sys.argv[4], int(sys.argv[5])) if len(sys.argv) > 5 else None
    state = State(host, port, port + 200, tracker_addr=tracker, key=sys.argv[6] if len(sys.argv) > 6 else "",
                  silent=True)
print("PORT", state.port, flush=True)
state.thread.join()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """A TVM RPC server or tracker in a child process group on 127.0.0.1 (`env`: variables to
    set in it, e.g. to hide a device from its runtime)."""

    def __init__(self, kind: str, *extra, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, kind, "127.0.0.1", str(free_port()), *map(str, extra)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(b"PORT"):
                    self.port = int(line.split()[1])
                    self.address = f"127.0.0.1:{self.port}"
                    return
                if not line:
                    break
        self.stop()
        raise RuntimeError(f"the TVM RPC {kind} did not start within {START_TIMEOUT} s")

    def stop(self) -> None:
        """Kill the process group (the server forks one child per session)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def wait_registered(tracker: Served, key: str, timeout: float = 30) -> None:
    import tvm.rpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session = tvm.rpc.connect_tracker("127.0.0.1", tracker.port)
        try:
            keys = [info["key"] for info in session.summary()["server_info"]]
        finally:
            session.close()
        if f"server:{key}" in keys:
            return
        time.sleep(0.2)
    raise RuntimeError(f"no server registered under {key!r} within {timeout} s")
