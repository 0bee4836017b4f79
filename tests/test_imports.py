"""The package's import graph: no cycles, and each part imports only the parts below it.

The graph is read from the source (every ``import`` statement, module level or
inside a function, plus the package ``__init__`` files an import runs), so it
holds whatever a run could import, without importing anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gliofit

PACKAGE = Path(gliofit.__file__).parent

LAYERS = ["_version", "common", "growth", "simulations_db", "segmentation", "inverse", "", "pipelines", "cli"]
"""Parts from the bottom up (``""`` is the top-level notebook API); a part imports only parts before it."""


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` within gliofit, including the package ``__init__`` s an import runs."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names if a.name.startswith("gliofit")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gliofit"):
                targets |= {resolve(f"{node.module}.{a.name}") for a in node.names}
        own = set(_ancestors(name)) | {name}
        for t in list(targets):
            if t is not None:
                targets |= {a for a in _ancestors(t) if a not in own}
        graph[name] = {t for t in targets if t is not None and t not in own}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle():
    assert _cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_parts_import_only_parts_below_them():
    wrong = sorted(
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        for b in targets
        if LAYERS.index(_part(b)) > LAYERS.index(_part(a))
    )
    assert wrong == []


def test_every_part_has_a_layer():
    assert {_part(m) for m in import_graph()} <= set(LAYERS)


def test_segmentation_does_not_import_inverse():
    graph = import_graph()
    assert not [t for m, ts in graph.items() if _part(m) == "segmentation" for t in ts if _part(t) == "inverse"]


def test_nibabel_is_imported_only_through_common_nifti():
    """``gliofit.common.nifti`` imports nibabel without pydicom (start-up time); a module importing nibabel
    itself could come first and bring pydicom back."""
    direct = []
    for name, path in _modules().items():
        if name == "gliofit.common.nifti":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "nibabel" or n.startswith("nibabel.") for n in names):
                direct.append(f"{name}:{node.lineno}")
    assert direct == []


def test_nifti_leaves_pydicom_unloaded_and_importable():
    import subprocess
    import sys

    code = (
        "import sys, gliofit.common.nifti\n"
        "assert 'pydicom' not in sys.modules, 'nibabel brought pydicom'\n"
        "import pydicom\n"
        "print(pydicom.dcmread.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "dcmread"
