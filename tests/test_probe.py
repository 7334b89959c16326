"""Issue 11: with no backend named, training uses the faster one on this machine, measured once and remembered."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from charlstm.training import probe
from charlstm.training.recipes import make_config

CPU = "cpu"


def fig(speed: float, device: str = CPU) -> dict:
    return {"backend": "?", "device": device, "chars_per_s": speed}


class FakeMeasure:
    """Stands in for the subprocess measurements: given figures, and how often each backend was measured."""

    def __init__(self, **figures: dict | None) -> None:
        self.figures, self.calls = figures, []

    def __call__(self, backend: str, network: dict) -> dict | None:
        assert set(network) == set(probe.NETWORK_KEYS)
        self.calls.append(backend)
        return self.figures.get(backend)


INSTALLED = probe.installed


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLSTM_CACHE", str(tmp_path))
    # these tests stage TensorFlow and JAX; torch, the third, is test_torch's three-backend case
    monkeypatch.setattr(probe, "installed", lambda: ["tensorflow", "jax"])
    return tmp_path / probe.CACHE_NAME


def test_pick_prefers_a_gpu_then_the_faster_cpu_backend():
    assert probe.pick({"tensorflow": fig(90e3), "jax": fig(120e3)}) == "jax"
    assert probe.pick({"tensorflow": fig(130e3), "jax": fig(120e3)}) == "tensorflow"
    assert probe.pick({"tensorflow": fig(100e3), "jax": fig(100e3)}) == "tensorflow"  # tie: TensorFlow
    assert probe.pick({"tensorflow": fig(10e3, "gpu"), "jax": fig(120e3)}) == "tensorflow"
    assert probe.pick({"tensorflow": fig(130e3), "jax": fig(20e3, "gpu")}) == "jax"
    assert probe.pick({"jax": fig(50e3)}) == "jax"  # TensorFlow's measurement failed
    assert probe.pick({}) == "tensorflow"


def test_measures_once_per_machine_and_remembers(private_cache, monkeypatch):
    said: list[str] = []
    mine = probe.machine_key()
    fake = FakeMeasure(tensorflow=fig(60e3), jax=fig(80e3))
    assert probe.choose(measure_one=fake, say=said.append) == "jax"
    assert fake.calls == ["tensorflow", "jax"]
    assert "60,000" in said[-1] and "80,000" in said[-1] and said[-1].endswith("training with jax")
    default_net = json.dumps(probe.default_network(), sort_keys=True)
    saved = json.loads(private_cache.read_text())[mine][default_net]
    assert saved["backend"] == "jax" and saved["figures"]["tensorflow"]["chars_per_s"] == 60e3

    # remembered: no measuring, whatever the figures would say now
    fake.figures = {"tensorflow": fig(90e3), "jax": fig(10e3)}
    assert probe.choose(measure_one=fake, say=said.append) == "jax"
    assert fake.calls == ["tensorflow", "jax"]
    assert probe.choose(measure_one=fake, say=said.append, refresh=True) == "tensorflow"

    # another network is measured for itself: the winner depends on the network too
    classic = probe.network_of(make_config("classic"))
    fake.figures = {"tensorflow": fig(5e3), "jax": fig(4e3)}
    assert probe.choose(classic, measure_one=fake, say=said.append) == "tensorflow"
    assert probe.choose(measure_one=fake, say=said.append) == "tensorflow"  # the default's answer is kept
    assert fake.calls == ["tensorflow", "jax"] * 3 and "1 x LSTM(128), batch 128" in said[-2]

    # another machine (or other library versions) sharing the cache file is measured for itself
    monkeypatch.setattr(probe, "machine_key", lambda: '{"cpu": "another"}')
    fake.figures = {"tensorflow": fig(10e3), "jax": fig(20e3)}
    assert probe.choose(measure_one=fake, say=said.append) == "jax"
    assert set(json.loads(private_cache.read_text())) == {'{"cpu": "another"}', mine}


def test_a_failed_measurement_is_not_remembered(private_cache):
    said: list[str] = []
    fake = FakeMeasure(tensorflow=None, jax=None)
    assert probe.choose(measure_one=fake, say=said.append) == "tensorflow"
    assert not private_cache.exists() and "no backend could be measured" in said[-1]
    fake.figures = {"tensorflow": None, "jax": fig(50e3)}  # one backend broken: the other one
    assert probe.choose(measure_one=fake, say=said.append) == "jax"
    assert fake.calls == ["tensorflow", "jax", "tensorflow", "jax"]


def test_an_unreadable_cache_is_measured_again(private_cache):
    private_cache.write_text("{not json")
    fake = FakeMeasure(tensorflow=fig(70e3), jax=fig(50e3))
    assert probe.choose(measure_one=fake, say=lambda _: None) == "tensorflow"
    saved = json.loads(private_cache.read_text())[probe.machine_key()]
    assert [entry["backend"] for entry in saved.values()] == ["tensorflow"]


def test_a_gpu_ends_the_measuring(private_cache):
    fake = FakeMeasure(tensorflow=fig(5e3, "gpu"), jax=fig(80e3))
    assert probe.choose(measure_one=fake, say=lambda _: None) == "tensorflow" and fake.calls == ["tensorflow"]


def test_without_jax_installed_tensorflow_without_measuring(private_cache, monkeypatch):
    real = probe.importlib.util.find_spec
    monkeypatch.setattr(probe, "installed", INSTALLED)
    monkeypatch.setattr(probe.importlib.util, "find_spec", lambda name: None if name in ("jax", "torch") else real(name))
    fake = FakeMeasure(tensorflow=fig(1), jax=fig(2), torch=fig(3))
    assert probe.choose(measure_one=fake) == "tensorflow" and fake.calls == []


def test_three_backends_are_measured_and_the_fastest_remembered(private_cache, monkeypatch):
    monkeypatch.setattr(probe, "installed", lambda: list(probe.ORDER))
    fake = FakeMeasure(tensorflow=fig(60e3), jax=fig(50e3), torch=fig(90e3))
    said: list[str] = []
    assert probe.choose(measure_one=fake, say=said.append) == "torch"
    assert fake.calls == ["tensorflow", "jax", "torch"] and said[-1].endswith("training with torch")
    (saved,) = json.loads(private_cache.read_text())[probe.machine_key()].values()
    assert saved["backend"] == "torch" and set(saved["figures"]) == {"tensorflow", "jax", "torch"}
    assert probe.pick({"tensorflow": fig(100e3), "torch": fig(100e3)}) == "tensorflow"  # a tie: TensorFlow
    assert probe.pick({"tensorflow": fig(100e3), "torch": fig(9e3, "gpu")}) == "torch"  # CUDA: cuDNN too


def test_a_process_that_names_no_backend_takes_the_remembered_one(tmp_path):
    # the step `charlstm train` takes before Keras loads; that a fresh run records what select() returned is
    # test_backends.py's test_a_fresh_run_records_the_default_backend
    net = json.dumps(probe.default_network(), sort_keys=True)
    (tmp_path / probe.CACHE_NAME).write_text(json.dumps({probe.machine_key(): {net: {"backend": "jax"}}}))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    code = "import sys; from charlstm.training import backend; print(backend.select()); print('keras' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**env, "CHARLSTM_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["jax", "False"]  # chosen before Keras is imported
    assert "measuring" not in proc.stderr  # remembered, not measured again


def test_a_quiet_run_measures_without_a_word(private_cache, monkeypatch, capsys):
    """`charlstm train --quiet` with no backend named: the first-run measurement prints nothing (issue 18)."""
    from charlstm.training import backend as backends

    fake = FakeMeasure(tensorflow=fig(60e3), jax=fig(80e3))
    monkeypatch.setattr(probe.choose, "__kwdefaults__", {**probe.choose.__kwdefaults__, "measure_one": fake})
    monkeypatch.setattr(backends, "BACKENDS", ())  # no engine counts as set up already in this process
    assert backends.default_backend(None, quiet=True) == "jax"
    assert fake.calls == ["tensorflow", "jax"] and capsys.readouterr().err == ""
    private_cache.unlink()  # measured again, and this time it says so
    assert backends.default_backend(None, quiet=False) == "jax"
    assert "measuring which Keras backend" in capsys.readouterr().err
