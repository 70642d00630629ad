"""Input data for a run: seeded random arrays, or .npy files named on the command line."""

from __future__ import annotations

import numpy as np

from ..base.errors import MulayerError


def random_inputs(inputs: dict, seed: int = 0) -> dict:
    """Seeded standard-normal data for each input (what `mulayer run` uses with no --input);
    `inputs` maps name -> (shape, dtype)."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, (shape, dtype) in inputs.items()}


def read_inputs(items, input_names) -> dict | None:
    """name -> array from `--input` items ("NAME=FILE.npy", or just "FILE.npy" for a model
    with one input named in `input_names`); None when there are none."""
    if not items:
        return None
    names = sorted(input_names)
    inputs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            if len(names) != 1:
                raise MulayerError(f"--input {item}: the model has inputs {names}; write --input NAME=FILE.npy")
            name, path = names[0], item
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise MulayerError(f"--input {item}: cannot read {path} as a .npy array ({err})") from None
    return inputs
