"""The house's rule: a room imports only the rooms below it (README, "Architecture")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "musiclstm"
# bottom first; a module may import its own room and any room earlier in the list
ROOMS = ["errors", "version", "theory", "io", "encodings", "data", "models", "generation", "training", "evaluation",
         "app"]


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def _imports(path: Path, module: str):
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "musiclstm":
                yield from (f"musiclstm.{a.name}" for a in node.names)
            elif target.startswith("musiclstm."):
                yield target
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("musiclstm."))


def test_every_import_points_down_the_layers():
    up = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        here = _room(module)
        if here is None:
            continue  # musiclstm/__init__.py and __main__.py sit above every room
        for target in _imports(path, module):
            there = _room(target)
            if there is None and target.split(".")[1] not in ("bundled",):
                up.append(f"{module} -> {target} (the package root)")
            elif there is not None and ROOMS.index(there) > ROOMS.index(here):
                up.append(f"{module} -> {target}")
    assert not up, "imports that point up the layers:\n" + "\n".join(up)


def test_every_module_says_what_it_may_not_import():
    missing = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
               if p.name != "__main__.py" and "import" not in (ast.get_docstring(ast.parse(p.read_text())) or "")]
    assert not missing, "module docstrings without their import rule: " + ", ".join(missing)
