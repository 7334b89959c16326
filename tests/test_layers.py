"""The architecture is enforced, not hoped for: import-linter's contracts (pyproject.toml) pass on the tree,
and fail when a layer reaches up (the test plants such an import in a copy of the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")

pytestmark = pytest.mark.skipif(LINT is None, reason='lint-imports missing: pip install -e ".[dev]"')


def _lint(src: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}  # this copy of charlstm, not the installed one
    return subprocess.run(
        [LINT, "--config", str(config), "--no-cache"], capture_output=True, text=True, env=env, timeout=120, cwd=src
    )


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "charlstm", src / "charlstm", ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / "pyproject.toml"
    shutil.copy(ROOT / "pyproject.toml", config)
    return src, config


def test_the_layer_contracts_hold(tmp_path):
    src, config = _copy(tmp_path)
    result = _lint(src, config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("generation/model.py", "import charlstm.training.trainer", "Layers"),  # generation reaching up
        ("server/service.py", "from charlstm.training import budget", "Layers"),  # server importing training
        ("data/vocab.py", "import charlstm.generation.sampling", "Layers"),  # data reaching up
        ("generation/sampling.py", "import keras", "without Keras"),  # the NumPy runtime importing Keras
        ("data/batches.py", "import keras", "Data runs without"),  # the data layer importing a framework
        ("data/vocab.py", "import tensorflow", "Data runs without"),
        ("training/backend.py", "import charlstm.training.trainer", "cycles"),  # a cycle inside a package
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, contract):
    src, config = _copy(tmp_path)
    target = src / "charlstm" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # planted by the test\n", encoding="utf-8")
    result = _lint(src, config)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken and "BROKEN" in result.stdout, result.stdout
