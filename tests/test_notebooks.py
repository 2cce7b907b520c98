"""Every notebook in notebooks/ runs clean, with small settings (MUSICLSTM_QUICK=1), and really ran
in that mode: a probe cell appended after the last cell reports the notebook's own QUICK flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from musiclstm.models.checkpoint import bundled_models

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
NEEDS_BUNDLED = {"01_quickstart", "03_inside_the_lstm"}
PROBE = "print('QUICK-PROBE', globals().get('QUICK'))"


def _execute(nb, tmp_path) -> str:
    """Run `nb` with a probe cell appended; returns what the probe printed about QUICK."""
    nbformat = pytest.importorskip("nbformat", reason="pip install musiclstm[notebooks] to run the notebooks")
    nbclient = pytest.importorskip("nbclient", reason="pip install musiclstm[notebooks] to run the notebooks")
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    # the kernel's temporary folders (the notebooks' mkdtemp work folders) go under tmp_path, which pytest
    # removes: none is left in the system temp folder
    (tmp_path / "tmp").mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp_path / "tmp"))
        client.execute()  # raises CellExecutionError, naming the cell, on any error
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a code cell did not run"
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    return text.replace("QUICK-PROBE", "").strip()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install musiclstm[notebooks] to run the notebooks")
    if path.stem in NEEDS_BUNDLED and not {"folk", "bach", "pop"} <= set(bundled_models()):
        pytest.skip("the bundled models are not built (bash checkpoints/build.sh)")
    if path.stem == "05_harmonize" and "harmonizer" not in bundled_models("harmonizer"):
        pytest.skip("the bundled harmonizer is not built (bash checkpoints/build.sh harmonizer)")
    monkeypatch.setenv("MUSICLSTM_QUICK", "1")
    # one PyTorch thread in the kernel: two spinning OpenMP threads slow to a crawl (20x and more)
    # whenever anything else holds a core, as the pytest process or a training may
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    assert _execute(nb, tmp_path) == "True", "the notebook did not run with its small settings (QUICK)"


def test_the_probe_catches_a_notebook_that_ignores_quick_mode(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install musiclstm[notebooks] to run the notebooks")
    monkeypatch.setenv("MUSICLSTM_QUICK", "1")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("QUICK = False  # full settings, whatever CI says")])
    assert _execute(nb, tmp_path) == "False"
