"""The package's modules import each other in one direction only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "flask_prancer_session"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, *, typing_too: bool) -> set[str]:
    """Return the package modules ``path`` imports, at run time (and in
    ``TYPE_CHECKING`` blocks if ``typing_too``), lazily imported ones included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node) and not typing_too:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("flask_prancer_session"):
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("flask_prancer_session"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return {module for module in found if module in MODULES}


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle of ``graph``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


@pytest.mark.parametrize("typing_too", [False, True], ids=["run time", "with type hints"])
def test_the_package_has_no_import_cycle(typing_too: bool) -> None:
    # The package's __init__ re-exports everything, so it is left out: no
    # module of the package imports it.
    graph = {
        name: imports_of(path, typing_too=typing_too) - {"flask_prancer_session"}
        for name, path in MODULES.items()
        if name != "flask_prancer_session"
    }
    assert cycle_in(graph) is None


def test_no_module_imports_the_package_s_front() -> None:
    importers = [
        name
        for name, path in MODULES.items()
        if name != "flask_prancer_session"
        and "flask_prancer_session" in imports_of(path, typing_too=True)
    ]
    assert importers == []


def test_the_drivers_never_import_the_session_layer() -> None:
    # State and store sit below the session, its interface and the extension.
    upper = {
        "flask_prancer_session.interface",
        "flask_prancer_session.session",
        "flask_prancer_session.extension",
        "flask_prancer_session.cli",
        "flask_prancer_session.lifetime",
    }
    for name, path in MODULES.items():
        if name.startswith(("flask_prancer_session.state", "flask_prancer_session.store")):
            assert imports_of(path, typing_too=True).isdisjoint(upper), name
