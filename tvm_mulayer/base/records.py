"""Profile records: the rows `mulayer profile` writes and the predictor trains on.

A row is one measurement: a kernel of a layer *configuration* (the layer one side of a
split computes, in one slice precision) timed alone or with the other processor busy, an
input conversion, or a host<->device copy. Its `config` column is the configuration key
(`config_key`), which the predictor also uses to look up measured kernels.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import asdict
from pathlib import Path

from .errors import MulayerError
from .layers import Layer
from .quantization import CPU_PRECISIONS, GPU_PRECISIONS

KERNEL_KINDS = {False: "kernel", True: "kernel-concurrent"}
CSV_FIELDS = ("kind", "role", "processor", "config", "bytes", "seconds", "device", "tvm", "recorded")
FLOAT32 = "fp32"


def config_key(layer: Layer, precision: str = FLOAT32) -> str:
    """The CSV/predictor key of a layer configuration computing in `precision`. float32
    keys have no precision field, so they are the keys older profiles wrote."""
    fields = asdict(layer)
    fields.pop("name")
    if precision != FLOAT32:
        fields["precision"] = precision
    return json.dumps(fields, sort_keys=True)


def parse_config(key: str) -> tuple[Layer, str]:
    """(layer, precision) of a configuration key; a key without a precision is float32."""
    fields = json.loads(key)
    precision = fields.pop("precision", FLOAT32)
    if precision not in {*CPU_PRECISIONS, *GPU_PRECISIONS}:
        raise MulayerError(f"profile configuration has precision {precision!r}; "
                           f"known: {', '.join(sorted({*CPU_PRECISIONS, *GPU_PRECISIONS}))}")
    return Layer(name="", **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}), precision


def layer_from_key(key: str) -> Layer:
    return parse_config(key)[0]


def configs_from_file(path) -> list[Layer]:
    """The layer configurations of a JSON list of configuration keys (as a profile's config
    column holds them; a key's precision is dropped, the profiler measures each layer in
    every precision it is asked for), each once, in the file's order."""
    try:
        keys = json.loads(Path(path).read_text())
        layers = [layer_from_key(key) for key in keys]
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise MulayerError(f"cannot read configurations from {path}: {err}; give a JSON list of configuration keys "
                           "(a profile CSV's config column)") from None
    return list({config_key(layer): layer for layer in layers}.values())


def read_rows(path: Path) -> list[dict]:
    """The rows of a profile (.csv, or .csv.gz: profiles compress ~15x, which keeps the
    ones kept in a repository small)."""
    path = Path(path)
    if not path.is_file():  # never read as empty: a mistyped path would drop a profile silently
        raise MulayerError(f"no such profile: {path}")
    with (gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")) as handle:
        return list(csv.DictReader(handle))


def read_profiles(paths) -> list[dict]:
    """The rows of several profiles, one after the other (every missing path named at once)."""
    missing = [str(path) for path in paths if not Path(path).is_file()]
    if missing:
        raise MulayerError(f"no such profile: {', '.join(missing)}")
    return [row for path in paths for row in read_rows(path)]
