"""The two files a predictor is saved in (planning/predictor.py, `Predictor.save`): the compact
zip archive the shipped predictors use (XGBoost UBJSON models, measurements in columns) and
the one JSON file of format 5 (`-o NAME.json`, and every predictor trained before the
archive existed). Both must give the same predictions.

"The same" is bit-identical, not within a tolerance: XGBoost writes a model's float32 values
to JSON as the shortest decimal that reads back to the same float32, and Python writes a
measured time (a float64) as its shortest round-trip repr, so both files hold the same
trees and the same times, and one predictor's arithmetic runs on the same numbers.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tvm_mulayer.base.errors import MulayerError
from tvm_mulayer.base.records import KERNEL_KINDS, config_key, parse_config
from tvm_mulayer.planning.predictor import PREDICTOR_FORMAT, Predictor
from tvm_mulayer.planning.profiler import sampled_configs

from conftest import fast_params

SHIPPED = sorted((Path(__file__).parent.parent / "tvm_mulayer" / "predictors").glob("*.zip"))


def test_every_shipped_predictor_is_a_compact_archive_of_at_most_2_mb():
    assert {path.stem for path in SHIPPED} == {"emeraldrapids-2core+emulated", "znver4-2core+emulated",
                                               "x86-avx512+cuda-sm_90"}
    for path in SHIPPED:
        assert path.stat().st_size <= 2_000_000, path.name
        with zipfile.ZipFile(path) as archive:  # the models in XGBoost's own binary form, nothing pickled
            assert sorted(archive.namelist()) == ["cpu.ubj", "gpu.ubj", "predictor.json"]


def _layer_shapes(predictor: Predictor, measured: int, sampled: int) -> list:
    """`measured` layer shapes the predictor's profile timed (answered from its table) and
    `sampled` new ones near them (answered by its boosters)."""
    keys = sorted({key for table in predictor.measured["cpu"].values() for key in table})
    timed = list({config_key(layer): layer for layer, _ in map(parse_config, keys)}.values())
    chosen = [timed[i] for i in np.random.default_rng(0).choice(len(timed), measured, replace=False)]
    return chosen + sampled_configs(chosen, sampled, seed=1, known=keys)


@pytest.mark.parametrize("path", fast_params(SHIPPED[:1], SHIPPED[1:]), ids=lambda path: path.stem)
def test_the_json_file_predicts_what_the_archive_does(path, tmp_path):
    """A shipped archive saved as JSON (format 5) and loaded again predicts every kernel time
    bit-identically, on shapes profiled and not, on both processors, in every precision,
    alone and concurrent; saved back as an archive, it gives the shipped file's bytes."""
    archived = Predictor.load(path)
    archived.save(tmp_path / "p.json")
    text = (tmp_path / "p.json").read_text()
    assert json.loads(text)["format"] == PREDICTOR_FORMAT
    from_json = Predictor.load(tmp_path / "p.json")
    assert from_json.measured == archived.measured and from_json.meta == archived.meta
    layers = _layer_shapes(archived, 40, 80)
    compared = 0
    for role in ("cpu", "gpu"):
        for precision in archived.precisions(role):
            for concurrent in (False, True):
                table = archived.measured[role].get(KERNEL_KINDS[concurrent], {})
                predicted = sum(config_key(layer, precision) not in table for layer in layers)
                assert predicted >= 80  # the boosters answer most of them
                np.testing.assert_array_equal(from_json.kernel_times(layers, role, concurrent, precision),
                                              archived.kernel_times(layers, role, concurrent, precision))
                compared += len(layers)
    assert compared >= 8 * 120
    for direction in ("h2d", "d2h"):
        assert from_json.copy_time(1 << 20, direction) == archived.copy_time(1 << 20, direction)
    from_json.save(tmp_path / "again.zip")
    assert (tmp_path / "again.zip").read_bytes() == path.read_bytes()


def test_a_predictor_is_saved_by_extension_and_loaded_by_content(tmp_path):
    predictor = Predictor.load(SHIPPED[-1])  # the smallest
    predictor.save(tmp_path / "p.zip")
    predictor.save(tmp_path / "p.json")
    assert (tmp_path / "p.zip").read_bytes()[:2] == b"PK" and (tmp_path / "p.json").read_text()[0] == "{"
    (tmp_path / "archive.json").write_bytes((tmp_path / "p.zip").read_bytes())  # a name that says otherwise
    (tmp_path / "text.predictor").write_bytes((tmp_path / "p.json").read_bytes())
    for name in ("archive.json", "text.predictor"):
        assert Predictor.load(tmp_path / name).measured == predictor.measured


def _archive_without(source: Path, target: Path, member: str) -> None:
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as copy:
        for name in archive.namelist():
            if name != member:
                copy.writestr(name, archive.read(name))


def test_damaged_or_foreign_files_are_refused_in_one_line(tmp_path):
    good = SHIPPED[0].read_bytes()
    (tmp_path / "truncated.zip").write_bytes(good[:len(good) // 2])
    _archive_without(SHIPPED[0], tmp_path / "no-gpu-model.zip", "gpu.ubj")
    _archive_without(SHIPPED[0], tmp_path / "no-tables.zip", "predictor.json")
    (tmp_path / "old.json").write_text(json.dumps({"format": "tvm-mulayer-predictor/4"}))
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "binary.json").write_bytes(bytes(range(256)))
    for name, message in (("missing.zip", "cannot read predictor"), ("truncated.zip", "cannot read predictor"),
                          ("no-gpu-model.zip", "gpu.ubj"), ("no-tables.zip", "predictor.json"),
                          ("old.json", "not a tvm-mulayer predictor.*predictor/4.*mulayer train"),
                          ("list.json", "not a tvm-mulayer predictor"), ("binary.json", "cannot read predictor")):
        with pytest.raises(MulayerError, match=message) as caught:
            Predictor.load(tmp_path / name)
        assert "\n" not in str(caught.value), name
