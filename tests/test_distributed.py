"""Issue 8, item 5: data-parallel training on engines that exist.

- sharding: every process's rows of each global batch, together, are the single-process batches;
- `mirrored` (tf.distribute.MirroredStrategy) over 2 logical CPU devices follows single-device training;
- `multihost` (Keras' distribution API on JAX) with two processes on 127.0.0.1: identical weights, one set of
  run files, a killed worker and a relaunched job resume exactly, the model generates with the NumPy runtime.

Distributed runs happen in subprocesses (this pytest process runs Keras on TensorFlow with one device), each
bounded in time and always killed in a `finally`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from charlstm.data.batches import make_sequence_batches, make_window_batches, shard_rows
from charlstm.errors import CharlstmError
from charlstm.generation.model import load
from charlstm.training import strategy
from charlstm.training.feeds import to_tf_dataset

TIMEOUT = 240  # seconds for any one distributed run (they take 10-30 s on 2 cores)
# val_frac 0.13 gives 10 validation rows of 24 characters: an even share for 2 replicas, none left out
SETTINGS = dict(layers=1, units=24, embedding_dim=8, seq_len=24, lr=1e-2, sample_length=20, sample_temperatures=[0.5],
                val_frac=0.13, verbose=0)
RUN_FILES = {"config.json", "metrics.csv", "loss.png", "samples.txt", "last.keras", "best.keras", "model.keras"}


def _env(**extra: str) -> dict[str, str]:
    drop = ("KERAS_BACKEND", "XLA_FLAGS", "TF_CONFIG") + (strategy.ENV_COORDINATOR, strategy.ENV_NUM_PROCESSES,
                                                       strategy.ENV_PROCESS_ID)
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _losses(run: Path) -> list[tuple[int, float, float]]:
    with open(run / "metrics.csv") as fh:
        return [(int(r["epoch"]), float(r["loss"]), float(r["val_loss"])) for r in csv.DictReader(fh)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- sharding --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["sequences", "windows", "validation"])
def test_the_shards_of_all_processes_make_the_single_process_batches(layout):
    ids = np.arange(2000).astype(np.uint16)  # every value unique: a row's first id is its start

    def make(batch: int):
        if layout == "windows":
            return make_window_batches(ids, 10, 3, batch, seed=5)
        return make_sequence_batches(ids, 20, batch, seed=5, shuffle=layout == "sequences")

    whole = make(12)  # global batch 12 = 3 per replica x 4 replicas in 2 processes
    shards = [make(12) for _ in range(2)]
    for index, shard in enumerate(shards):
        shard.distribute(replicas=4, index=index, count=2)
    for epoch in (0, 3):
        reference = list(whole.epoch_batches(epoch))
        parts = [list(s.epoch_batches(epoch)) for s in shards]
        assert len(parts[0]) == len(parts[1]) == len(shards[0])  # the same step count everywhere, as len() says
        for i, (x, _) in enumerate(reference[: len(shards[0])]):
            x0, x1 = parts[0][i][0], parts[1][i][0]
            assert len(x0) == len(x1) and len(x0) % 2 == 0  # an equal share for each of the 2 local devices
            assert sorted(np.concatenate([x0, x1])[:, 0].tolist()) == sorted(x[: 2 * len(x0), 0].tolist())
        left_out = sum(len(x) for x, _ in reference) - sum(len(x) for p in parts for x, _ in p)
        assert 0 <= left_out < 4  # only a last batch's rows beyond a multiple of the replicas
        if layout == "sequences":
            assert left_out == 0  # training batches are all full
    # tf.data feeds a process exactly its NumPy share
    fed = list(to_tf_dataset(shards[1], 2, 3).as_numpy_iterator())
    for (x, y), (ex, ey) in zip(fed, shards[1].epoch_batches(2), strict=True):
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)


def test_shard_rows_drops_a_last_batch_smaller_than_the_replicas():
    rows = np.arange(10)  # two global batches of 4, then 2 rows
    assert shard_rows(rows, 4, 1, 2, replicas=2).tolist() == [1, 3, 5, 7, 9]
    assert shard_rows(rows, 4, 0, 1, replicas=4).tolist() == list(range(8))  # 2 rows cannot feed 4 devices
    assert shard_rows(rows, 4).tolist() == list(range(10))


# -- options -------------------------------------------------------------------------------------------------
def test_multihost_options_come_from_arguments_or_keras_environment(monkeypatch):
    monkeypatch.setenv(strategy.ENV_COORDINATOR, "10.0.0.1:1234,10.0.0.2:2345")
    monkeypatch.setenv(strategy.ENV_NUM_PROCESSES, "2")
    monkeypatch.setenv(strategy.ENV_PROCESS_ID, "1")
    assert strategy.request("multihost") == strategy.Request("multihost", "10.0.0.1:1234", 2, 1)
    assert strategy.request("multihost", process_id=0).process_id == 0  # an argument beats the environment
    assert strategy.backend_for(strategy.request("multihost"), None) == "jax"
    assert strategy.backend_for(strategy.request("mirrored"), None) == "tensorflow"
    with pytest.raises(CharlstmError, match="drop --backend tensorflow"):
        strategy.backend_for(strategy.request("multihost"), "tensorflow")
    with pytest.raises(CharlstmError, match="--process-id must be between 0 and 1, got 2"):
        strategy.request("multihost", process_id=2)
    monkeypatch.delenv(strategy.ENV_COORDINATOR)
    with pytest.raises(CharlstmError, match="needs --coordinator HOST:PORT"):
        strategy.request("multihost")
    with pytest.raises(CharlstmError, match="need --distribute multihost"):
        strategy.request("mirrored", num_processes=2)


def test_cli_refuses_multihost_on_tensorflow_in_one_line(tiny_corpus, tmp_path):
    out = tmp_path / "r"
    r = run_cli("train", str(tiny_corpus), "--out", str(out), "--distribute", "multihost", "--backend",
                "tensorflow", "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "JAX backend" in r.stderr, r.stderr
    assert not out.exists()


# -- mirrored ------------------------------------------------------------------------------------------------
MIRRORED = """
import csv, json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import charlstm
source, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
charlstm.train(source, out=out + "/single", batch_size=16, **settings)
charlstm.train(source, out=out + "/mirrored", batch_size=8, distribute="mirrored", **settings)
"""


def test_mirrored_over_two_devices_follows_single_device_training(tiny_corpus, tmp_path):
    settings = dict(SETTINGS, epochs=3, dropout=0.0)  # no dropout: 2 replicas draw other masks than 1 device
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(tiny_corpus), str(tmp_path), json.dumps(settings)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=_env(TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist = json.loads((tmp_path / "mirrored" / "config.json").read_text())["distribute"]
    assert dist == {"kind": "mirrored", "replicas": 2, "processes": 1, "batch_size_per_replica": 8,
                    "global_batch_size": 16}
    single, mirrored = _losses(tmp_path / "single"), _losses(tmp_path / "mirrored")
    assert [r[0] for r in mirrored] == [1, 2, 3] and mirrored[-1][1] < mirrored[0][1]
    # the same global batch, data and initial weights: the same trajectory up to float summation order
    np.testing.assert_allclose([r[1:] for r in mirrored], [r[1:] for r in single], rtol=1e-4)


# -- multihost -----------------------------------------------------------------------------------------------
MULTIHOST = """
import json, os, signal, sys
import keras, numpy as np
import charlstm

source, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
kill_at, weights = settings.pop("kill_at", None), settings.pop("weights", None)

class Probe(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if [self.epoch, batch] == kill_at:  # a worker dies mid-epoch
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_end(self, logs=None):
        np.savez(weights, *[keras.ops.convert_to_numpy(w) for w in self.model.get_weights()])

charlstm.train(source, out=out, callbacks=[Probe()], **settings)
"""
# no dropout, so that the job can be compared with single-device training on the same global batch
MULTIHOST_SETTINGS = dict(SETTINGS, epochs=2, batch_size=8, dropout=0.0, seed=3)


def _launch(commands: list[tuple[list[str], dict[str, str]]], logs: Path) -> list[subprocess.Popen]:
    """Start `python ARGS` with ENV for each command, output to logs/process<i>.log."""
    procs = []
    for i, (args, env) in enumerate(commands):
        with open(logs / f"process{i}.log", "w") as log:
            procs.append(subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def _finish(procs: list[subprocess.Popen], logs: Path, deadline: float) -> None:
    """Wait for every process to end by `deadline`; a failure shows its log."""
    for i, proc in enumerate(procs):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(1.0, deadline - time.time()))
        log = (logs / f"process{i}.log").read_text()[-3000:]
        assert proc.returncode == 0, f"process {i}: rc {proc.returncode}\n{log}"


def _kill(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _script_args(source: Path, out: Path, settings: dict, process: int) -> list[str]:
    return ["-c", MULTIHOST, str(source), str(out), json.dumps({**settings, "weights": str(out.parent / f"w{process}.npz")})]


@pytest.fixture(scope="module")
def multihost_run(tiny_corpus, tmp_path_factory) -> Path:
    """Two processes on 127.0.0.1, 2 epochs; the cluster comes from Keras' environment variables."""
    base = tmp_path_factory.mktemp("multihost")
    scratch = base / "tmp"
    scratch.mkdir()
    out, port = base / "run", _free_port()
    settings = dict(MULTIHOST_SETTINGS, distribute="multihost")
    cluster = {strategy.ENV_COORDINATOR: f"127.0.0.1:{port}", strategy.ENV_NUM_PROCESSES: "2"}
    procs: list[subprocess.Popen] = []
    try:
        procs = _launch(
            [(_script_args(tiny_corpus, out, settings, i),
              _env(KERAS_BACKEND="jax", TMPDIR=str(scratch), **cluster, **{strategy.ENV_PROCESS_ID: str(i)}))
             for i in range(2)],
            base,
        )
        _finish(procs, base, time.time() + TIMEOUT)
    finally:
        _kill(procs)
    return out


def test_two_processes_train_the_same_weights_and_write_one_set_of_files(multihost_run):
    base = multihost_run.parent
    w0, w1 = np.load(base / "w0.npz"), np.load(base / "w1.npz")
    assert len(w0.files) == len(w1.files) > 0
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
    assert {p.name for p in multihost_run.iterdir()} == RUN_FILES  # no temporary or second copies
    assert [r[0] for r in _losses(multihost_run)] == [1, 2]
    assert (multihost_run / "samples.txt").read_text().count("----- Epoch") == 2  # one writer
    assert not list((base / "tmp").glob("charlstm-worker*"))  # the worker's scratch folder is gone
    cfg = json.loads((multihost_run / "config.json").read_text())
    assert cfg["distribute"] == {"kind": "multihost", "replicas": 2, "processes": 2, "batch_size_per_replica": 8,
                                 "global_batch_size": 16}
    assert cfg["trained_with"]["backend"] == "jax"
    # the chief's last checkpoint holds the weights both processes ended with
    last = load(multihost_run / "last.keras")
    np.testing.assert_array_equal(last.dense_kernel, w0[w0.files[-2]])
    model = load(multihost_run / "model.keras")
    text = model.generate("the ", 80, 0.8, seed=1)
    assert len(text) == 80 and set(text) <= set(model.vocab.chars)


def test_a_killed_worker_and_a_relaunched_job_resume_exactly(multihost_run, tiny_corpus, tmp_path):
    out = tmp_path / "run"
    port = _free_port()
    settings = dict(MULTIHOST_SETTINGS, distribute="multihost", coordinator=f"127.0.0.1:{port}", num_processes=2)
    procs: list[subprocess.Popen] = []
    (tmp_path / "tmp").mkdir()  # the killed worker cannot remove its scratch folder: keep it in tmp_path
    env = _env(KERAS_BACKEND="jax", TMPDIR=str(tmp_path / "tmp"))
    try:
        procs = _launch(
            [(_script_args(tiny_corpus, out, {**settings, "process_id": i, **({"kill_at": [1, 2]} if i else {})}, i),
              env) for i in range(2)],
            tmp_path,
        )
        assert procs[1].wait(timeout=TIMEOUT) == -9  # the worker died in epoch 2, after its 3rd batch
        # the chief's next step with it fails at once: it says how to go on (JAX then ends it by itself, in
        # up to its 100 s heartbeat timeout; the test does not wait for that)
        deadline = time.time() + 60
        while "Relaunch every process with --resume" not in (tmp_path / "process0.log").read_text():
            assert time.time() < deadline and procs[0].poll() is None, (tmp_path / "process0.log").read_text()[-3000:]
            time.sleep(0.5)
    finally:
        _kill(procs)
    assert [r[0] for r in _losses(out)] == [1]
    assert load(out / "last.keras").meta["train_state"]["epoch"] == 1

    port = _free_port()  # relaunch both, as a user would: the command line, --resume
    cli = ["-m", "charlstm.cli", "train", "--resume", str(out), "--distribute", "multihost", "--coordinator",
           f"127.0.0.1:{port}", "--num-processes", "2", "--quiet"]
    procs = []
    try:
        procs = _launch([([*cli, "--process-id", str(i)], env) for i in range(2)], tmp_path)
        _finish(procs, tmp_path, time.time() + TIMEOUT)
    finally:
        _kill(procs)
    # the same epochs, and the same numbers as the uninterrupted job: data order and dropout masks are a
    # function of (seed, epoch) on every process
    resumed, straight = _losses(out), _losses(multihost_run)
    assert [r[0] for r in resumed] == [1, 2]
    np.testing.assert_allclose([r[1:] for r in resumed], [r[1:] for r in straight], rtol=1e-5)
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert len(load(out / "model.keras").generate("the ", 40, 1.0, seed=2)) == 40



def test_two_processes_follow_single_device_training(multihost_run, tiny_corpus, tmp_path):
    single = tmp_path / "single"  # one JAX process, one device, the job's global batch
    cfg = dict(MULTIHOST_SETTINGS, batch_size=16)
    proc = subprocess.run(
        [sys.executable, "-c", "import charlstm, json, sys; charlstm.train(sys.argv[1], out=sys.argv[2], "
         "backend='jax', **json.loads(sys.argv[3]))", str(tiny_corpus), str(single), json.dumps(cfg)],
        capture_output=True, text=True, timeout=TIMEOUT, env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the same data, initial weights and global batch: the same trajectory up to float summation order
    np.testing.assert_allclose([r[1:] for r in _losses(multihost_run)], [r[1:] for r in _losses(single)], rtol=1e-4)
