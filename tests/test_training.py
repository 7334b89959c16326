"""Issue 3: sequence batches, validation loss, resume equivalence, signals, damaged checkpoints, fine-tuning."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY_TEXT, run_cli

import charlstm
from charlstm.data.batches import make_sequence_batches, sequence_layout, sequence_starts, split_ids
from charlstm.errors import CharlstmError, TrainingInterrupted
from charlstm.generation.model import load

SMALL = dict(layers=1, units=32, embedding_dim=8, seq_len=24, batch_size=8, lr=1e-2, sample_length=20,
             sample_temperatures=[0.5], verbose=0)


def _metrics(run: Path) -> list[dict[str, float]]:
    with open(run / "metrics.csv") as fh:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(fh)]


# -- batches -----------------------------------------------------------------------------------------
def test_sequence_batches_cover_split_shift_targets_and_vary_offsets():
    ids = np.arange(1000).astype(np.uint16)  # every value unique: a row's first id is its start
    before = ids.copy()
    ds = make_sequence_batches(ids, seq_len=20, batch_size=7, seed=3)
    count, n_offsets = sequence_layout(len(ids), 20)
    offsets = set()
    for epoch in range(4):
        seen = np.zeros(len(ids), bool)
        starts = []
        for x, y in ds.epoch_batches(epoch):  # what training is fed
            assert x.shape == (7, 20) and y.shape == (7, 20)  # every batch full: one compiled shape
            np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
            np.testing.assert_array_equal(y[:, -1], x[:, -1] + 1)
            starts += x[:, 0].tolist()
            for row in x:
                seen[row[0] : row[0] + 21] = True
        starts = np.array(starts)
        assert len(set(starts.tolist())) == count  # each sequence of the epoch appears (wrap-around repeats)
        first = starts.min()
        offsets.add(int(first))
        assert first < n_offsets
        assert seen[first : first + count * 20 + 1].all()  # contiguous cover from the offset on
        assert len(ids) - (first + count * 20 + 1) < 20  # less than one sequence left unread at the end
    assert len(offsets) > 1, "the offset must change between epochs"
    np.testing.assert_array_equal(ids, before)  # the corpus itself is never shuffled in place


def test_batch_rows_are_slices_of_the_corpus():
    ids = np.random.default_rng(0).integers(0, 50, 500).astype(np.uint8)
    ds = make_sequence_batches(ids, seq_len=16, batch_size=4, seed=1)
    ds.set_epoch(2)
    x, y = ds[0]
    for row, start in zip(x, ds.starts[:4], strict=True):
        np.testing.assert_array_equal(row, ids[start : start + 16])


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = sequence_starts(5000, 50, seed=7, epoch=3)
    b = sequence_starts(5000, 50, seed=7, epoch=3)
    c = sequence_starts(5000, 50, seed=7, epoch=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_keeps_the_last_fraction_contiguous():
    ids = np.arange(100)
    train, val = split_ids(ids, 0.1)
    np.testing.assert_array_equal(train, np.arange(90))
    np.testing.assert_array_equal(val, np.arange(90, 100))


# -- validation ----------------------------------------------------------------------------------------
def test_validation_loss_equals_direct_computation(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    model = charlstm.train(str(tiny_corpus), out=out, epochs=1, **SMALL)
    reported = _metrics(out)[-1]
    # direct: the same split, the val text cut into seq_len chunks from its start, mean cross-entropy
    ids = model.vocab.encode(TINY_TEXT)
    _, val = split_ids(ids, 0.1)
    n = (len(val) - 1) // 24
    x = np.stack([val[i * 24 : i * 24 + 24] for i in range(n)])
    y = np.stack([val[i * 24 + 1 : i * 24 + 25] for i in range(n)])
    last = load(out / "last.keras")  # the weights at the end of epoch 1, when validation ran
    logits, _ = last.forward(x)
    logits = logits.astype(np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll = lse - np.take_along_axis(logits, y[..., None].astype(np.int64), -1)[..., 0]
    assert reported["val_loss"] == pytest.approx(nll.mean(), abs=2e-4)
    assert reported["val_bpc"] == pytest.approx(nll.mean() / math.log(2), abs=3e-4)


# -- resume ------------------------------------------------------------------------------------------
class _SigintAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tiny_corpus, tmp_path):
    settings = dict(SMALL, dropout=0.2, layers=2, epochs=3, seed=11)
    straight = tmp_path / "straight"
    charlstm.train(str(tiny_corpus), out=straight, **settings)

    resumed = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        charlstm.train(str(tiny_corpus), out=resumed, callbacks=[_SigintAfterEpoch(0)], **settings)
    assert len(_metrics(resumed)) == 1
    charlstm.train(out=resumed, resume=True, verbose=0)

    a, b = _metrics(straight), _metrics(resumed)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4)
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-4)
        assert rb["lr"] == pytest.approx(ra["lr"], rel=1e-6)


def test_resume_needs_a_run_and_refuses_to_overwrite(tiny_corpus, tmp_path, tiny_run):
    with pytest.raises(CharlstmError, match="no last.keras"):
        charlstm.train(out=tmp_path / "nothing", resume=True)
    with pytest.raises(CharlstmError, match="already holds a run"):
        charlstm.train(str(tiny_corpus), out=tiny_run, epochs=1, verbose=0)


def test_damaged_checkpoint_is_a_clear_error_not_a_fresh_start(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    charlstm.train(str(tiny_corpus), out=out, epochs=1, **SMALL)
    last = out / "last.keras"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    r = run_cli("train", "--resume", str(out), "--epochs", "3")
    assert r.returncode == 2, r.stderr
    assert "last.keras" in r.stderr and "Traceback" not in r.stderr
    assert len(_metrics(out)) == 1  # nothing was retrained or overwritten
    assert last.read_bytes() == data[: len(data) // 2]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_training_leaves_a_resumable_run(tiny_corpus, tmp_path, sig):
    out = tmp_path / "run"
    text = tmp_path / "long.txt"
    text.write_text(TINY_TEXT * 20, encoding="utf-8")
    cmd = [sys.executable, "-m", "charlstm.cli", "train", str(text), "--out", str(out), "--epochs", "200",
           "--layers", "1", "--units", "32", "--seq-len", "24", "--batch-size", "8", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (out / "metrics.csv").exists(), proc.stderr.read() if proc.poll() is not None else "no epoch in 120 s"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"charlstm train --resume {out}" in err
    model = load(out / "last.keras")  # loadable, and it generates
    assert len(model.generate("the ", 10, seed=0)) == 10
    epochs_done = len(_metrics(out))
    r = run_cli("train", "--resume", str(out), "--epochs", str(epochs_done + 1), "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(_metrics(out)) == epochs_done + 1


# -- options -----------------------------------------------------------------------------------------
def test_gru_schedule_and_early_stopping_options(tiny_corpus, tmp_path):
    out = tmp_path / "gru"
    model = charlstm.train(str(tiny_corpus), out=out, cell="gru", lr_schedule="step", epochs=2, **SMALL)
    assert model.layers[0].cell == "gru"
    rows = _metrics(out)
    assert len(rows) == 2
    out2 = tmp_path / "es"
    charlstm.train(str(tiny_corpus), out=out2, epochs=50, early_stopping=1, **dict(SMALL, lr=0.5))
    assert len(_metrics(out2)) < 50  # a learning rate this high stops improving fast


def test_init_from_fine_tunes_and_checks_the_vocabulary(tiny_corpus, tiny_run, tmp_path):
    base = load(tiny_run / "model.keras")
    out = tmp_path / "ft"
    tuned = charlstm.train(str(tiny_corpus), out=out, init_from=str(tiny_run / "model.keras"), epochs=1, verbose=0)
    assert tuned.vocab == base.vocab
    first = _metrics(out)[0]
    base_rows = _metrics(tiny_run)
    # it starts from the trained weights: its first epoch is already far better than the base's first epoch
    assert first["loss"] < (base_rows[0]["loss"] + base_rows[-1]["loss"]) / 2
    # a text with characters the model lacks: the vocabulary grows (issue 17; tests/test_grow.py)
    other = tmp_path / "other.txt"
    other.write_text("ZZZ QQQ xyz " * 40, encoding="utf-8")
    r = run_cli("train", str(other), "--init-from", str(tiny_run / "model.keras"), "--out", str(tmp_path / "grown"),
                "--epochs", "1", "--sample-length", "0")
    assert r.returncode == 0, r.stderr
    assert "adds 4 characters it lacked: 'Q', 'Z', 'x', 'z'" in r.stdout


def test_run_directory_files(tiny_run):
    import json

    cfg = json.loads((tiny_run / "config.json").read_text())
    assert len(cfg["corpus"]["sha256"]) == 64
    assert cfg["config"]["seq_len"] == 32 and cfg["vocab"]["size"] > 10
    rows = _metrics(tiny_run)
    assert set(rows[0]) == {"epoch", "time", "loss", "bpc", "val_loss", "val_bpc", "lr", "partial", "copied"}
    assert all(r["partial"] == 0 for r in rows)  # only a time budget (or a signal) cuts a row short
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (tiny_run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # model.keras is the best by validation loss
    best = min(range(len(rows)), key=lambda i: rows[i]["val_loss"])
    assert load(tiny_run / "model.keras").meta["train_state"]["best"] == pytest.approx(rows[best]["val_loss"])


def test_resume_refuses_a_changed_corpus(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TINY_TEXT, encoding="utf-8")
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        charlstm.train(str(text), out=out, callbacks=[_SigintAfterEpoch(0)], **dict(SMALL, epochs=3))
    text.write_text(TINY_TEXT.replace("cat", "bat"), encoding="utf-8")
    with pytest.raises(CharlstmError, match="changed since the run"):
        charlstm.train(out=out, resume=True)


class _PoisonWeightsInEpoch(keras.callbacks.Callback):
    """Make the loss NaN from the first batch of epoch `epoch` on (index 0-based)."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch
        self.current = -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.current == self.epoch:
            w = self.model.layers[-1].kernel
            w.assign(np.full(w.shape, np.nan, dtype="float32"))


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tiny_corpus, tmp_path):
    from charlstm.errors import TrainingDiverged

    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="NaN"):
        charlstm.train(str(tiny_corpus), out=out, callbacks=[_PoisonWeightsInEpoch(1)], **dict(SMALL, epochs=4))
    good = load(out / "last.keras")
    assert good.meta["train_state"]["epoch"] == 1
    assert np.isfinite(good.dense_kernel).all()
    assert len(_metrics(out)) == 1


def test_val_file_tensorboard_and_cli_evaluate(tiny_corpus, tmp_path):
    val = tmp_path / "val.txt"
    val.write_text("the dog sat on the mat by the log.\n" * 6, encoding="utf-8")
    out = tmp_path / "run"
    charlstm.train(str(tiny_corpus), out=out, epochs=1, val_file=str(val), tensorboard=True, **SMALL)
    import json

    corpus = json.loads((out / "config.json").read_text())["corpus"]
    assert corpus["val_chars"] == len(val.read_text()) and corpus["train_chars"] == len(TINY_TEXT)
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    r = run_cli("evaluate", str(out / "model.keras"), str(val))
    assert r.returncode == 0, r.stderr
    nats = float(r.stdout.split("nats/char")[0].split()[-1])
    bits = float(r.stdout.split("bits/char")[0].split()[-1])
    assert bits == pytest.approx(nats / math.log(2), abs=2e-4)
    assert nats == pytest.approx(load(out / "model.keras").evaluate(val.read_text())["nats_per_char"], abs=1e-4)
