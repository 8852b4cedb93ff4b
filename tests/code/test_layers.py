"""The shape of the code: no import cycles between modules (imports inside functions included), and the
layer contracts of pyproject.toml (import-linter) hold. `make test` also runs `lint-imports` itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
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
                    found.append(sorted(component))
    return found


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("etl", "dl", "jobs", cache_dir=None)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cyc import b\n")  # inside a function: still an import
    (pkg / "b.py").write_text("import cyc.a\n")
    (pkg / "c.py").write_text("import cyc.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("cyc", cache_dir=None)) == [["cyc.a", "cyc.b"]]


def test_the_layer_contracts_hold():
    out = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "2 kept, 0 broken" in out.stdout


def test_the_architecture_page_names_every_module_and_only_existing_ones():
    import re

    page = (REPO / "docs" / "architecture.md").read_text()
    named = set()
    for m in re.finditer(r"`((?:etl|dl|jobs)/[\w/]+\.py)`((?:,\s+`\w+\.py`)*)", page):
        first = m.group(1)
        named.add(first)
        folder = first.rsplit("/", 1)[0]
        named.update(f"{folder}/{extra}" for extra in re.findall(r"`([\w]+\.py)`", m.group(2)))
    modules = {p.relative_to(REPO).as_posix() for top in ("etl", "dl", "jobs") for p in (REPO / top).rglob("*.py")
               if p.name != "__init__.py" and "examples" not in p.parts}
    modules.add("dl/models/__init__.py")  # the registry
    assert sorted(modules - named) == []  # every module is described
    assert sorted(named - modules) == []  # and the page names nothing that is gone
