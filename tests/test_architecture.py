"""The package's layers import only downward, without cycles, and no private name crosses a module.

Layers, bottom to top: base (errors, plan, layers, processors, quantization, zoo, profile
records) <- runtime (executable, devices, inputs, deploy, cross) <- compiler (frontend,
lowering, build, calibration, and the top-level passes/ and schedules/ packages) <- planning
(profiler, predictor, partitioner, timeline, report) <- the API and the CLI. Imports inside
functions count as much as those at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder -> the package it installs as (pyproject's package-dir)
PACKAGES = {"tvm_mulayer": "tvm_mulayer", "passes": "tvm_mulayer.passes", "schedules": "tvm_mulayer.schedules"}
LAYERS = {"base": 0, "runtime": 1, "compiler": 2, "passes": 2, "schedules": 2, "planning": 3}
TOP = 4  # tvm_mulayer itself (__init__), api, cli


def _modules() -> dict:
    """Module name -> (path, is_package) of every module of the installed package."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join([package, *parts])] = (path, is_package)
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], TOP) if len(parts) > 1 else TOP


def _imports(module: str) -> list:
    """(imported module, imported names, line) of every import in `module` of the package."""
    path, is_package = MODULES[module]
    here = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [alias.name for alias in node.names]
            # `from package import module` imports that module
            submodules = [f"{base}.{name}" for name in names if f"{base}.{name}" in MODULES]
            found += [(sub, [], node.lineno) for sub in submodules]
            found.append((base, [n for n in names if f"{base}.{n}" not in MODULES], node.lineno))
    return [(target, names, line) for target, names, line in found if target in MODULES and target != module]


GRAPH = {module: _imports(module) for module in MODULES}


def test_the_package_has_every_layer():
    assert {module.split(".")[1] for module in MODULES if "." in module} >= set(LAYERS) | {"api", "cli"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_only_downward(module):
    upward = [f"line {line}: {target}" for target, _, line in GRAPH[module] if _layer(target) > _layer(module)]
    assert not upward, f"{module} (layer {_layer(module)}) imports from higher layers: {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_a_module(module):
    crossing = [f"line {line}: {target}.{name}" for target, names, line in GRAPH[module] for name in names
                if name.startswith("_") and not name.startswith("__") and target != module]
    crossing += [f"line {line}: {target}" for target, _, line in GRAPH[module]
                 if any(part.startswith("_") and not part.startswith("__") for part in target.split("."))]
    assert not crossing, f"{module} imports private names of other modules: {crossing}"


def test_no_import_cycle():
    """Depth-first search for a back edge among the package's modules (a package's
    __init__ importing its own submodules is how packages re-export, not a cycle)."""
    edges = {module: sorted({target for target, _, _ in GRAPH[module]
                             if not (MODULES[module][1] and target.startswith(module + "."))})
             for module in MODULES}
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in edges[module]:
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module)


def test_scripts_use_no_private_name_of_the_package():
    """Scripts use the package's public names only: neither `from tvm_mulayer... import _x`
    nor `module._x` on a module or object they imported from it."""
    crossing = []
    for path in sorted((ROOT / "scripts").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tvm_mulayer"):
                imported.update(alias.asname or alias.name for alias in node.names)
                crossing += [f"{path.name}:{node.lineno}: {node.module}.{alias.name}" for alias in node.names
                             if alias.name.startswith("_") and not alias.name.startswith("__")]
            elif isinstance(node, ast.Import):
                imported.update((alias.asname or alias.name).split(".")[0] for alias in node.names
                                if alias.name.startswith("tvm_mulayer"))
        crossing += [f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                     and node.value.id in imported and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not crossing, crossing
