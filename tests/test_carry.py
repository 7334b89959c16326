"""Issue 23: the LSTM state carried from batch to batch (training/carry.py, data/batches.StreamBatches), and the
held-out text read as a stream (training/stream_validation.py).

The layout is plain NumPy (tested in this process); training runs on torch, so those checks run in a
subprocess, as `charlstm train --backend torch` would (this pytest process runs Keras on TensorFlow).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_backends import _env

from charlstm.data.batches import StreamBatches
from charlstm.errors import CharlstmError
from charlstm.training import carry
from charlstm.training.recipes import make_config


# -- the layout ----------------------------------------------------------------------------------------------
def test_each_row_continues_the_same_row_of_the_batch_before():
    ids = np.arange(10_000, dtype=np.int32)  # every id is its own position: continuity is arithmetic
    b = StreamBatches(ids, seq_len=16, batch_size=8, seed=3)
    for epoch in (0, 1, 5):
        b.set_epoch(epoch)
        batches = [b[k] for k in range(len(b))]
        for (x0, y0), (x1, _) in zip(batches, batches[1:], strict=False):
            np.testing.assert_array_equal(x1["chars"][:, 0], y0[:, -1])  # row r of k+1 starts where row r of k ended
            np.testing.assert_array_equal(x1["chars"], x0["chars"] + 16)
        for x, y in batches:
            np.testing.assert_array_equal(y, x["chars"] + 1)  # targets: the next character
        # the streams tile the text without overlap, and each epoch reads almost all of it
        starts = np.concatenate([x["chars"][:, 0] for x, _ in batches])
        assert len(np.unique(starts)) == len(starts)
        assert len(starts) * 16 >= len(ids) - 8 * 16 - 16 - 1
        np.testing.assert_array_equal(batches[0][0]["reset"], np.ones(8))  # an epoch starts every stream afresh
        assert all(x["reset"].sum() == 0 for x, _ in batches[1:])


def test_the_layout_is_a_pure_function_of_seed_and_epoch():
    ids = np.arange(5_000, dtype=np.int32)
    one, two = StreamBatches(ids, 16, 4, seed=1), StreamBatches(ids, 16, 4, seed=1)
    np.testing.assert_array_equal(one.epoch_rows(2), two.epoch_rows(2))
    offsets = {int(one.epoch_rows(e)[0]) for e in range(20)}
    assert len(offsets) > 1 and max(offsets) < 16  # a fresh offset every epoch, inside the first row


def test_random_resets_are_drawn_from_the_seed_and_the_row():
    ids = np.arange(200_000, dtype=np.int32)
    b = StreamBatches(ids, 16, 32, seed=7, reset_prob=0.1)
    resets = np.stack([b.batch(b.epoch_rows(0), k)[0]["reset"] for k in range(1, len(b))])
    assert 0.07 < resets.mean() < 0.13
    again = StreamBatches(ids, 16, 32, seed=7, reset_prob=0.1)
    np.testing.assert_array_equal(again.batch(again.epoch_rows(0), 5)[0]["reset"], resets[4])
    other = StreamBatches(ids, 16, 32, seed=8, reset_prob=0.1)
    assert not np.array_equal(other.resets(b.epoch_rows(0)), b.resets(b.epoch_rows(0)))


def test_a_text_too_short_for_the_streams_is_one_clear_error_or_no_carry():
    with pytest.raises(CharlstmError, match="too short for 64 streams"):
        StreamBatches(np.zeros(1_000, np.int32), 64, 64, seed=1)
    config = make_config("default")
    assert carry.why_not(config, backend="torch", tagged=False, items=False, replicas=1, chars=1_000, batch=64)
    assert carry.why_not(config, backend="torch", tagged=False, items=False, replicas=1, chars=10**6, batch=64) is None
    # every other case names why, and the classic recipe never carries
    assert "windows" in carry.why_not(make_config("classic", carry_state=True), backend="torch", tagged=False,
                                      items=False, replicas=1)
    assert "tensorflow" in carry.why_not(config, backend="tensorflow", tagged=False, items=False, replicas=1)
    assert "gru" in carry.why_not(make_config("default", cell="gru"), backend="torch", tagged=False, items=False,
                                  replicas=1)
    assert "off" in carry.why_not(make_config("default", carry_state=False), backend="torch", tagged=False,
                                  items=False, replicas=1)
    with pytest.raises(CharlstmError, match="carry-reset"):
        make_config("default", carry_reset=1.5)


# -- on torch ------------------------------------------------------------------------------------------------
def _run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          env=_env(KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


STEP = r"""
import json, sys
import numpy as np, keras, torch
from charlstm.data.batches import StreamBatches
from charlstm.training import torch_engine
from charlstm.training.carry import CarriedState
from charlstm.training.model import ModelSpec, build_model, compile_model
from charlstm.training.recipes import make_config

ids = np.random.default_rng(0).integers(0, 20, 3_000).astype(np.int32)
batches = StreamBatches(ids, seq_len=12, batch_size=4, seed=5)
rows = batches.epoch_rows(0)
data = [batches.batch(rows, k) for k in range(3)]
keras.utils.set_random_seed(2)
model = build_model(ModelSpec(20, embedding_dim=8, layers=2, units=16))
compile_model(model, make_config("default", lr=1e-12, clipnorm=None), 3)  # weights stay put: every forward comparable
state = CarriedState()
handed = []
begin = state.begin
state.begin = lambda reset, batch: handed.append(begin(reset, batch)) or handed[-1]
out = {"switched": torch_engine.prepare(model, carry=state)}
kept = []
for x, y in data:
    model.train_on_batch(x, y)
    kept.append([(h.clone(), c.clone()) for h, c in state.state])
forward = torch_engine.direct_forward(model)
with torch.no_grad():
    _, whole = forward(torch.as_tensor(np.concatenate([x["chars"] for x, _ in data], axis=1)), training=False)
    _, alone = forward(torch.as_tensor(data[2][0]["chars"]), training=False)
diff = lambda a, b: max(float((p - q).abs().max()) for s, t in zip(a, b) for p, q in zip(s, t))
out["first_from_zeros"] = handed[0] is None
out["handed_is_kept"] = [diff(handed[k], kept[k - 1]) for k in (1, 2)]
out["carried_vs_whole"] = diff(kept[2], whole)
out["carried_vs_alone"] = diff(kept[2], alone)
out["batches"] = state.batches
print("RESULT " + json.dumps(out))
"""


def test_the_state_a_batch_ends_with_is_the_state_the_next_one_starts_from():
    r = _run(STEP)
    assert r["switched"]["carry_state"] and r["switched"]["direct_forward"]
    assert r["batches"] == 3 and r["first_from_zeros"]
    assert r["handed_is_kept"] == [0.0, 0.0]  # passed in = came out
    # three carried batches end where one pass over the three rows joined end to end ends ...
    assert r["carried_vs_whole"] < 1e-5
    # ... and not where the last batch alone, from zeros, would (what a dropped carry gives)
    assert r["carried_vs_alone"] > 1e-3


RESUME = r"""
import json, os, signal, sys, zipfile
import numpy as np, keras
import charlstm
from charlstm.errors import TrainingInterrupted
from charlstm.training import budget_plan, stream_validation, torch_engine

class Clock:
    now = 0.0
    def __call__(self):
        return self.now

class Tick(keras.callbacks.Callback):  # every step 0.05 simulated s, every interval end 0.3; per-step losses
    def __init__(self, clock, stop_at=None):
        super().__init__()
        self.clock, self.stop_at, self.losses, self.seen = clock, stop_at, [], 0
    def on_epoch_begin(self, epoch, logs=None):
        self.mean, self.k = 0.0, 0
    def on_train_batch_end(self, batch, logs=None):
        self.clock.now += 0.05
        self.k += 1
        mean = float(logs["loss"])  # Keras' running mean over the interval: back to this step's loss
        self.losses.append(self.k * mean - (self.k - 1) * self.mean)
        self.mean = mean
        self.seen += 1
        if self.seen == self.stop_at:
            os.kill(os.getpid(), signal.SIGINT)
    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += 0.3

budget_plan._probe = lambda config, vocab, batch: (lambda layers, units: int(np.prod(batch[1].shape)) / 0.05)
source, out, mode = sys.argv[1:4]
settings = dict(time=8, layers=1, units=16, embedding_dim=8, seq_len=16, batch_size=4, lr=3e-3, dropout=0.0,
                lr_schedule="constant", seed=4, sample_temperatures=[], verbose=0, backend="torch",
                mixed_precision="none")  # float32: the stream validation is compared with the float32 runtime
clock = Clock()
tick = Tick(clock, stop_at=None if mode == "straight" else 30)
try:
    charlstm.train(source, out=out, clock=clock, callbacks=[tick], **settings)
except TrainingInterrupted:
    if mode == "no-carry-entry":  # the negative control: resume from zeros instead of the saved state
        with zipfile.ZipFile(out + "/last.keras") as z:
            entries = {i.filename: z.read(i.filename) for i in z.infolist() if i.filename != "carry.npz"}
        with zipfile.ZipFile(out + "/last.keras", "w") as z:
            for name, data in entries.items():
                z.writestr(name, data)
    resumed = Tick(clock)
    charlstm.train(out=out, resume=True, clock=clock, callbacks=[resumed], verbose=0)
    tick.losses += resumed.losses
config = json.load(open(out + "/config.json"))
rows = open(out + "/metrics.csv").read().splitlines()
with zipfile.ZipFile(out + "/model.keras") as z:
    handed_over = z.namelist()
with zipfile.ZipFile(out + "/last.keras") as z:
    last = z.namelist()
model = charlstm.load(out + "/model.keras")
text = open(source, encoding="utf-8").read()
val = text[int(round(len(text) * 0.9)):]
exact = model.evaluate(val, context="stateful", streams=1)["nats_per_char"]
keras_model = keras.saving.load_model(out + "/model.keras")
torch_engine.prepare(keras_model)
forward = torch_engine.direct_forward(keras_model)
ids = model.network.encode(val)
print("RESULT " + json.dumps({
    "losses": tick.losses, "carry": config["carry_state"], "trained_with": config["trained_with"],
    "defaults": config["defaults"],
    "header": rows[0].split(","), "last_row": rows[-1].split(","), "handed_over": handed_over, "last": last,
    "exact": exact, "ours_1": stream_validation.stream_loss(forward, ids, streams=1),
    "ours_16": stream_validation.stream_loss(forward, ids, streams=16, warmup=64),
}))
"""


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory) -> dict:
    text = tmp_path_factory.mktemp("carry") / "text.txt"
    rng = np.random.default_rng(0)
    words = ["the", "ship", "was", "a", "fine", "and", "old", "sea", "captain", "rum", "island", "map"]
    text.write_text(" ".join(rng.choice(words, 2_500)) + "\n", encoding="utf-8")
    runs = {}
    for mode in ("straight", "interrupted", "no-carry-entry"):
        runs[mode] = _run(RESUME, str(text), str(text.parent / mode), mode)
    return runs


def test_resume_after_an_interruption_reproduces_the_uninterrupted_losses(resumed_runs):
    straight, resumed = resumed_runs["straight"]["losses"], resumed_runs["interrupted"]["losses"]
    common = min(len(straight), len(resumed))
    assert common > 60  # well past the interruption at step 30
    np.testing.assert_allclose(resumed[:common], straight[:common], rtol=1e-4, atol=1e-5)
    # without the saved state the step after the interruption starts from zeros: another loss
    dropped = resumed_runs["no-carry-entry"]["losses"]
    assert abs(dropped[30] - straight[30]) > 1e-4


def test_a_carried_run_records_its_choice_and_both_validations(resumed_runs):
    run = resumed_runs["straight"]
    assert run["carry"] == {"on": True, "why_not": None, "reset_prob": 0.05}  # the default recipe's
    defaults = run["defaults"]  # each default choice of issue 23, with the measurement it rests on
    assert defaults["carry_state"]["used"] is True and defaults["carry_state"]["given"] is False
    assert all("benchmarks/README.md" in d["rests_on"] for d in defaults.values())
    assert run["trained_with"]["carry_state"] is True
    assert "val_loss_stream" in run["header"] and "val_bpc_stream" in run["header"]
    row = dict(zip(run["header"], run["last_row"], strict=False))
    assert np.isfinite(float(row["val_loss_stream"])) and np.isfinite(float(row["val_loss"]))
    # the carried state travels in last.keras only; the model handed over is the plain file
    assert "carry.npz" in run["last"] and "carry.npz" not in run["handed_over"]


def test_the_stream_validation_reads_the_text_as_the_runtime_does(resumed_runs):
    run = resumed_runs["straight"]
    assert abs(run["ours_1"] - run["exact"]) < 1e-4  # one stream: the NumPy runtime's evaluate(streams=1)
    assert abs(run["ours_16"] - run["exact"]) < 0.01  # 16 pieces, each after 64 characters of warm-up


AUTO = r"""
import json, sys
import charlstm
source, out, units = sys.argv[1], sys.argv[2], int(sys.argv[3])
charlstm.train(source, out=out, epochs=1, layers=1, units=units, embedding_dim=8, seq_len=16, batch_size=4,
               mixed_precision="auto", sample_temperatures=[], verbose=0, backend="torch")
config = json.load(open(out + "/config.json"))
print("RESULT " + json.dumps({"config": config["config"]["mixed_precision"], "defaults": config["defaults"],
                              "cpu_bf16": config["trained_with"]["cpu_bf16"]}))
"""


@pytest.mark.parametrize("units", [16, 256])
def test_auto_precision_is_bf16_exactly_where_it_measured_faster(tmp_path, units):
    # bf16 where the CPU computes it and the network is wide enough to gain from it (model.BF16_MIN_UNITS)
    text = tmp_path / "text.txt"
    text.write_text("the ship was a fine old sea captain. " * 100, encoding="utf-8")
    r = _run(AUTO, str(text), str(tmp_path / "run"), str(units))
    want = "bf16" if r["cpu_bf16"] and units >= 256 else None
    assert r["config"] == want  # the run's config holds the decision, so a resume trains as it started
    assert r["defaults"]["mixed_precision"]["asked"] == "auto"
    assert r["defaults"]["mixed_precision"]["used"] == (want or "float32")
