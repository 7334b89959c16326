"""The NumPy runtime computes what Keras computes, straight from the saved `.keras` file, without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from model_factory import CHARS, build_and_save, keras_logits

from charlstm.errors import CharlstmError
from charlstm.generation import model as runtime

TOL = 1e-4
# Keras's own saving code trips a NumPy 2 deprecation warning; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.mark.parametrize("input", ["embedding", "onehot"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_logits_match_keras(tmp_path, cell, layers, input):
    path = tmp_path / "m.keras"
    keras_model = build_and_save(path, cell=cell, layers=layers, input=input, units=24, seed=layers)
    model = runtime.load(path)
    assert [layer.cell for layer in model.layers] == [cell] * layers
    if cell == "gru":  # reset_after GRU: input and recurrent biases, both non-zero here
        assert model.layers[0].bias.shape == (2, 3 * 24)
        assert np.abs(model.layers[0].bias[1]).min() > 0

    ids = np.random.default_rng(7).integers(0, len(CHARS), size=(4, 33))
    expected = keras_logits(keras_model, ids)  # (B, T, V): every position
    got, state = model.forward(ids)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
    assert np.abs(expected).max() > 0.1  # the comparison is not between two near-zero arrays
    assert len(state) == layers

    # one sequence via logits(), from ids and from text
    np.testing.assert_allclose(model.logits(ids[0]), expected[0], atol=TOL, rtol=0)
    text = "".join(CHARS[i] for i in ids[1])
    np.testing.assert_allclose(model.logits(text), expected[1], atol=TOL, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_forward_in_pieces_equals_forward_at_once(tmp_path, cell):
    """Carrying the state across calls is the same as reading the whole sequence: the basis of generation."""
    path = tmp_path / "m.keras"
    build_and_save(path, cell=cell, layers=2, units=16)
    model = runtime.load(path)
    ids = np.random.default_rng(3).integers(0, len(CHARS), size=(2, 30))
    whole, _ = model.forward(ids)
    first, state = model.forward(ids[:, :11])
    second, _ = model.forward(ids[:, 11:], state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, atol=1e-5, rtol=0)


def test_dropout_layers_are_identity_at_inference(tmp_path):
    path = tmp_path / "m.keras"
    keras_model = build_and_save(path, layers=2, dropout=0.3, units=16)
    model = runtime.load(path)
    ids = np.random.default_rng(5).integers(0, len(CHARS), size=(2, 20))
    np.testing.assert_allclose(model.forward(ids)[0], keras_logits(keras_model, ids), atol=TOL, rtol=0)


def test_classic_layout_matches_keras_last_step(tmp_path):
    """The lesson's model: 40 one-hot characters in, the next character's logits out (last step only)."""
    path = tmp_path / "classic.keras"
    keras_model = build_and_save(path, window=40, input="onehot", layers=1, units=32)
    model = runtime.load(path)
    assert model.window == 40
    ids = np.random.default_rng(11).integers(0, len(CHARS), size=(5, 40))
    expected = keras_logits(keras_model, ids)
    assert expected.shape == (5, len(CHARS))
    np.testing.assert_allclose(model.forward(ids)[0][:, -1], expected, atol=TOL, rtol=0)


def test_unknown_symbol_is_an_output_of_the_model(tmp_path):
    path = tmp_path / "m.keras"
    keras_model = build_and_save(path, has_unknown=True)
    model = runtime.load(path)
    assert model.vocab.size == len(CHARS) + 1
    ids = np.array([[len(CHARS), 0, 3, len(CHARS), 5]])  # the unknown id as input works too
    np.testing.assert_allclose(model.forward(ids)[0], keras_logits(keras_model, ids), atol=TOL, rtol=0)


def test_non_model_files_get_clear_errors(tmp_path):
    missing = tmp_path / "nope.keras"
    with pytest.raises(CharlstmError, match="no such model file"):
        runtime.load(missing)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(CharlstmError, match="not a charlstm model file"):
        runtime.load(junk)


NO_TF_SCRIPT = """
import sys
{imports}
model = {loader}({path!r})
text = model.generate("the ", 50, temperature=0.8, seed=1)
texts = model.generate("the ", 20, temperature=1.0, seed=1, num_samples=3, top_k=5)
model.evaluate("the cat sat on the mat. " * 4)
assert len(text) == 50 and len(texts) == 3
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "jax", "torch"))
print(json.dumps(heavy))
"""


@pytest.mark.parametrize(
    "imports, loader",
    [("import json\nimport charlstm.generation.model", "charlstm.generation.model.load"), ("import json\nimport charlstm", "charlstm.load")],
)
def test_generation_never_imports_tensorflow_or_keras(tmp_path, imports, loader):
    path = tmp_path / "m.keras"
    build_and_save(path, layers=2)
    script = textwrap.dedent(NO_TF_SCRIPT).format(imports=imports, loader=loader, path=str(path))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_cli_generate_never_imports_tensorflow_or_keras(tmp_path):
    path = tmp_path / "m.keras"
    build_and_save(path)
    script = (
        "import sys, json\nfrom charlstm.cli import main\n"
        f"rc = main(['generate', {str(path)!r}, '--prime', 'the ', '--length', '30', '--seed', '2'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(); print(json.dumps([rc, heavy]))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [0, []]


def test_batched_steps_use_one_blas_thread_and_restore_the_setting(tmp_path):
    """Small batched matrix products are 10-30x slower split over threads on a busy machine; generation runs
    them on one BLAS thread and gives the user's setting back afterwards."""
    from threadpoolctl import ThreadpoolController, threadpool_limits

    controller = ThreadpoolController()
    if not controller.select(user_api="blas").lib_controllers:
        pytest.skip("no BLAS library that threadpoolctl can control")

    def get() -> int:
        return max(info["num_threads"] for info in ThreadpoolController().select(user_api="blas").info())

    with threadpool_limits(limits=2, user_api="blas"):
        with runtime.OneBlasThread(True):
            assert get() == 1
        assert get() == 2
        with runtime.OneBlasThread(False):  # batch 1: left alone
            assert get() == 2
        path = tmp_path / "m.keras"
        build_and_save(path)
        model = runtime.load(path)
        seen = []
        for _ in model.stream("the ", 5, 1.0, seed=0, num_samples=3):
            seen.append(get())  # between steps, i.e. in the caller's code, the caller's setting holds
        assert seen == [2] * 5 and get() == 2
