"""Shared fixtures: a seeded Keras cache (no network), small texts, and one tiny trained model per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tests train on TensorFlow unless they name JAX; those that leave the backend unnamed on purpose drop this,
# and then a run measures which backend is faster first (probe.py; test_backends.py, test_probe.py)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def keras_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private KERAS_HOME whose dataset cache is seeded from ../shared/data, as a download would fill it."""
    home = tmp_path_factory.mktemp("keras_home")
    datasets = home / "datasets"
    datasets.mkdir()
    for name in ("treasure_island.txt", "tiny_shakespeare.txt"):
        if (SHARED_DATA / name).is_file():
            shutil.copy(SHARED_DATA / name, datasets / name)
    old = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("KERAS_HOME", None)
    else:
        os.environ["KERAS_HOME"] = old


@pytest.fixture(scope="session", autouse=True)
def charlstm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache for prepared copies of big texts (never the user's ~/.cache)."""
    path = tmp_path_factory.mktemp("charlstm_cache")
    old = os.environ.get("CHARLSTM_CACHE")
    os.environ["CHARLSTM_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("CHARLSTM_CACHE", None)
    else:
        os.environ["CHARLSTM_CACHE"] = old


TINY_TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on a mat by a log.\n"
    "the sun is hot. the mat is red. the log is old and the dog is glad.\n"
) * 12


@pytest.fixture(scope="session")
def tiny_text() -> str:
    return TINY_TEXT


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory from a few seconds of default-recipe training on the tiny text."""
    import charlstm

    out = tmp_path_factory.mktemp("runs") / "tiny"
    charlstm.train(
        str(tiny_corpus), out=out, epochs=8, layers=1, units=48, embedding_dim=16, seq_len=32, batch_size=16,
        lr=1e-2, dropout=0.0, sample_length=50, sample_temperatures=[0.5], verbose=0,
    )
    return out


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, input: str | None = None):
    """Run `python -m charlstm.cli ...` in a subprocess (a fresh interpreter, like a user's shell); `env` adds
    to this process' environment, and a None value removes that variable."""
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", "charlstm.cli", *args], capture_output=True, text=True, timeout=timeout,
        env=full_env, input=input,
    )
