"""Every tutorial runs end to end at its small size."""

import os
import runpy
import warnings
from pathlib import Path

import jupytext
import pytest

TUTORIALS = sorted((Path(__file__).parents[1] / "tutorials").glob("*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_tutorial_runs(path, monkeypatch, tmp_path):
    notebook = jupytext.read(path)
    assert any(cell.cell_type == "code" for cell in notebook.cells)

    monkeypatch.setenv("BRGNNFT_TUTORIAL_SIZE", "small")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        # A tutorial may show ArviZ's diagnostic warnings (Pareto k on small samples) to the reader.
        warnings.simplefilter("default", UserWarning)
        runpy.run_path(str(path), run_name="__main__")
