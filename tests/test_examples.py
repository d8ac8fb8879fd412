"""The example notebooks run top to bottom, and their committed outputs came from the current code.

Each notebook is executed afresh (a cell error fails the test, every cell has a time limit); the tables it
shows (every HTML output holding a ``<table>``, images left out) must equal the committed ones, so what a
reader sees on the code host is what the code gives: the same text, and numbers equal up to what another CPU's
floating-point kernels change in a seeded one-thread training (the chest notebook's Dice moves by 0.001 and its CTR
by up to 0.016 between an AVX-512/AMX Xeon and the machine its outputs came from). Notebooks reading
``../shared/data`` skip without it.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CELL_TIMEOUT_S = 240
_IMAGE_DATA = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_STYLE_ID = re.compile(r"\bT_[0-9a-f]+")  # a styled table's element ids, a hash of its values
ABS_TOL, REL_TOL = 0.02, 0.03  # numbers a table shows: what another CPU's kernels change, far below a real change


def same_tables(fresh: list[tuple[int, str]], committed: list[tuple[int, str]]) -> bool:
    """The same cells and text, numbers within :data:`ABS_TOL` or :data:`REL_TOL` of the committed ones."""
    if [n for n, _ in fresh] != [n for n, _ in committed]:
        return False
    for (_, a), (_, b) in zip(fresh, committed, strict=True):
        a, b = _STYLE_ID.sub("T_", a), _STYLE_ID.sub("T_", b)
        if _NUMBER.split(a) != _NUMBER.split(b):
            return False
        x, y = (np.array(_NUMBER.findall(t), float) for t in (a, b))
        if x.shape != y.shape or not np.allclose(x, y, rtol=REL_TOL, atol=ABS_TOL):
            return False
    return True


def tables(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """(code cell number, HTML) of every table a notebook shows, embedded images replaced by a placeholder."""
    found = []
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code_cells):
        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html", "")
            if "<table" in html:
                found.append((number, _IMAGE_DATA.sub("data:image/png;base64,...", html)))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("notebook", sorted(EXAMPLES.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_executes_and_reproduces_its_committed_tables(
    notebook: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel computes on one thread, as the committed outputs were made: the same sums in the same order on
    # any machine, and no oversubscription beside the other test worker (2 x 2 threads on 2 cores ran the
    # chest notebook's training 5x slower).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    committed = nbformat.read(notebook, as_version=4)
    if "shared' / 'data'" in notebook.read_text():
        request.getfixturevalue("shared_data")  # skips (or fails in CI) without the real data
    fresh = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        fresh, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell (the notebooks assert their results)
    outputs = [o for c in fresh.cells if c.cell_type == "code" for o in c.outputs]
    assert any(
        o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {}) for o in outputs
    )
    expected = tables(committed)
    assert expected, f"{notebook.name} is committed without its outputs: execute it and commit the result"
    assert same_tables(tables(fresh), expected), f"{notebook.name}: the committed tables differ from what the code gives now"
