"""The parts and their imports, as docs/architecture.md draws them: the real import graph of `sidecar/`
(every `import`, module level or inside a function) may only use the edges the table allows, the parts
form no cycle, and nothing shipped imports the lab except `lokal demo`'s documented hand-over."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIDECAR = REPO / "sidecar"
ANYONE_MAY_USE = {"backoff", "logs", "_proto", "sidecar"}  # single modules, generated code, the version
LAB_HAND_OVER = {("sidecar/cli/demo.py", "lokal_lab.demo")}


def allowed_imports() -> dict[str, set[str]]:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("### The imports each part may make", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            table[cells[0].strip("`")] = set(re.findall(r"`([a-z_]+)`", cells[1]))
    return table


def part_of(path: Path) -> str:
    relative = path.relative_to(SIDECAR)
    return relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 else relative.stem


def imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top


def sources() -> list[Path]:
    return [p for p in SIDECAR.rglob("*.py") if "_proto" not in p.parts]


def part_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sources():
        source = part_of(path)
        for module, _ in imports(path):
            names = module.split(".")
            if names[0] != "sidecar":
                continue
            target = names[1] if len(names) > 1 else "sidecar"
            if target != source and target not in ANYONE_MAY_USE:
                graph.setdefault(source, set()).add(target)
    return graph


def test_every_import_between_parts_is_one_the_architecture_allows() -> None:
    allowed = allowed_imports()
    graph = part_graph()
    assert set(graph) <= set(allowed) | {"__main__"}, "a part missing from docs/architecture.md"
    unlisted = {
        (source, target) for source, targets in graph.items() for target in targets
        if source != "__main__" and target not in allowed[source]
    }
    assert unlisted == set(), "imports docs/architecture.md does not allow"


def test_the_parts_form_no_cycle() -> None:
    graph = part_graph()
    done: set[str] = set()

    def visit(part: str, path: tuple[str, ...]) -> None:
        assert part not in path, f"import cycle: {' -> '.join((*path, part))}"
        if part in done:
            return
        for target in graph.get(part, ()):
            visit(target, (*path, part))
        done.add(part)

    for part in graph:
        visit(part, ())


def test_the_allowed_table_itself_has_no_cycle() -> None:
    allowed = allowed_imports()
    order: list[str] = []
    pending = dict(allowed)
    while pending:
        ready = [p for p, deps in pending.items() if deps <= set(order)]
        assert ready, f"a cycle among {sorted(pending)}"
        order.extend(sorted(ready))
        for p in ready:
            del pending[p]


def test_nothing_shipped_imports_the_lab_but_the_demo_hand_over() -> None:
    found = {
        (str(path.relative_to(REPO)), module, top)
        for path in sources() for module, top in imports(path)
        if module.split(".")[0] == "lokal_lab"
    }
    assert {(path, module) for path, module, _ in found} <= LAB_HAND_OVER
    assert not any(top for _, _, top in found), "the demo imports the lab only when it runs"
