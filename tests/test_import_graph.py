"""The import graph of the package has no cycle: every module-level and function-level import between tritonmix's
own modules (``if TYPE_CHECKING:`` blocks aside) is an edge, and the graph has no strongly connected component of
more than one module."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterable, List, Set

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"tritonmix": ROOT / "plugin", "tritonmix.dispatch_core": ROOT / "dispatch_core",
           "tritonmix.exporters": ROOT / "exporters"}
#: files that run inside Triton's python backend stub, not as part of the package
OUTSIDE = {"model_py"}


def modules() -> Dict[str, Path]:
    out: Dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if OUTSIDE.intersection(parts) or any(p.startswith(".") for p in parts):
                continue
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((package,) + parts)] = path
    return out


def imports(name: str, path: Path, known: Dict[str, Path]) -> Set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()

    def visit(nodes: Iterable[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                found.update(t for t in [target] + [f"{target}.{a.name}" for a in node.names] if t in known)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in known)
            visit(ast.iter_child_nodes(node))

    visit(ast.parse(path.read_text()).body)
    found.discard(name)
    return found


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    out: List[List[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_package_has_no_import_cycle() -> None:
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert len(graph) > 100 and "tritonmix.request.router" in graph["tritonmix.request.attempts"]
    assert cycles(graph) == []


def test_the_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
