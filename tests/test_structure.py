"""Package structure: no import cycles between atari_dt modules.

The graph is read from the sources with ``ast``: every ``import`` / ``from ... import`` of an
atari_dt module, at module level and inside functions (an import inside a function hides a
cycle from Python but not from a reader), except under ``if TYPE_CHECKING:``. ``atari_dt/__init__``
is left out: it only re-exports, lazily. ``from package import Name`` where a sub-package's
``__getattr__`` loads ``Name`` lazily points at the module that defines it, so a module may
import its own package's lazy exports without a false cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "atari_dt"


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file (a package is its ``__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, str | None]]:
    """``(module imported from, name or None)`` for every import outside ``TYPE_CHECKING``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            yield from ((base, alias.name) for alias in node.names)


def _walk_runtime(tree: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` that skips the bodies of ``if TYPE_CHECKING:`` (their ``else`` runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _lazy_exports(tree: ast.Module, module: str, modules: dict[str, Path]) -> dict[str, set[str]]:
    """Names a package's module-level ``__getattr__`` loads -> the modules it imports for them
    (``if name == "X":`` / ``if name in (...):`` branches; anything else counts for every name)."""
    lazy: dict[str, set[str]] = {}
    for function in tree.body:
        if not (isinstance(function, ast.FunctionDef) and function.name == "__getattr__"):
            continue
        for branch in (n for n in ast.walk(function) if isinstance(n, ast.If)):
            names = _compared_names(branch.test)
            found = (
                _resolve(base, name, modules)
                for body in branch.body
                for base, name in _imports(body, module, is_package=True)
            )
            targets = {m for m in found if m is not None}
            for name in names:
                lazy.setdefault(name, set()).update(targets)
    return lazy


def _compared_names(test: ast.expr) -> list[str]:
    if isinstance(test, ast.Compare) and len(test.comparators) == 1:
        value = test.comparators[0]
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return [value.value]
        if isinstance(value, ast.Tuple | ast.List | ast.Set):
            return [e.value for e in value.elts if isinstance(e, ast.Constant)]
    return []


def _resolve(base: str, name: str | None, modules: dict[str, Path]) -> str | None:
    """The atari_dt module an import refers to (``from a.b import c`` is ``a.b.c`` when that
    is a module), or None for other packages."""
    if name is not None and f"{base}.{name}" in modules:
        return f"{base}.{name}"
    while base and base not in modules:
        base = base.rpartition(".")[0]
    return base or None


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the atari_dt modules it imports (``atari_dt`` itself left out)."""
    modules = module_files(root)
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in modules.items()}
    lazy = {
        name: _lazy_exports(tree, name, modules)
        for name, tree in trees.items()
        if modules[name].name == "__init__.py"
    }
    graph: dict[str, set[str]] = {}
    for name, tree in trees.items():
        if name == root.name:
            continue
        is_package = modules[name].name == "__init__.py"
        edges = set()
        for base, imported in _imports(tree, name, is_package):
            target = _resolve(base, imported, modules)
            if target in lazy and imported in lazy[target]:
                edges |= lazy[target][imported]  # the module behind a lazy export
            elif target is not None:
                edges.add(target)
        if is_package:  # a package's lazy loads count only for the names that ask for them
            lazy_targets = set().union(*lazy[name].values()) if lazy[name] else set()
            edges -= lazy_targets - _eager_imports(tree, name, modules)
        graph[name] = edges - {name, root.name}
    return graph


def _eager_imports(tree: ast.Module, module: str, modules: dict[str, Path]) -> set[str]:
    """What a package ``__init__`` imports outside its ``__getattr__``."""
    body = [
        n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")
    ]
    found = (_resolve(b, n, modules) for node in body for b, n in _imports(node, module, True))
    return {m for m in found if m is not None}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions() -> None:
    """Imports inside functions are edges (they hid the cycles this test guards against)."""
    graph = import_graph()
    assert "atari_dt.commands.data" in graph["atari_dt.commands"]  # inside run_command
    assert "atari_dt.model.checkpoint" in graph["atari_dt.model.hooked_dt"]


def test_find_cycle_reports_the_cycle() -> None:
    """The checker itself: a cycle is found and named in order; a DAG has none."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_lazy_exports_point_at_their_module(tmp_path: Path) -> None:
    """``from pkg import Name`` with ``Name`` loaded by ``pkg.__getattr__`` is an edge to the
    module defining it, not to everything the package loads lazily."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "def __getattr__(name):\n"
        "    if name == 'A':\n        from pkg.a import A\n        return A\n"
        "    if name in ('B', 'C'):\n        from pkg.b import B\n        return B\n"
    )
    (package / "a.py").write_text("from pkg import B\nA = 1\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\nB = 2\n"
    )
    graph = import_graph(package)
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": set()}


def test_no_import_cycles() -> None:
    """No module of atari_dt imports itself back through others, even lazily."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_config_machinery_imports_no_stage() -> None:
    """``atari_dt.config`` is only the YAML machinery: reading one stage's config (e.g. a
    checkpoint's model config) loads no other stage's."""
    graph = import_graph()
    assert graph["atari_dt.config"] <= {"atari_dt.errors"}
    reachable, todo = set(), ["atari_dt.model.checkpoint"]
    while todo:
        for nxt in graph[todo.pop()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    assert not {m for m in reachable if m.startswith(("atari_dt.envs", "atari_dt.training"))}
