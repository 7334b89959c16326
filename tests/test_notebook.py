"""examples/lesson.ipynb: runs top to bottom in a Jupyter kernel on small settings; kept without outputs and
in step with its jupytext pair examples/lesson.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "lesson.ipynb"
PAIRED = ROOT / "examples" / "lesson.py"

nbformat = pytest.importorskip("nbformat")


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])  # the settings cell comes first (papermill-style)


def test_notebook_matches_its_jupytext_pair() -> None:
    jupytext = pytest.importorskip("jupytext")
    stored = nbformat.read(NOTEBOOK, as_version=4)
    paired = jupytext.read(PAIRED)
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in paired.cells], (
        "examples/lesson.ipynb and examples/lesson.py differ: run `jupytext --sync examples/lesson.py`"
    )


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_in_a_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ipykernel")
    pytest.importorskip("torch")
    nbclient = pytest.importorskip("nbclient")
    from test_base_install import HIDE

    monkeypatch.setenv("CHARLSTM_LESSON_SMALL", "1")
    # the kernel is this venv's ipykernel ("python3" from sys.prefix), not one in the user's Jupyter folder
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    # the kernel as the default install has it: no TensorFlow, no JAX (a sitecustomize hides them), no
    # KERAS_BACKEND: charlstm picks the engine, and the bring-your-own-model section trains on it too
    base = tmp_path / "base-install"
    base.mkdir()
    (base / "sitecustomize.py").write_text(HIDE, encoding="utf-8")
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("CHARLSTM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in [str(base), str(ROOT / "src"), os.environ.get("PYTHONPATH")] if p)
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    fit_at = next(i for i, c in enumerate(nb.cells) if c.source.startswith("samples = charlstm.SampleText("))
    count = "from charlstm.training import torch_lstm; print('fused calls', torch_lstm.calls)"
    nb.cells.insert(fit_at + 1, nbformat.v4.new_code_cell(count))
    nb.cells.insert(fit_at, nbformat.v4.new_code_cell(count))
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error

    def text(cell) -> str:
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert text(code[0]).strip() == sys.executable
    classic = next(c for c in code if c.source.startswith("classic = charlstm.train("))
    for t in (0.2, 0.5, 1.0, 1.2):  # the lesson's per-epoch samples
        assert f"----- temperature: {t}" in text(classic)
    shown = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(shown) >= 3  # the loss curves of both train() calls, inline, and the comparison plot
    results = [o["data"]["text/plain"] for c in code for o in c.outputs if o.output_type == "execute_result"]
    assert any("best validation" in r and "bits/char" in r for r in results)  # CharModel's repr
    server = next(c for c in code if "serve_in_background" in c.source)
    assert "The playground is at http://127.0.0.1:" in text(server) and "classic: LSTM(16)" in text(server)
    keras_cell = next(c for c in code if c.source.startswith("samples = charlstm.SampleText("))
    assert "----- temperature: 1.2" in text(keras_cell)
    # your own Keras model trains on the fast engine: torch, through the fused LSTM hook, without TensorFlow
    assert "Keras backend: torch" in "".join(text(c) for c in code)
    before, after = (int(text(c).split()[-1]) for c in code if c.source.startswith("from charlstm.training import torch_lstm"))
    assert after > before
    assert list((tmp_path / "runs").glob("lesson-*/keras/lesson.keras"))
