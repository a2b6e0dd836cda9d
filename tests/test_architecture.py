"""The house's layering, held against the code: every import of ``nscodec`` and ``nscodec_configs`` (module level and
inside functions alike) goes to a lower floor of :data:`FLOORS`, or stays within its own unit, and no modules import
each other in a circle. ``README.md`` ("Layout") draws the same floors; a new module needs a floor here."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

ROOT = Path(__file__).resolve().parents[1]

#: unit (a package or a top-level module of nscodec) → floor, bottom up; an import may only go down, or stay in its unit
FLOORS: Dict[str, int] = {
    "nscodec": 0, "nscodec.errors": 0,  # the package face (imports nothing) and every error
    "nscodec.render": 1, "nscodec.scenes": 1, "nscodec.compat": 1,
    "nscodec.data": 2, "nscodec._backend": 2,
    "nscodec.coding": 3, "nscodec.grid": 3, "nscodec.optim": 3, "nscodec.llff": 3,
    "nscodec.core": 4, "nscodec.cameras": 4,
    "nscodec.tensorf": 5, "nscodec.shacira": 5, "nscodec.vqad": 5, "nscodec.codecnerf": 5, "nscodec.io": 5,
    "nscodec.ectensorf": 6, "nscodec.viewer": 6,
    "nscodec.pipeline": 7,
    "nscodec_configs": 8,
    "nscodec.tools": 9,
    "nscodec.rd": 10, "nscodec._startup": 10,
    "nscodec.cli": 11,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _unit(module: str) -> str:
    """The unit of ``module``: the longest key of :data:`FLOORS` it is, or lies in."""
    best = ""
    for unit in FLOORS:
        if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
            best = unit
    return best


def _imports() -> Dict[str, Set[str]]:
    """``{module: modules of ours it imports}`` (``import``, ``from ... import``, relative ones resolved)."""
    out: Dict[str, Set[str]] = {}
    files = [*(ROOT / "nscodec").rglob("*.py"), *(ROOT / "nscodec_configs").rglob("*.py")]
    modules = {_module_name(f) for f in files}
    for f in files:
        name = _module_name(f)
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: Set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                # ``from package import module`` imports that module; ``from module import name``, the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:  # a name imported from a module: that module
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t.split(".")[0] in ("nscodec", "nscodec_configs") and t != name:
                    found.add(t)
        out[name] = found
    return out


def test_every_module_has_a_floor():
    missing = sorted(m for m in _imports() if not _unit(m))
    assert missing == [], f"modules without a floor in tests/test_architecture.py FLOORS: {missing}"


def test_imports_only_go_down_or_stay_in_their_unit():
    wrong = []
    for module, targets in _imports().items():
        u = _unit(module)
        for t in targets:
            v = _unit(t)
            if v != u and not FLOORS[v] < FLOORS[u]:
                wrong.append(f"{module} (floor {FLOORS[u]}) imports {t} (floor {FLOORS[v]})")
    assert wrong == [], "\n".join(wrong)


def test_no_modules_import_each_other_in_a_circle():
    graph = _imports()
    state: Dict[str, int] = {}
    cycle: list = []

    def visit(m: str, path: list) -> bool:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycle.extend(path[path.index(t):] + [t] if t in path else [m, t])
                return True
            if state.get(t) is None and visit(t, path + [t]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if state.get(m) is None and visit(m, [m]):
            break
    assert cycle == [], " -> ".join(cycle)


def test_the_readme_draws_the_same_floors():
    """README.md's layout lists each unit with its floor as ``[floor N]``."""
    text = (ROOT / "README.md").read_text()
    for unit, floor in FLOORS.items():
        if unit == "nscodec":
            continue
        shown = unit.replace("nscodec.", "nscodec/").replace(".", "/")
        assert f"[floor {floor}] {shown}" in text, f"README.md does not draw {shown} on floor {floor}"
