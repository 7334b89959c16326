"""Issue 11: one trainer on two Keras backends (TensorFlow, JAX), chosen per process before Keras loads.

This pytest process runs Keras on TensorFlow (other test modules import it), so JAX runs happen in
subprocesses, as a user's `charlstm train --backend jax` would.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import run_cli

import charlstm
from charlstm.errors import CharlstmError
from charlstm.generation.model import load
from charlstm.training import backend as backends
from charlstm.training import probe

TINY = ["--layers", "1", "--units", "24", "--embedding-dim", "8", "--seq-len", "24", "--batch-size", "8",
        "--lr", "0.01", "--sample-length", "20", "--sample-temperatures", "0.5", "--quiet"]
IDS = [[1, 5, 2, 7, 3, 3, 9, 0, 4, 6, 8, 2]]


def _losses(run: Path) -> list[float]:
    with open(run / "metrics.csv") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    return {**env, **extra}


def _keras_logits_in(backend: str, model_path: Path) -> np.ndarray:
    """Logits of plain `keras.saving.load_model` under `backend`, in a process that never imports charlstm."""
    code = (
        "import json, sys, numpy as np, keras\n"
        f"m = keras.saving.load_model({str(model_path)!r}, safe_mode=True)\n"
        f"print(json.dumps(keras.ops.convert_to_numpy(m(np.array({IDS}, dtype='int32'))).tolist()))\n"
        "print(keras.backend.backend(), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=_env(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == backend
    return np.array(json.loads(proc.stdout))


def test_select_refuses_another_backend_once_keras_is_loaded():
    assert keras.backend.backend() == "tensorflow"
    assert backends.select(None) == "tensorflow"  # no wish: whatever is loaded
    with pytest.raises(CharlstmError, match="already imported with the tensorflow backend.*KERAS_BACKEND=jax"):
        backends.select("jax")
    with pytest.raises(CharlstmError, match="--backend must be one of tensorflow, jax, torch"):
        backends.select("theano")


def test_cli_rejects_an_unknown_backend(tiny_corpus, tmp_path):
    proc = run_cli("train", str(tiny_corpus), "--backend", "theano", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "invalid choice: 'theano'" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def jax_run(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("backends") / "jax"
    proc = run_cli("train", str(tiny_corpus), "--backend", "jax", "--epochs", "3", "--dropout", "0.1",
                   "--out", str(out), *TINY, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_a_jax_run_trains_and_its_file_is_plain_keras_on_both_backends(jax_run):
    losses = _losses(jax_run)
    assert len(losses) == 3 and losses[-1] < losses[0]
    recorded = json.loads((jax_run / "config.json").read_text())["trained_with"]
    assert recorded["backend"] == "jax" and recorded["device"]["kind"] == "cpu"
    runtime = load(jax_run / "model.keras")
    expected = runtime.forward(np.array(IDS))[0]
    for backend in ("jax", "tensorflow"):  # the training backend, and the other one
        np.testing.assert_allclose(_keras_logits_in(backend, jax_run / "model.keras"), expected, atol=1e-4)


def test_resume_across_backends_both_ways(jax_run, tiny_corpus, tmp_path):
    # JAX -> TensorFlow: this process
    import shutil

    run = tmp_path / "j2t"
    shutil.copytree(jax_run, run)
    charlstm.train(out=run, resume=True, epochs=4, verbose=0)
    assert len(_losses(run)) == 4
    assert json.loads((run / "config.json").read_text())["trained_with"]["backend"] == "tensorflow"
    # TensorFlow -> JAX: a subprocess
    run = tmp_path / "t2j"
    charlstm.train(str(tiny_corpus), out=run, epochs=1, layers=1, units=24, embedding_dim=8, seq_len=24,
                   batch_size=8, lr=0.01, sample_length=20, sample_temperatures=[0.5], verbose=0)
    proc = run_cli("train", "--resume", str(run), "--epochs", "3", "--backend", "jax", "--quiet", env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert json.loads((run / "config.json").read_text())["trained_with"]["backend"] == "jax"
    model = load(run / "model.keras")
    assert set(model.generate("the ", 60, 1.0, seed=1)) <= set(model.vocab.chars)


def test_a_fresh_run_records_the_default_backend(tiny_corpus, tmp_path):
    # no backend named: the run first measures every installed backend on its own network, trains with the
    # fastest and remembers the answer (probe.py); the choice among three lands in config.json
    out, cache = tmp_path / "fresh", tmp_path / "cache"
    proc = run_cli("train", str(tiny_corpus), "--epochs", "1", "--out", str(out), *TINY,
                   env={"KERAS_BACKEND": None, "CHARLSTM_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # TINY has --quiet: the measurement, like everything else, is silent (test_probe.py: it speaks otherwise)
    assert [line for line in proc.stderr.splitlines() if not line.startswith("charlstm: warning")] == []
    recorded = json.loads((out / "config.json").read_text())["trained_with"]
    (answer,) = json.loads((cache / probe.CACHE_NAME).read_text())[probe.machine_key()].values()
    assert set(answer["figures"]) == set(probe.installed())  # tensorflow, jax and (charlstm[torch]) torch
    assert recorded["backend"] == answer["backend"] == probe.pick(answer["figures"])
    assert recorded["device"]["kind"] == "cpu" and recorded["keras"] == keras.__version__


JAX_RESUME = """
import csv, os, signal, sys
import charlstm
from charlstm.errors import TrainingInterrupted
import keras

class Sigint(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)

settings = dict(epochs=3, layers=2, units=16, embedding_dim=8, seq_len=24, batch_size=8, lr=1e-2, dropout=0.2,
                seed=11, sample_length=10, sample_temperatures=[0.5], verbose=0)
source, out = sys.argv[1], sys.argv[2]
charlstm.train(source, out=out + "/straight", **settings)
try:
    charlstm.train(source, out=out + "/stopped", callbacks=[Sigint()], **settings)
    raise SystemExit("not interrupted")
except TrainingInterrupted:
    pass
charlstm.train(out=out + "/stopped", resume=True, verbose=0)
for name in ("straight", "stopped"):
    print(name, [row["loss"] for row in csv.DictReader(open(out + "/" + name + "/metrics.csv"))])
"""


def test_exact_resume_on_jax(tiny_corpus, tmp_path):
    # keras is imported inside the script only after KERAS_BACKEND is set in its environment
    proc = subprocess.run([sys.executable, "-c", JAX_RESUME, str(tiny_corpus), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=_env(KERAS_BACKEND="jax"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    straight, resumed = json.loads(lines["straight"].replace("'", '"')), json.loads(lines["stopped"].replace("'", '"'))
    assert len(straight) == 3
    np.testing.assert_allclose([float(v) for v in resumed], [float(v) for v in straight], rtol=1e-5)
