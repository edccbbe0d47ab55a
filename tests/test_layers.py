"""The layout's layers, checked on the source: no import runs upward and none runs in a circle.

Read from every module's ``import`` statements (``ast``; module-level and function-level alike, so a lazy import
cannot hide a cycle). Layers, bottom up:

| layer | modules | may import (besides the standard library) |
|---|---|---|
| math | ``vipaint/*.py`` but ``atomic``, ``resources`` | torch, each other |
| utilities | ``vipaint.atomic``, ``vipaint.resources`` | anything below the packages |
| priors, evaluation | ``vipaint.priors``, ``vipaint.evaluation`` | math, utilities, each other |
| data | ``datamodules`` | utilities |
| training | ``vipaint.training``, ``amortized`` | the layers above in this table, each other |
| jobs | ``vipaint.jobs`` | all of the above |
| benches | ``bench`` | all of the above |
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vipaint", "amortized", "datamodules", "bench")
UTILITIES = {"vipaint.atomic", "vipaint.resources"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names), at any depth of its code."""
    name, out = _module(path), set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + [node.module] if node.module else base)
                # ``from . import x``: x may be a module of that package.
                out.update(f"{target}.{a.name}" if not node.module else target for a in node.names)
            else:
                out.add(node.module)
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    mods = {_module(p) for p in files}

    def resolve(target: str) -> str | None:   # the project module an import names (a package or a module)
        while target and target not in mods:
            target = target.rpartition(".")[0]
        return target or None

    return {_module(p): {m for t in _imports(p) if (m := resolve(t)) and m != _module(p)} for p in files}


def _layer(mod: str) -> str:
    if mod.startswith("bench"):
        return "bench"
    if mod.startswith("vipaint.jobs"):
        return "jobs"
    if mod.startswith(("vipaint.training", "amortized")):
        return "training"
    if mod.startswith("datamodules"):
        return "data"
    if mod.startswith(("vipaint.priors", "vipaint.evaluation")):
        return "priors"
    if mod in UTILITIES:
        return "utilities"
    return "math"


ALLOWED = {"math": {"math"}, "utilities": {"utilities"}, "priors": {"math", "utilities", "priors"},
           "data": {"utilities", "data"}, "training": {"math", "utilities", "priors", "training"},
           "jobs": {"math", "utilities", "priors", "data", "training", "jobs"},
           "bench": {"math", "utilities", "priors", "data", "training", "jobs", "bench"}}


def test_no_import_runs_upward():
    graph = _graph()
    assert "vipaint.schedule" in graph and "vipaint.jobs.api" in graph   # the walk found the project
    wrong = sorted(f"{m} ({_layer(m)}) imports {t} ({_layer(t)})" for m, ts in graph.items() for t in ts
                   if m != "vipaint" and _layer(t) not in ALLOWED[_layer(m)])
    # The package's __init__ re-exports the public API from the jobs layer, lazily (PEP 562 __getattr__).
    assert not wrong, "imports that run upward:\n" + "\n".join(wrong)


def test_math_modules_import_only_torch_and_the_standard_library():
    std = set(sys.stdlib_module_names) | {"__future__"}
    wrong = []
    for path in (ROOT / "vipaint").glob("*.py"):
        mod = _module(path)
        if path.name == "__init__.py" or mod in UTILITIES:
            continue
        for target in _imports(path):
            top = target.split(".")[0]
            if top not in std and top not in ("torch", "vipaint"):
                wrong.append(f"{mod} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle():
    graph = {m: ts - {"vipaint"} for m, ts in _graph().items() if m != "vipaint"}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
