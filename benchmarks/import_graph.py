"""Import graph of src/seradv: prints every import circle (and who imports seradv.pipeline).

Every ``import`` statement counts, at module level and inside functions alike, so a circle
hidden behind a function-local import shows too. ``from seradv.pkg import name`` is an edge to
``seradv.pkg.name`` when that is a module, else to ``seradv.pkg``. A package's ``__init__``
running before its submodules is not counted as an edge (it would make every package a circle).

    python benchmarks/import_graph.py            # exit status 1 if there is a circle
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def modules(src: Path = SRC) -> dict[str, Path]:
    """Module name -> file of every module under ``src/seradv``."""
    out = {}
    for f in sorted((src / "seradv").rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the seradv modules it imports anywhere in its file."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import seradv.x.y` of a name inside a module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    mods = modules()
    graph = edges(mods)
    found = cycles(graph)
    print(f"{len(mods)} modules, {sum(map(len, graph.values()))} import edges")
    for comp in found:
        print("circle: " + " <-> ".join(comp))
        for m in comp:
            print(f"  {m} -> {', '.join(sorted(graph[m] & set(comp)))}")
    if not found:
        print("no import circle")
    users = sorted(m for m, deps in graph.items() if "seradv.pipeline" in deps)
    print("modules importing seradv.pipeline: " + (", ".join(users) or "none"))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
