"""Every notebook in notebooks/ runs clean, with small settings (MUSICLSTM_QUICK=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from musiclstm.checkpoint import bundled_models

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
NEEDS_BUNDLED = {"01_quickstart", "03_inside_the_lstm"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install musiclstm[notebooks] to run the notebooks")
    nbclient = pytest.importorskip("nbclient", reason="pip install musiclstm[notebooks] to run the notebooks")
    if path.stem in NEEDS_BUNDLED and not {"folk", "bach", "pop"} <= set(bundled_models()):
        pytest.skip("the bundled models are not built (bash checkpoints/build.sh)")
    monkeypatch.setenv("MUSICLSTM_QUICK", "1")
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    assert os.environ["MUSICLSTM_QUICK"] == "1"
