"""Issue 15: Keras on PyTorch, with oneDNN's fused LSTM on a CPU (training/torch_lstm.py), a lean step and bf16.

This pytest process runs Keras on TensorFlow (other test modules import it), so everything on torch runs in
subprocesses, as `charlstm train --backend torch` would. Skipped without torch (`pip install charlstm[torch]`).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_backends import IDS, _env, _keras_logits_in

import charlstm
from charlstm.generation.model import load

pytest.importorskip("torch")

ADAPTER = r"""
import json
import numpy as np, keras, torch
from charlstm.training import torch_engine, torch_lstm
from charlstm.training.model import ModelSpec, build_model, compile_model
from charlstm.training.recipes import make_config

out = {}
ids = np.random.default_rng(0).integers(1, 30, (4, 12)).astype("int32")
ids[:, 9:] = 0  # padding, for the masked case

def model(cell="lstm", mask_zero=False, **lstm):
    keras.utils.set_random_seed(3)
    inp = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(30, 8, mask_zero=mask_zero)(inp)
    rnn = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
    x = rnn(16, return_sequences=True, **lstm)(x)
    x = rnn(16, return_sequences=False, **lstm)(x)
    return keras.Model(inp, keras.layers.Dense(30)(x))

def forward_and_grads(m):
    for v in m.trainable_variables:
        v.value.grad = None
    y = m(ids, training=True)
    (y.square().mean() + y[:, :3].sum()).backward()
    return y.detach().numpy(), [v.value.grad.numpy().copy() for v in m.trainable_variables]

m = model()
torch_lstm.uninstall()
y0, g0 = forward_and_grads(m)
torch_lstm.install()
before = torch_lstm.calls
y1, g1 = forward_and_grads(m)
out["fused_calls"] = torch_lstm.calls - before
out["forward_diff"] = float(np.abs(y0 - y1).max())
out["grad_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(g0, g1))
out["grad_scale"] = max(float(np.abs(a).max()) for a in g0)

cases = {"mask": dict(mask_zero=True), "unroll": dict(unroll=True), "go_backwards": dict(go_backwards=True),
         "relu": dict(activation="relu"), "hard_sigmoid": dict(recurrent_activation="hard_sigmoid"),
         "no_bias": dict(use_bias=False), "gru": dict(cell="gru")}
out["fallback"] = {}
for name, kw in cases.items():
    m = model(**kw)
    before = torch_lstm.calls
    y_hooked = m(ids).detach().numpy()
    calls = torch_lstm.calls - before
    torch_lstm.uninstall()
    y_stock = m(ids).detach().numpy()
    torch_lstm.install()
    out["fallback"][name] = [calls, float(np.abs(y_hooked - y_stock).max())]

# the lean step against Keras' own step: same weights after a few Adam + clipnorm steps (no dropout)
config = make_config("default", dropout=0.0, lr=0.01)
x = np.random.default_rng(1).integers(0, 30, (24, 12)).astype("int32")
y = np.random.default_rng(2).integers(0, 30, (24, 12)).astype("int32")
runs = {}
for lean in (False, True):
    keras.utils.set_random_seed(5)
    m = build_model(ModelSpec(30, embedding_dim=8, units=16))
    compile_model(m, config, 3)
    switched = torch_engine.prepare(m, lean=lean)
    h = m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    runs[lean] = (switched, h.history["loss"], [w.copy() for w in m.get_weights()])
out["lean_switched"] = [runs[False][0]["lean_step"], runs[True][0]["lean_step"], runs[True][0]["direct_forward"],
                        runs[True][0]["fused_adam"]]

# the direct forward (torch_engine.direct_forward) against Keras' own forward inside the lean step, with
# dropout: the same masks from torch's global generator, so the same losses and weights
config = make_config("default", dropout=0.3, lr=0.01)
runs = {}
for direct in (False, True):
    keras.utils.set_random_seed(5)
    m = build_model(ModelSpec(30, embedding_dim=8, units=16, layers=2, dropout=0.3))
    compile_model(m, config, 3)
    switched = torch_engine.prepare(m, direct=direct)
    torch.manual_seed(7)
    before = torch_lstm.calls
    h = m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    runs[direct] = (switched["direct_forward"], h.history["loss"], [w.copy() for w in m.get_weights()],
                    torch_lstm.calls - before)
out["direct"] = {"switched": [runs[False][0], runs[True][0]], "loss": [runs[False][1], runs[True][1]],
                 "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(runs[False][2], runs[True][2])),
                 "calls": runs[True][3]}
# a model it does not cover (GRU, one-hot input) keeps Keras' forward
m = build_model(ModelSpec(30, cell="gru", embedding_dim=8, units=16))
compile_model(m, config, 3)
out["direct"]["gru"] = torch_engine.prepare(m)["direct_forward"]
out["lean_loss"] = [runs[False][1], runs[True][1]]
out["lean_weight_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(runs[False][2], runs[True][2]))

# bf16: float32 master weights, bf16 math in the LSTMs, float32 logits and loss
out["bf16"] = None if not torch_engine.bf16_supported() else {}
if out["bf16"] is not None:
    keras.utils.set_random_seed(5)
    m = build_model(ModelSpec(30, embedding_dim=8, units=16), "bf16")
    compile_model(m, make_config("default", mixed_precision="bf16", lr=0.01), 3)
    before = torch_lstm.calls
    h = m.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    out["bf16"] = {"loss": h.history["loss"], "logits": str(m(x[:2]).dtype), "calls": torch_lstm.calls - before,
                   "weights": sorted({str(v.dtype) for v in m.weights}),
                   "lstm_compute": m.get_layer("lstm_0").compute_dtype}
print("RESULT " + json.dumps(out))
"""


def _run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          env=_env(KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


@pytest.fixture(scope="module")
def adapter() -> dict:
    return _run(ADAPTER)


def test_fused_lstm_equals_the_stock_layer(adapter):
    assert adapter["fused_calls"] == 2  # both LSTM layers went through oneDNN's kernel
    assert adapter["forward_diff"] < 1e-5
    assert adapter["grad_diff"] < 1e-5 and adapter["grad_scale"] > 1e-3  # gradients that are not all ~0


def test_what_the_kernel_cannot_take_goes_to_the_stock_path(adapter):
    # a mask, unroll, go_backwards, other activations, no bias: the hook hands them to Keras' own code,
    # and GRU (no fused CPU kernel in PyTorch either) never reaches it
    for name, (calls, diff) in adapter["fallback"].items():
        assert calls == 0, name
        assert diff == 0.0, name


def test_the_lean_step_trains_exactly_as_keras_step(adapter):
    # the lean run: the direct forward, foreach clipnorm and torch's fused Adam kernel for Keras' Adam
    assert adapter["lean_switched"] == [False, True, True, True]
    stock, lean = adapter["lean_loss"]
    np.testing.assert_allclose(lean, stock, rtol=1e-5)
    assert adapter["lean_weight_diff"] < 1e-5


def test_the_direct_forward_draws_the_same_dropout_and_trains_the_same(adapter):
    direct = adapter["direct"]
    assert direct["switched"] == [False, True] and direct["gru"] is False
    np.testing.assert_allclose(direct["loss"][1], direct["loss"][0], rtol=1e-5)
    assert direct["weight_diff"] < 1e-5
    assert direct["calls"] == 2 * 3 * 2  # two LSTM layers, three batches, two epochs: all on the fused kernel


def test_bf16_trains_with_float32_weights_and_logits(adapter):
    if adapter["bf16"] is None:
        pytest.skip("this CPU has neither AVX-512-BF16 nor AMX (torch.ops.mkldnn._is_mkldnn_bf16_supported)")
    bf16 = adapter["bf16"]
    assert bf16["logits"] == "torch.float32" and bf16["weights"] == ["float32"]
    assert bf16["lstm_compute"] == "bfloat16" and bf16["calls"] > 0  # the fused kernel, in bf16
    assert all(np.isfinite(bf16["loss"])) and bf16["loss"][-1] < bf16["loss"][0]


TORCH_RUNS = r"""
import csv, json, os, signal, sys
import charlstm
from charlstm.errors import TrainingInterrupted
from charlstm.training import torch_lstm
import keras

class Sigint(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)

settings = dict(epochs=3, layers=2, units=16, embedding_dim=8, seq_len=24, batch_size=8, lr=1e-2, dropout=0.2,
                seed=11, sample_length=10, sample_temperatures=[0.5], verbose=0)
source, out = sys.argv[1], sys.argv[2]
charlstm.train(source, out=out + "/straight", backend="torch", **settings)
calls = torch_lstm.calls
try:
    charlstm.train(source, out=out + "/stopped", backend="torch", callbacks=[Sigint()], **settings)
    raise SystemExit("not interrupted")
except TrainingInterrupted:
    pass
charlstm.train(out=out + "/stopped", resume=True, backend="torch", verbose=0)
losses = {n: [float(r["loss"]) for r in csv.DictReader(open(out + "/" + n + "/metrics.csv"))]
          for n in ("straight", "stopped")}
print("RESULT " + json.dumps({**losses, "calls": calls, "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.fixture(scope="module")
def torch_runs(tiny_corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("torch")
    return out, _run(TORCH_RUNS, str(tiny_corpus), str(out))


def test_a_torch_run_uses_the_hook_and_no_tensorflow(torch_runs):
    run, result = torch_runs
    assert result["calls"] > 0  # fails when a Keras release stops calling keras.src.backend.lstm
    assert result["tensorflow"] is False  # NumPy feeds; Keras told TensorFlow is absent
    recorded = json.loads((run / "straight" / "config.json").read_text())["trained_with"]
    assert recorded["backend"] == "torch" and recorded["fused_lstm"] and recorded["lean_step"]
    assert recorded["device"]["kind"] == "cpu" and "tensorflow" not in recorded


def test_exact_resume_after_sigint_on_torch(torch_runs):
    _, result = torch_runs
    assert len(result["straight"]) == 3 and result["straight"][-1] < result["straight"][0]
    np.testing.assert_allclose(result["stopped"], result["straight"], rtol=1e-5)


def test_a_torch_file_is_plain_keras_under_tensorflow(torch_runs):
    model = torch_runs[0] / "straight" / "model.keras"
    expected = load(model).forward(np.array(IDS))[0]
    np.testing.assert_allclose(_keras_logits_in("tensorflow", model), expected, atol=1e-4)
    with zipfile.ZipFile(torch_runs[0] / "straight" / "last.keras") as z:
        optimizer = json.loads(z.read("config.json"))["compile_config"]["optimizer"]
    # the public name, not Keras' private torch subclass (which TensorFlow would build, and fail with)
    assert (optimizer["module"], optimizer["class_name"]) == ("keras.optimizers", "Adam")


def _epochs(run: Path) -> list[int]:
    with open(run / "metrics.csv") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def test_a_torch_run_resumes_on_tensorflow_and_on_jax(torch_runs, tmp_path):
    straight = torch_runs[0] / "straight"
    to_tf, to_jax = tmp_path / "t2tf", tmp_path / "t2jax"
    shutil.copytree(straight, to_tf)
    shutil.copytree(straight, to_jax)
    charlstm.train(out=to_tf, resume=True, epochs=4, verbose=0)  # this process runs TensorFlow
    assert _epochs(to_tf) == [1, 2, 3, 4]
    assert json.loads((to_tf / "config.json").read_text())["trained_with"]["backend"] == "tensorflow"
    proc = run_cli("train", "--resume", str(to_jax), "--epochs", "4", "--backend", "jax", "--quiet", env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _epochs(to_jax) == [1, 2, 3, 4]
    assert json.loads((to_jax / "config.json").read_text())["trained_with"]["backend"] == "jax"


def test_distribute_with_torch_says_it_is_not_supported(tiny_corpus, tmp_path):
    proc = run_cli("train", str(tiny_corpus), "--backend", "torch", "--distribute", "mirrored",
                   "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "not supported on the torch backend" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_the_numpy_feeds_give_the_tf_feeds_batches():
    # torch's feeds (no TensorFlow in its process) in the order of batches.epoch_batches, a function of
    # (seed, epoch), so that a resumed run sees what an uninterrupted one would
    from itertools import islice

    from charlstm.data.batches import make_sequence_batches
    from charlstm.training.feeds import to_numpy_dataset, to_numpy_stream

    ids = np.random.default_rng(0).integers(0, 20, 2_000).astype(np.int32)
    train = make_sequence_batches(ids, 16, 8, seed=3)
    expected = list(train.epoch_batches(1))[2:] + list(train.epoch_batches(2)) + list(train.epoch_batches(3))[:1]
    got = list(islice(to_numpy_stream(train, 1, 2), len(expected)))
    assert len(got) == len(expected) == 2 * len(train) - 1
    for (gx, gy), (ex, ey) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(gx, ex)
        np.testing.assert_array_equal(gy, ey)
    assert len(list(to_numpy_stream(train, 1, last_epoch=3))) == 2 * len(train)
    val = make_sequence_batches(ids[:203], 16, 8, seed=3, shuffle=False)
    dataset = to_numpy_dataset(val)
    assert len(dataset) == len(list(val.epoch_batches(0))) == 2  # a smaller last batch, every row once
    for i, (ex, ey) in enumerate(val.epoch_batches(0)):
        np.testing.assert_array_equal(dataset[i][0], ex)
        np.testing.assert_array_equal(dataset[i][1], ey)
