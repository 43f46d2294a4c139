"""The package's modules import each other without a circle, counting imports inside functions too (a deferred
import only hides a circle until someone moves it)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sperm_edge"


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (`from sperm_edge.x import y` counts x, and x.y when a module)."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}  # fmt: skip
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sperm_edge"):
                edges |= {m for m in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if m in modules}
        # a package and its own modules (an __init__ re-exporting them) are one unit
        graph[name] = {m for m in edges if m != name and not (m.startswith(name + ".") or name.startswith(m + "."))}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, path = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert "sperm_edge.train.evaluate" in graph["sperm_edge.train.calibrate"]  # the graph sees what it should
    assert cycles(graph) == []


def test_a_circle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
