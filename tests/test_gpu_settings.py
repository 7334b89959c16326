"""Issue 8 (GPU): the recurrent layers stay eligible for cuDNN's fused kernels, and mixed precision trains with
float32 logits. This machine has no GPU, so the cuDNN check asks Keras' own argument test (the part of its
cuDNN condition that does not depend on the hardware) and mixed precision runs on the CPU."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import keras
import numpy as np
import pytest

import charlstm
from charlstm.data.vocab import Vocabulary
from charlstm.generation.model import load
from charlstm.training.model import ModelSpec, build_model, model_spec
from charlstm.training.recipes import make_config
from charlstm.training.saving import load_keras_model

# the module, not the function of the same name that the package re-exports
tf_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")


def _recurrent(model):
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU))]


@pytest.mark.parametrize("recipe,cell", [("default", "lstm"), ("default", "gru"), ("classic", "lstm")])
def test_recipe_layers_meet_keras_cudnn_conditions(recipe, cell):
    config = make_config(recipe, cell=cell)
    model = build_model(model_spec(config, Vocabulary(tuple("abcdefgh"))))
    layers = _recurrent(model)
    assert len(layers) == config.layers
    for layer in layers:
        cellobj = layer.cell
        assert layer.recurrent_dropout == 0 and cellobj.recurrent_dropout == 0  # cuDNN has no recurrent dropout
        assert layer.use_cudnn in ("auto", True) and not layer.unroll and not layer.go_backwards
        if cell == "lstm":
            ok = tf_rnn._do_lstm_arguments_support_cudnn(
                cellobj.activation, cellobj.recurrent_activation, layer.unroll, cellobj.use_bias
            )
        else:
            ok = tf_rnn._do_gru_arguments_support_cudnn(
                cellobj.activation, cellobj.recurrent_activation, layer.unroll, cellobj.use_bias, cellobj.reset_after
            )
        assert ok, f"{layer.name} would not get cuDNN's fused kernel"


def test_a_relu_lstm_fails_the_same_check():  # the check above can tell eligible from not
    layer = keras.layers.LSTM(8, activation="relu")
    assert not tf_rnn._do_lstm_arguments_support_cudnn(layer.cell.activation, layer.cell.recurrent_activation,
                                                       layer.unroll, layer.cell.use_bias)


@pytest.mark.parametrize("precision,compute", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_mixed_precision_trains_with_float32_logits(precision, compute, tiny_corpus, tmp_path):
    out = tmp_path / precision
    charlstm.train(str(tiny_corpus), out=out, mixed_precision=precision, epochs=3, layers=2, units=32,
                   embedding_dim=16, seq_len=24, batch_size=8, lr=1e-2, sample_length=20,
                   sample_temperatures=[0.5], verbose=0)
    with open(out / "metrics.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    model = load_keras_model(out / "last.keras")
    assert {layer.compute_dtype for layer in _recurrent(model)} == {compute}
    assert all(w.dtype == "float32" for w in model.weights)  # 16-bit math, 32-bit weights
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "fp16")
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]], dtype="int32")
    logits = model(ids)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    # the NumPy runtime reads the same file in float32; 16-bit math differs by about its precision
    runtime = load(Path(out) / "model.keras")
    np.testing.assert_allclose(runtime.forward(ids)[0], keras.ops.convert_to_numpy(logits), atol=0.1)


def test_unknown_precision_is_one_clear_error(tiny_corpus, tmp_path):
    with pytest.raises(charlstm.CharlstmError, match="--mixed-precision must be bf16, fp16, auto or none"):
        charlstm.train(str(tiny_corpus), out=tmp_path / "x", mixed_precision="fp8", verbose=0)
    assert not (tmp_path / "x").exists()


def test_spec_builds_the_same_graph_in_any_precision():
    spec = ModelSpec(vocab_size=9, units=8, embedding_dim=4)
    plain, mixed = build_model(spec), build_model(spec, "bf16")
    assert [w.shape for w in plain.weights] == [w.shape for w in mixed.weights]
    assert [type(layer).__name__ for layer in plain.layers] == [type(layer).__name__ for layer in mixed.layers]
