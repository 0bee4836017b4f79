"""docs/notebooks/quickstart.ipynb runs top to bottom, offline, on a (small) demo database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The kernel inherits the environment: a fresh cache and a small demo database keep this to a minute or two.
    monkeypatch.setenv("GLIOFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLIOFIT_DEMO_SIMULATIONS", "40")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own (inline) backend shows figures
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "recovered" in outputs and "M parameters" in outputs
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))  # res.plot() shown
    assert (tmp_path / "cache" / "demo-db-2mm" / "gliofit-db.json").is_file()
    assert os.environ["GLIOFIT_DEMO_SIMULATIONS"] == "40"
