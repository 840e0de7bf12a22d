"""The package's folders are its layers (entrypoint/__init__.py): imports only go down, and
no module imports itself back through others. Read from the source with `ast`, type-only
imports included, since a circle through them is the same tangle to a reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "entrypoint"

# Each part of the package and its floor; a module may import its own part and any part on
# a lower floor.
FLOORS = {
    "errors": 0,
    "cancel": 1,
    "github": 1,
    "engine": 2,
    "registry": 2,
    "build": 3,
    "checks": 3,
    "inputs": 4,
    "commands": 5,
    "__main__": 6,
}
# Imports between parts on one floor that the layering allows, with the reason.
SIDEWAYS = {
    ("engine", "registry"): "a push names the registry login's type",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == "entrypoint":
                    # `from entrypoint.x import y`: y is a module of x, or a name in x.
                    targets |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("entrypoint.")}
        found[name] = targets
    modules = set(found)
    return {name: {t for t in targets if t in modules and t != name} for name, targets in found.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_the_package_has_a_floor() -> None:
    parts = {_part(m) for m in _imports()} - {"__init__"}
    assert parts == set(FLOORS), "a new folder or module at the top needs its floor in FLOORS"


def test_imports_only_go_down() -> None:
    wrong = []
    for module, targets in _imports().items():
        here = _part(module)
        if here == "__init__":
            continue
        for target in targets:
            there = _part(target)
            if there == "__init__" or there == here:
                continue
            if FLOORS[there] < FLOORS[here] or (here, there) in SIDEWAYS:
                continue
            wrong.append(f"{module} (floor {FLOORS[here]}) imports {target} (floor {FLOORS[there]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles() -> None:
    graph = _imports()
    circles: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


FOLDERS = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_folder_says_what_it_holds_and_what_it_may_import(folder: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
    assert doc, f"entrypoint/{folder}/__init__.py has no docstring"
    assert "import" in doc, f"entrypoint/{folder}/__init__.py does not say what it may import"
