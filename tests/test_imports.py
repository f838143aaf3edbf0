"""The package's shape: no import cycle between its modules, and no module too long to read.

The graph is built from the source (``ast``), nothing is imported: every ``import`` counts, at module level,
inside a function, or under ``if TYPE_CHECKING:`` (a cycle there is still two modules that cannot be
understood apart). ``from .x import y`` is an edge to the module ``x.y`` when that is a module, else to
``x``. A package's ``__init__`` re-exporting its own submodules is not a cycle: edges from a package into
its own subtree are ignored.

Modules are found like ``pkgutil.walk_packages`` finds them, with ``pkgutil.iter_modules`` on each regular
package's folder, so that no package has to be imported (and none is skipped silently when one fails to).
"""

from __future__ import annotations

import ast
import pkgutil
import textwrap
from pathlib import Path

import pytest

import cllmfs_hf

MAX_LINES = 550


def discover_modules(folder: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Module name -> (source file, is a package) for ``package`` (in ``folder``) and all its submodules."""
    modules = {package: (folder / "__init__.py", True)}
    for info in pkgutil.iter_modules([str(folder)]):
        name = f"{package}.{info.name}"
        if info.ispkg:
            modules.update(discover_modules(folder / info.name, name))
        elif (folder / f"{info.name}.py").is_file():
            modules[name] = (folder / f"{info.name}.py", False)
    return modules


def _resolve(target: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The module ``target`` names: itself, else its longest known prefix (an attribute of a module)."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return None


def import_edges(modules: dict[str, tuple[Path, bool]], root: str) -> dict[str, dict[str, int]]:
    """Module -> {imported module of ``root``: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in modules.items():
        edges: dict[str, int] = {}
        here = name if is_package else name.rpartition(".")[0]  # the package relative imports start from
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = here.split(".")
                    if node.level - 1 >= len(base_parts):
                        raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
                    base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module or ""
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in node.names
                ]
            for target in targets:
                if target != root and not target.startswith(root + "."):
                    continue
                module = _resolve(target, modules)
                if module is None or module == name:
                    continue
                if is_package and module.startswith(name + "."):
                    continue  # a package re-exporting its own submodules
                edges.setdefault(module, node.lineno)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:  # walk inside the component from its first module back to it
        members, start = set(component), component[0]
        path, seen = [start], {start}
        while True:
            succ = sorted(s for s in graph[path[-1]] if s in members)
            back = start in succ
            nxt = start if back else next((s for s in succ if s not in seen), None)
            if nxt is None:  # dead end inside the component: step back
                path.pop()
                if not path:
                    break
                continue
            path.append(nxt)
            if back:
                cycles.append(path)
                break
            seen.add(nxt)
    return cycles


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [f"{a} -> {b} (line {graph[a][b]} of {a})" for a, b in zip(cycle, cycle[1:])]
    return "import cycle: " + " -> ".join(cycle) + "\n    " + "\n    ".join(steps)


PACKAGE_DIR = Path(cllmfs_hf.__file__).parent
MODULES = discover_modules(PACKAGE_DIR, "cllmfs_hf")


def test_the_package_is_walked():
    for name in ("cllmfs_hf.artifact", "cllmfs_hf.hub", "cllmfs_hf.card", "cllmfs_hf.data.records"):
        assert name in MODULES, sorted(MODULES)


def test_no_import_cycle():
    graph = import_edges(MODULES, "cllmfs_hf")
    assert "cllmfs_hf.artifact" in graph["cllmfs_hf.hub"] and "cllmfs_hf.artifact" in graph["cllmfs_hf.card"]
    cycles = find_cycles(graph)
    assert not cycles, "\n".join(_describe(c, graph) for c in cycles)


def test_artifact_card_and_hub_layering():
    graph = import_edges(MODULES, "cllmfs_hf")
    assert "cllmfs_hf.hub" not in graph["cllmfs_hf.card"]
    assert not {"cllmfs_hf.hub", "cllmfs_hf.card"} & set(graph["cllmfs_hf.artifact"])


def test_no_module_is_too_long():
    lengths = {
        name: len(path.read_text(encoding="utf-8").splitlines()) for name, (path, _) in MODULES.items()
    }
    offenders = {name: n for name, n in sorted(lengths.items()) if n > MAX_LINES}
    assert not offenders, f"modules over {MAX_LINES} lines (split them by concept): " + ", ".join(
        f"{name} ({n} lines)" for name, n in offenders.items()
    )


# ---- the checker itself, on a throwaway package -----------------------------------------------------------
def _write_package(root: Path, files: dict[str, str]) -> dict[str, tuple[Path, bool]]:
    for relative, source in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return discover_modules(root / "pkg", "pkg")


@pytest.mark.parametrize(
    ("b_source", "expected"),
    [
        ("from .a import f\n", ["pkg.a", "pkg.b", "pkg.a"]),  # module level, relative
        ("def g():\n    import pkg.a\n", ["pkg.a", "pkg.b", "pkg.a"]),  # in a function, absolute
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n",
            ["pkg.a", "pkg.b", "pkg.a"],
        ),
        ("from . import a\n", ["pkg.a", "pkg.b", "pkg.a"]),  # `from . import module`
        ("from .sub import c\n", ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]),  # through a subpackage
        ("from . import helper\n", []),  # an attribute of pkg/__init__, which re-exports (ignored)
        ("import os\n", []),
    ],
)
def test_the_checker_finds_cycles(tmp_path, b_source, expected):
    modules = _write_package(
        tmp_path,
        {
            "__init__.py": "from .a import f\nfrom .b import *\nhelper = 1\n",
            "a.py": "from .b import *\n\ndef f():\n    pass\n",
            "b.py": b_source,
            "sub/__init__.py": "from .c import *\n",
            "sub/c.py": "from ..a import f\n",
        },
    )
    graph = import_edges(modules, "pkg")
    assert find_cycles(graph) == ([expected] if expected else [])
