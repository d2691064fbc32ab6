"""The package's import graph: no cycles and no cross-module underscore imports.

Every gmmspeaker module is parsed with ``ast``; every import counts, including those inside
functions (they only hide a cycle, they do not remove it), except those under
``if TYPE_CHECKING:``, which never run. A module may not import another module's
underscore name (``from gmmspeaker.x import _helper``) nor reach one through a module
object (``import gmmspeaker.x as x; x._helper``). Underscore *modules* (``gmmspeaker._io``,
``gmmspeaker.recipe.fingerprint``) are private to the package and may be imported within it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gmmspeaker

PACKAGE_DIR = Path(gmmspeaker.__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_ids(tree: ast.AST) -> set[int]:
    """ids of every node inside an ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) body."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    ids.update(id(n) for n in ast.walk(stmt))
    return ids


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> imported package modules, list of cross-module underscore uses)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private: list[str] = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = _type_checking_ids(tree)
        is_pkg = path.name == "__init__.py"
        aliases: dict[str, str] = {}  # local name -> package module it is bound to
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods and a.name != mod:
                        edges[mod].add(a.name)
                        aliases[a.asname or a.name] = a.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target != PACKAGE and not target.startswith(PACKAGE + "."):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:  # a submodule: private modules are package-internal
                        if sub != mod:
                            edges[mod].add(sub)
                            aliases[a.asname or a.name] = sub
                        continue
                    if target in mods and target != mod:
                        edges[mod].add(target)
                    if _private(a.name) and target != mod:
                        private.append(f"{mod}:{node.lineno} imports {a.name} from {target}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
                and f"{aliases[node.value.id]}.{node.attr}" not in mods
            ):
                private.append(f"{mod}:{node.lineno} uses {node.value.id}.{node.attr}")
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Kosaraju, iterative)."""
    order: list[str] = []
    seen: set[str] = set()
    for start in edges:
        if start in seen:
            continue
        seen.add(start)
        stack = [(start, iter(sorted(edges[start])))]
        while stack:
            v, it = stack[-1]
            nxt = next((w for w in it if w not in seen), None)
            if nxt is None:
                order.append(v)
                stack.pop()
            else:
                seen.add(nxt)
                stack.append((nxt, iter(sorted(edges[nxt]))))
    reverse: dict[str, set[str]] = {m: set() for m in edges}
    for v, ws in edges.items():
        for w in ws:
            reverse[w].add(v)
    comps, assigned = [], set()
    for v in reversed(order):
        if v in assigned:
            continue
        comp, todo = [], [v]
        assigned.add(v)
        while todo:
            u = todo.pop()
            comp.append(u)
            for w in reverse[u] - assigned:
                assigned.add(w)
                todo.append(w)
        if len(comp) > 1:
            comps.append(sorted(comp))
    return comps


def test_checker_finds_a_cycle_and_a_private_use():
    """The checks themselves can fail: a made-up graph with a 3-cycle and a self-contained node."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert _private("_helper") and not _private("__version__") and not _private("public")


def test_import_graph_walks_the_whole_package():
    edges, _ = import_graph()
    assert "gmmspeaker.gmm.em" in edges and "gmmspeaker.recipe.stages" in edges
    # a function-level import is counted: model.fit imports gmm.em inside the method
    assert "gmmspeaker.gmm.em" in edges["gmmspeaker.gmm.model"]


def test_no_import_cycles():
    edges, _ = import_graph()
    found = cycles(edges)
    if found:
        pytest.fail(
            "import cycles (imports inside functions count):\n" + "\n".join(" <-> ".join(c) for c in found)
        )


def test_no_cross_module_underscore_imports():
    _, private = import_graph()
    if private:
        pytest.fail("cross-module use of underscore names (make them public):\n" + "\n".join(private))


def test_library_does_not_import_recipe_internals():
    """Outside gmmspeaker/recipe/, only the recipe loader and runner may be imported (issue #18)."""
    edges, _ = import_graph()
    allowed = {"gmmspeaker.recipe.config", "gmmspeaker.recipe.runner"}
    bad = [
        f"{mod} imports {dep}"
        for mod, deps in edges.items()
        if not mod.startswith("gmmspeaker.recipe")
        for dep in deps
        if dep.startswith("gmmspeaker.recipe") and dep not in allowed
    ]
    assert not bad, "library modules import recipe internals:\n" + "\n".join(bad)
