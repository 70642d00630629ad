#!/usr/bin/env python3
"""Keep a profile true to the kernels after a schedule change: find the rows whose kernels
changed, and put fresh measurements of those (and only those) in their place.

A profile row times the kernel the schedule rules built when it was measured. When a rule
changes (another form, other tiles), the predictor would answer for the new kernel with the
old one's time. The predictor's schedule features (`KernelFeatures`: rule, tiles, tasks,
waste) say which kernel a configuration gets, so a configuration whose features differ
between two revisions of the rules has a new kernel.

  changed  the kernels ([role, config key]) of a profile whose features differ between the
           rules of git revision REV and this checkout, for one predictor's processors (its
           JSON gives targets and thread pool), to KEYS.json; and to CONFIGS.json the
           configuration keys to measure again: those, and --reference unchanged ones (drawn
           at random) by which `merge` tells how far the machine drifted in between:
             python scripts/reprofile.py changed PROFILE.csv... --predictor P.json --since REV \
                 -o KEYS.json --configs CONFIGS.json
           then `mulayer profile --configs CONFIGS.json -o FRESH.csv` (or `gpu_host_run.py pack
           --profile --profile-configs CONFIGS.json` for the GPU host) on the same machine.
  merge    PROFILE.csv with the rows of the changed kernels replaced by those of FRESH.csv,
           written to OUT; reports per role and precision how the kernels that did not change
           compare (fastest fresh / fastest old: the machine's drift) and how the changed ones
           did (fastest old / fastest fresh: the change's speedup, drift included):
             python scripts/reprofile.py merge PROFILE.csv FRESH.csv --keys KEYS.json -o OUT.csv
  drop     PROFILE.csv without the changed kernels' rows, for a machine that cannot measure
           again (the predictor then predicts those kernels from the others):
             python scripts/reprofile.py drop PROFILE.csv --keys KEYS.json -o OUT.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tvm_mulayer.base.errors import reported
from tvm_mulayer.planning.predictor import fastest_rows
from tvm_mulayer.base.records import (CSV_FIELDS, KERNEL_KINDS, config_key, layer_from_key, parse_config, read_profiles,
                                      read_rows)

ROOT = Path(__file__).resolve().parent.parent


def features_of(keys: list, predictor: str, source: Path) -> dict:
    """"role|config" -> schedule features of the kernels `keys` ([role, config key]), with the
    rules of the checkout at `source` (run in a subprocess, so that each revision's modules
    are imported fresh)."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(source)!r})\n"
        "from tvm_mulayer.planning.predictor import KernelFeatures\n"
        "from tvm_mulayer.base.records import parse_config\n"
        "keys, meta = json.loads(sys.stdin.read()), json.load(open(sys.argv[1]))['meta']\n"
        "features = {role: KernelFeatures(meta[role + '_target'], meta['cpu_threads'],\n"
        "                                 meta.get('fp32_weights_prepacked', False)) for role in ('cpu', 'gpu')}\n"
        "print(json.dumps({role + '|' + key: features[role](parse_config(key)[0], False, parse_config(key)[1])\n"
        "                  for role, key in keys}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(Path(predictor).resolve())], input=json.dumps(keys),
                         check=True, capture_output=True, text=True, cwd="/")
    return json.loads(out.stdout)


def changed(args) -> None:
    kernels = sorted({(row["role"], row["config"]) for row in read_profiles(args.profiles)
                      if row["kind"] in KERNEL_KINDS.values()})
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.since],
                       check=True, capture_output=True)
        try:
            old = features_of(kernels, args.predictor, old_tree)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=True)
    new = features_of(kernels, args.predictor, ROOT)
    keys = sorted(key for key in new if old.get(key) != new[key])
    Path(args.output).write_text(json.dumps([key.split("|", 1) for key in keys], indent=0))
    # the layers to measure: each changed kernel's, then reference layers none of whose kernels changed
    layer_key = lambda key: config_key(layer_from_key(key.split("|", 1)[1]))  # noqa: E731  (precision dropped)
    layers = {layer_key(key): None for key in keys}
    unchanged = sorted({layer_key(key) for key in new} - set(layers))
    rng = np.random.default_rng(0)
    reference = [unchanged[i] for i in rng.permutation(len(unchanged))[:args.reference]]
    Path(args.configs).write_text(json.dumps(list(layers) + reference, indent=0))
    print(f"{len(keys)} of {len(new)} (role, configuration) kernels changed since {args.since}: {args.output}; "
          f"their {len(layers)} layers and {len(reference)} reference layers: {args.configs}")


def _read_keys(path) -> set:
    """The changed kernels of a `changed` output: {(role, config key)}."""
    return {tuple(key) for key in json.loads(Path(path).read_text())}


def _rewrite(args, keys: set, fresh: list[dict]) -> list[dict]:
    """Write args.profile less the rows of the kernels `keys`, plus those of them `fresh`
    holds, to args.output; returns the profile's rows."""
    old = read_rows(Path(args.profile))
    replaced = lambda row: row["kind"] in KERNEL_KINDS.values() and (row["role"], row["config"]) in keys  # noqa: E731
    kept = [row for row in old if not replaced(row)]
    added = [row for row in fresh if replaced(row)]
    with open(args.output, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(kept + added)
    print(f"{args.output}: {len(old) - len(kept)} rows of {len(keys)} changed kernels removed, {len(added)} added")
    return old


def drop(args) -> None:
    _rewrite(args, _read_keys(args.keys), [])


def merge(args) -> None:
    fresh = read_rows(Path(args.fresh))
    keys = _read_keys(args.keys)
    missing = keys - {(row["role"], row["config"]) for row in fresh if row["kind"] == "kernel"}
    if missing:
        sys.exit(f"{args.fresh} lacks {len(missing)} of the {len(keys)} changed kernels (e.g. {sorted(missing)[0]}); "
                 "measure them first")
    old = _rewrite(args, keys, fresh)
    # (role, config) -> the fastest kernel timing (alone) in each file
    before, after = ({(role, config): seconds for (kind, role, config), seconds in fastest_rows(rows).items()
                      if kind == KERNEL_KINDS[False]} for rows in (old, fresh))
    both = set(before) & set(after)
    for title, members, ratio in (("unchanged", both - keys, lambda key: after[key] / before[key]),
                                  ("changed", both & keys, lambda key: before[key] / after[key])):
        by_kind: dict = {}
        for key in sorted(members):
            by_kind.setdefault((key[0], parse_config(key[1])[1]), []).append(ratio(key))
        for (role, precision), ratios in sorted(by_kind.items()):
            print(f"{title} {role} {precision} kernels ({len(ratios)}): "
                  + (f"fresh / old median {np.median(ratios):.3f}, quartiles {np.percentile(ratios, 25):.3f}-"
                     f"{np.percentile(ratios, 75):.3f}" if title == "unchanged" else
                     f"old / fresh median {np.median(ratios):.2f}x, geometric mean "
                     f"{np.exp(np.mean(np.log(ratios))):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("changed", help="configurations whose kernels differ between a revision and this checkout")
    p.add_argument("profiles", nargs="+")
    p.add_argument("--predictor", required=True, help="a predictor JSON of the profile's machine (targets, threads)")
    p.add_argument("--since", required=True, help="git revision of the rules the profile was measured with")
    p.add_argument("-o", "--output", required=True, help="the changed kernels, JSON")
    p.add_argument("--configs", required=True, help="the configuration keys to measure again, JSON")
    p.add_argument("--reference", type=int, default=32, help="unchanged layers to measure again for the drift")
    p.set_defaults(run=changed)
    p = sub.add_parser("merge", help="replace the changed kernels' rows with fresh ones")
    p.add_argument("profile")
    p.add_argument("fresh")
    p.add_argument("--keys", required=True, help="the `changed` output")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=merge)
    p = sub.add_parser("drop", help="remove the changed kernels' rows (a machine that cannot measure them again)")
    p.add_argument("profile")
    p.add_argument("--keys", required=True, help="the `changed` output")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=drop)
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    args.run(args)


if __name__ == "__main__":
    sys.exit(reported("reprofile.py", main))
