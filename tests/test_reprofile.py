"""scripts/reprofile.py merge / drop: the rows of the changed kernels, and only those, are
replaced by fresh ones (or removed); the drift of unchanged kernels measured alongside and the
changed kernels' speedup are reported; a fresh profile lacking a changed kernel is refused."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tvm_mulayer.planning.profiler import zoo_configs
from tvm_mulayer.base.records import CSV_FIELDS, KERNEL_KINDS, config_key

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "reprofile.py"
A, B, C = (config_key(layer) for layer in zoo_configs(["alexnet"], fractions=(1.0,), image_size=67, width=0.1)[:3])
CONCURRENT = KERNEL_KINDS[True]


def _write(path: Path, rows) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({"kind": kind, "role": role, "config": config, "seconds": seconds, "processor": "p",
                          "bytes": "", "device": "d", "tvm": "0", "recorded": stamp}
                         for kind, role, config, seconds, stamp in rows)
    return path


def _rows(path: Path) -> list:
    with open(path, newline="") as handle:
        return [(r["kind"], r["role"], r["config"], float(r["seconds"]), r["recorded"]) for r in csv.DictReader(handle)]


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=False)


@pytest.fixture
def files(tmp_path):
    old = _write(tmp_path / "old.csv", [
        ("kernel", "cpu", A, 4e-3, "old"), ("kernel", "cpu", A, 5e-3, "old"), (CONCURRENT, "cpu", A, 6e-3, "old"),
        ("kernel", "gpu", A, 1e-3, "old"), ("kernel", "cpu", B, 2e-3, "old"), ("kernel", "cpu", C, 8e-3, "old"),
        ("copy", "gpu", "h2d", 1e-6, "old")])
    fresh = _write(tmp_path / "fresh.csv", [
        ("kernel", "cpu", A, 1e-3, "new"), ("kernel", "cpu", A, 2e-3, "new"), ("kernel", "gpu", A, 9e-4, "new"),
        ("kernel", "cpu", B, 1.8e-3, "new")])
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([["cpu", A]]))  # only the CPU kernel of layer a changed
    return tmp_path, old, fresh, keys


def test_merge_replaces_exactly_the_changed_kernels_rows_and_reports_drift_and_speedup(files):
    tmp, old, fresh, keys = files
    result = _run("merge", old, fresh, "--keys", keys, "-o", tmp / "out.csv")
    assert result.returncode == 0, result.stderr
    out = _rows(tmp / "out.csv")
    # a's CPU rows (both kinds) are the fresh ones; a's GPU row, b, c and the copy stay as they were
    assert sorted(r for r in out if (r[1], r[2]) == ("cpu", A)) == [("kernel", "cpu", A, 1e-3, "new"),
                                                                    ("kernel", "cpu", A, 2e-3, "new")]
    assert [r for r in out if (r[1], r[2]) != ("cpu", A)] == [r for r in _rows(old) if (r[1], r[2]) != ("cpu", A)]
    # drift: unchanged kernels both files hold (cpu b 1.8/2.0, gpu a 0.9/1.0); speedup: cpu a fastest 4 / 1
    assert "unchanged cpu fp32 kernels (1): fresh / old median 0.900" in result.stdout
    assert "unchanged gpu fp32 kernels (1): fresh / old median 0.900" in result.stdout
    assert "changed cpu fp32 kernels (1): old / fresh median 4.00x" in result.stdout


def test_merge_refuses_a_fresh_profile_without_a_changed_kernel_and_drop_removes_them(files):
    tmp, old, fresh, keys = files
    keys.write_text(json.dumps([["cpu", A], ["cpu", C]]))  # c was not measured again
    result = _run("merge", old, fresh, "--keys", keys, "-o", tmp / "out.csv")
    assert result.returncode != 0 and "lacks 1 of the 2 changed kernels" in result.stderr
    assert not (tmp / "out.csv").exists()
    result = _run("drop", old, "--keys", keys, "-o", tmp / "dropped.csv")
    assert result.returncode == 0, result.stderr
    assert _rows(tmp / "dropped.csv") == [r for r in _rows(old) if (r[1], r[2]) not in {("cpu", A), ("cpu", C)}]


def test_a_missing_profile_is_named_instead_of_read_as_empty(files):
    """A mistyped profile path once read as an empty profile: `drop` wrote an empty one."""
    tmp, _, _, keys = files
    result = _run("drop", tmp / "typo.csv", "--keys", keys, "-o", tmp / "dropped.csv")
    assert result.returncode != 0
    assert result.stderr.strip() == f"reprofile.py: error: no such profile: {tmp / 'typo.csv'}"
    assert not (tmp / "dropped.csv").exists()
