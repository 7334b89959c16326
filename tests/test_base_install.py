"""Issue 21: the default install is Keras + PyTorch. In a process where TensorFlow and JAX cannot be imported
(an import hook hides them, as a base install lacks them) charlstm trains on torch and generates, TensorFlow
never loads, and asking for what only the extras do is one line naming the extra (exit 2). A process that
imported Keras with a slower backend first is told so once, and trains all the same.

The pytest process runs Keras on TensorFlow, so everything on torch runs in subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_backends import TINY, _env

from charlstm.training import backend as backends
from charlstm.training import probe

pytest.importorskip("torch")

# a base install, as far as imports go: TensorFlow and JAX are not there
HIDE = r"""
import sys

HIDDEN = ("tensorflow", "jax", "jaxlib", "tf_keras")

class BaseInstall:  # every finder finds nothing for the hidden packages: find_spec -> None, import fails
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)

sys.meta_path[:] = [BaseInstall(f) for f in sys.meta_path]
"""

BASE_RUN = HIDE + r"""
import json
import charlstm
from charlstm.cli import main

code = main(sys.argv[2:])
out = {"code": code, "tensorflow": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "jax"))}
if code == 0:
    import keras
    model = charlstm.load(sys.argv[1] + "/model.keras")
    out["backend"] = keras.backend.backend()
    import os
    out["omp"] = os.environ.get("OMP_WAIT_POLICY")
    out["text"] = model.generate("the ", 40, 0.8, seed=1)
print("RESULT " + json.dumps(out))
"""


def _base(*args: str, env: dict | None = None) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", BASE_RUN, *args], capture_output=True, text=True, timeout=600,
                          env=_env(TF_CPP_MIN_LOG_LEVEL="3", **(env or {})))
    assert "RESULT " in proc.stdout, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1]), proc.stderr


@pytest.fixture(scope="module")
def base_run(tiny_corpus, tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("base") / "run"
    cache = out.parent / "cache"  # an empty probe cache: nothing remembered, nothing to measure
    result, stderr = _base(str(out), "train", str(tiny_corpus), "--epochs", "2", "--out", str(out), "--tensorboard",
                           *TINY, env={"CHARLSTM_CACHE": str(cache)})
    return out, result, stderr


def test_a_base_install_trains_on_torch_and_generates_without_tensorflow(base_run):
    out, result, stderr = base_run
    assert result["code"] == 0, stderr[-3000:]
    assert result["tensorflow"] == []  # neither TensorFlow nor JAX entered sys.modules
    assert result["backend"] == "torch" and result["omp"] == "PASSIVE"
    trained = json.loads((out / "config.json").read_text())["trained_with"]
    assert trained["backend"] == "torch" and trained["fused_lstm"] is True and trained["device"]["kind"] == "cpu"
    assert len(result["text"]) == 40
    assert not (out.parent / "cache" / probe.CACHE_NAME).exists()  # one backend installed: nothing measured


def test_tensorboard_on_torch_writes_events_without_tensorflow(base_run):
    out, result, _ = base_run
    assert result["tensorflow"] == []
    for split in ("train", "validation"):
        assert list((out / "tensorboard" / split).glob("events.out.tfevents.*")), split


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["--backend", "tensorflow"], "tensorflow"),
        (["--distribute", "mirrored"], "tensorflow"),
        (["--backend", "jax"], "jax"),
        (["--distribute", "multihost"], "jax"),
    ],
)
def test_what_only_an_extra_does_is_one_line_naming_it(tiny_corpus, tmp_path, args, extra):
    out = tmp_path / "r"
    result, stderr = _base(str(out), "train", str(tiny_corpus), *args, "--out", str(out), *TINY)
    assert result["code"] == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlstm: error: "), stderr
    assert f'pip install "charlstm[{extra}]" -c constraints.txt' in lines[0]
    assert result["tensorflow"] == [] and not out.exists()


def test_import_charlstm_first_gives_keras_the_fast_engine():
    code = "import charlstm, keras, os; print(keras.backend.backend(), os.environ['CHARLSTM_PRESET_BACKEND'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=_env(TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["torch", "torch"]


STUCK = r"""
import json, sys
import keras  # as a notebook does first: Keras' own default backend (TensorFlow here)
import charlstm
from charlstm.training import probe
probe.measure = lambda *a, **k: (_ for _ in ()).throw(AssertionError("measured"))  # no choice is left to measure
source, out = sys.argv[1], sys.argv[2]
settings = dict(epochs=1, layers=1, units=16, embedding_dim=8, seq_len=24, batch_size=8, sample_length=0,
                sample_temperatures=[], verbose=0)
for name in ("a", "b"):
    charlstm.train(source, out=out + "/" + name, **settings)
print("RESULT " + json.dumps(keras.backend.backend()))
"""


def test_keras_imported_first_with_another_backend_warns_once_and_trains(tiny_corpus, tmp_path):
    proc = subprocess.run([sys.executable, "-c", STUCK, str(tiny_corpus), str(tmp_path)], capture_output=True,
                          text=True, timeout=600,
                          env=_env(TF_CPP_MIN_LOG_LEVEL="3", KERAS_HOME=str(tmp_path / "kh"),
                                   CHARLSTM_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.split("RESULT ", 1)[1]) == "tensorflow"
    warnings = [line for line in proc.stderr.splitlines() if "Keras was imported with the tensorflow backend" in line]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert warnings[0].startswith("charlstm: warning: ")
    assert "trains on tensorflow" in warnings[0] and "`import charlstm` before `import keras`" in warnings[0]
    assert "KERAS_BACKEND=torch" in warnings[0]
    for name in ("a", "b"):
        assert json.loads((tmp_path / name / "config.json").read_text())["trained_with"]["backend"] == "tensorflow"


def test_the_warning_quotes_what_this_machine_measured(monkeypatch, tmp_path):
    monkeypatch.setenv("CHARLSTM_CACHE", str(tmp_path))
    net = probe.default_network()
    figures = {"tensorflow": {"chars_per_s": 26598, "device": "cpu"}, "torch": {"chars_per_s": 43965, "device": "cpu"}}
    cache = {probe.machine_key(): {json.dumps(net, sort_keys=True): {"backend": "torch", "figures": figures}}}
    (tmp_path / probe.CACHE_NAME).write_text(json.dumps(cache))
    message = backends.stuck_message("tensorflow", net)
    assert "measured: tensorflow 26,598, torch 43,965 target chars/s" in message
    assert backends.stuck_message("torch", net) is None  # stuck with the fast one: nothing to say
    # where TensorFlow measured faster, a process stuck on torch hears that instead
    cache[probe.machine_key()][json.dumps(net, sort_keys=True)]["backend"] = "tensorflow"
    (tmp_path / probe.CACHE_NAME).write_text(json.dumps(cache))
    assert "KERAS_BACKEND=tensorflow" in backends.stuck_message("torch", net)


def test_a_user_set_keras_backend_is_a_choice_not_a_preset(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.delenv(backends.PRESET_ENV, raising=False)
    assert backends._user_backend() == "tensorflow"
    monkeypatch.setenv(backends.PRESET_ENV, "tensorflow")  # set by charlstm (preset or its own choice)
    assert backends._user_backend() is None


def test_a_torch_process_lets_openmp_threads_wait_passively():
    env: dict[str, str] = {}
    backends.torch_threads_wait_passively(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}  # the user's setting wins
    backends.torch_threads_wait_passively(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}
