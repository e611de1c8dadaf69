"""The notebooks' contract: each .ipynb is paired with a Jupytext percent script (the source one edits) and
the two are in sync; the Colab badge and setup cell are there, and the setup cell does nothing locally;
no notebook points at files outside the repository."""
import glob
import os
import subprocess

import pytest

jupytext = pytest.importorskip("jupytext")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(os.path.basename(p)[:-6] for p in glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
REPO_SLUG = "hybrid-vision-papers/hybrid-vision-papers"


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_paired_script_exists_and_is_in_sync(name):
    ipynb, script = (os.path.join(ROOT, "notebooks", f"{name}.{ext}") for ext in ("ipynb", "py"))
    assert os.path.exists(script), f"notebooks/{name}.py (the Jupytext source) is missing"
    a, b = jupytext.read(ipynb), jupytext.read(script)
    assert a.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", "the .ipynb is not paired"
    ca, cb = _cells(a), _cells(b)
    for i, (x, y) in enumerate(zip(ca, cb)):
        assert x == y, (f"notebooks/{name}: cell {i} differs between .ipynb and .py; edit the .py, then "
                        f"`jupytext --sync notebooks/{name}.py`\n.ipynb: {x[1][:200]!r}\n.py:    {y[1][:200]!r}")
    assert len(ca) == len(cb), f"notebooks/{name}: {len(ca)} cells in .ipynb, {len(cb)} in .py; run jupytext --sync"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_colab_badge_and_setup_cell(name, monkeypatch):
    nb = jupytext.read(os.path.join(ROOT, "notebooks", f"{name}.ipynb"))
    assert nb.cells[0].cell_type == "markdown"
    assert (f"https://colab.research.google.com/github/{REPO_SLUG}/blob/main/notebooks/{name}.ipynb"
            in nb.cells[0].source), "the first cell must carry an Open-in-Colab badge for this notebook"
    setup = next(c for c in nb.cells if c.cell_type == "code")
    assert "google.colab" in setup.source, "the first code cell must be the Colab setup cell"

    def forbidden(*a, **k):
        raise AssertionError("the Colab setup cell ran a command or changed directory outside Colab")

    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(os, "chdir", forbidden)
    cwd = os.getcwd()
    exec(compile(setup.source, f"{name}:colab-cell", "exec"), {"__name__": "__main__"})
    assert os.getcwd() == cwd


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_reference_outside_the_repository(name):
    text = open(os.path.join(ROOT, "notebooks", f"{name}.py")).read()
    assert "../shared" not in text and "/work/" not in text, "a notebook points at files outside the repository"
