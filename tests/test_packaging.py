"""The declared Python version covers what the package imports, and ruff checks for that version."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# standard-library modules newer than Python 3.10, with the version that added them
NEW_STDLIB = {"tomllib": (3, 11), "wsgiref.types": (3, 11)}


def _declared_minimum() -> tuple[int, int]:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert spec.startswith(">="), spec
    major, minor = spec[2:].strip().split(".")[:2]
    return int(major), int(minor)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_requires_python_covers_every_standard_library_import():
    lowest = _declared_minimum()
    needs = {(name, NEW_STDLIB[name], str(f.relative_to(ROOT))) for f in (ROOT / "musiclstm").rglob("*.py")
             for name in _imports(f) if name in NEW_STDLIB}
    too_new = sorted(n for n in needs if n[1] > lowest)
    assert not too_new, f"requires-python >={lowest[0]}.{lowest[1]} but the package imports {too_new}"


def test_ruff_targets_the_declared_python():
    major, minor = _declared_minimum()
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["target-version"] == f"py{major}{minor}"
    assert sys.version_info[:2] >= (major, minor)


def test_ci_fails_in_one_line_when_chromium_cannot_be_installed(tmp_path):
    """No green CI over skipped browser tests: without a Chromium, .ci/run installs one or stops, saying why."""
    import os
    import shutil
    import subprocess

    bin_ = tmp_path / "bin"  # a PATH with no browser, whose apt-get fails
    bin_.mkdir()
    for tool in ("dirname", "id", "tail"):
        (bin_ / tool).symlink_to(shutil.which(tool))
    (bin_ / "apt-get").write_text("#!/bin/sh\necho 'E: Unable to locate package chromium'\nexit 100\n")
    (bin_ / "apt-get").chmod(0o755)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([shutil.which("bash"), str(root / ".ci" / "run")], capture_output=True, text=True,
                       env={"PATH": str(bin_), "HOME": str(tmp_path), "MUSICLSTM_CI_ONLY": "browser"}, timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ci: ") and "hromium" in lines[0], r.stderr
    assert ("Unable to locate package chromium" in lines[0]) == (os.getuid() == 0)  # the cause, as apt said it


def test_every_document_cited_is_in_the_repository():
    """A fresh clone holds every .md file that the README, the code, the benches and the tests cite."""
    import re

    root = Path(__file__).resolve().parents[1]
    files = [root / "README.md", *root.glob("musiclstm/**/*.py"), *root.glob("bench/*.py"), *root.glob("docs/*.md"),
             *root.glob("corpora/*.md"), *root.glob("checkpoints/*.md")]
    missing = set()
    for f in files:
        for ref in re.findall(r"[\w./-]*\b[A-Z_]+\.md\b|[\w./-]+/[\w.-]+\.md\b", f.read_text()):
            name = ref.lstrip("./")
            if "shared/" in ref or not any((base / name).is_file() or (base / Path(name).name).is_file()
                                           for base in (root, root / "docs", f.parent)):
                missing.add(f"{f.relative_to(root)}: {ref}")
    assert not missing, sorted(missing)
