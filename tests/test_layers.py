"""The package's layering: lower layers never import higher ones, no cycles, no private names across modules."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_uspmie

PACKAGE = Path(napari_uspmie.__file__).parent
#: each subpackage and what it may import from the package (besides itself and ``errors``)
ALLOWED = {
    "metric": set(),
    "models": {"metric"},
    "io": {"metric"},
    "inference": {"metric", "models", "io"},
    "training": {"metric", "models", "io", "inference"},
    "bundle": {"metric", "models", "io", "inference", "training"},
    "plugin": {"metric", "models", "io", "inference", "bundle"},
    "serving": {"metric", "models", "io", "inference", "bundle"},
    "cli": {"metric", "models", "io", "inference", "training", "bundle", "research"},
    "research": {"metric", "models", "io", "inference", "training", "bundle"},
}
#: the one product module that reaches research code: napari sample data show the demo's subject
RESEARCH_FOR_SAMPLES = "napari_uspmie.plugin.sample_data"


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def _imports(tree: ast.Module, top_level_only: bool) -> list[tuple[str, list[str]]]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("napari_uspmie"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("napari_uspmie")]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for name, tree in _modules().items():
        layer = _layer(name)
        if layer is None:
            continue
        for target, _ in _imports(tree, top_level_only=False):
            other = _layer(target)
            if other is None or other == layer or other in ALLOWED[layer]:
                continue
            if name == RESEARCH_FOR_SAMPLES and other == "research":
                continue
            wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_no_import_cycles_at_module_level():
    modules = _modules()
    graph = {
        name: {t for t, _ in _imports(tree, top_level_only=True) if t in modules} for name, tree in modules.items()
    }
    for package in [n for n in modules if (PACKAGE / Path(*n.split(".")[1:]) / "__init__.py").exists()]:
        graph[package].discard(package)
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_private_name_is_imported_from_another_module():
    wrong = [
        f"{name} imports {target}.{alias}"
        for name, tree in _modules().items()
        for target, names in _imports(tree, top_level_only=False)
        for alias in names
        if alias.startswith("_") and not alias.startswith("__")
    ]
    assert wrong == []


def test_every_module_is_under_400_lines():
    long = [str(p) for p in PACKAGE.rglob("*.py") if len(p.read_text().splitlines()) > 400]
    assert long == []
