"""`charlstm export`: the ONNX step graph equals the NumPy runtime (1,000 steps of Treasure Island for an LSTM,
a GRU and a lesson-style Keras model), greedy text is the same, the metadata keeps the vocabulary exactly,
8-bit weights cost under 0.01 nats/char at <= 30 % of the size, and bad input is one line, exit 2, no file.

Tiny random-weight models (tests/model_factory.py) except for the 8-bit loss, measured on the session's tiny
trained run (conftest.py), whose file records its validation text.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from model_factory import build_and_save

import charlstm.generation.model as runtime
from charlstm.errors import CharlstmError
from charlstm.export import parts
from charlstm.export.onnx import export_onnx, read_description
from charlstm.export.web import export_web, web_zip

ort = pytest.importorskip("onnxruntime")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STEPS = 1000


@pytest.fixture(scope="module")
def text() -> str:
    """1,000 characters of a real text: Treasure Island's first chapter."""
    book = (DATA / "treasure_island.txt").read_text(encoding="utf-8")
    start = book.index("SQUIRE TRELAWNEY, Dr. Livesey")
    return book[start : start + STEPS]


def lesson_file(path: Path, chars: tuple[str, ...]) -> Path:
    """The lesson's own model, as its students write it (one-hot windows in, softmax out), saved with
    save_keras_model."""
    import keras

    import charlstm
    from charlstm.data.vocab import Vocabulary

    keras.utils.set_random_seed(4)
    vocab = Vocabulary(chars)
    model = keras.Sequential([
        keras.Input(shape=(40, vocab.size)),
        keras.layers.LSTM(24),
        keras.layers.Dense(vocab.size, activation="softmax"),
    ])
    rng = np.random.default_rng(4)
    for w in model.weights:  # Keras' initial weights give near-equal logits: make them differ, biases too
        value = w.numpy() * (3.0 if len(w.shape) == 2 else 0.0) + rng.normal(0, 0.5, w.shape)
        w.assign(value.astype("float32"))
    return charlstm.save_keras_model(model, vocab, path)


@pytest.fixture(scope="module")
def models(tmp_path_factory, text) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    chars = tuple(sorted(set(text)))
    out = {}
    for cell in ("lstm", "gru"):
        out[cell] = folder / f"{cell}.keras"
        build_and_save(out[cell], cell=cell, layers=2, units=32, chars=chars, logit_scale=3.0, seed=5)
    out["lesson"] = lesson_file(folder / "lesson.keras", chars)
    return out


def onnx_steps(path: Path, ids: np.ndarray) -> np.ndarray:
    """onnxruntime's logits after each id, fed one step at a time with the states carried."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    state = [np.zeros(i.shape[1:] and [1, i.shape[1]], np.float32) for i in session.get_inputs()[1:]]
    out = []
    for i in ids:
        logits, *state = session.run(None, dict(zip(names, [np.array([i], np.int64), *state], strict=True)))
        out.append(logits[0])
    return np.stack(out)


def numpy_steps(model, ids: np.ndarray) -> np.ndarray:
    state = model.initial_state(1)
    out = []
    for i in ids:
        logits, state = model.step(np.array([i]), state)
        out.append(logits[0])
    return np.stack(out)


@pytest.mark.parametrize("kind", ["lstm", "gru", "lesson"])
def test_onnx_step_equals_the_numpy_runtime_over_1000_steps(models, text, kind, tmp_path) -> None:
    model = runtime.load(models[kind])
    out = tmp_path / f"{kind}.onnx"
    export_onnx(model, out, log=None)
    ids = model.encode(text)
    assert len(ids) == STEPS
    got, want = onnx_steps(out, ids), numpy_steps(model, ids)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert np.abs(want).max() > 1.0  # logits that differ between characters, not all near zero
    # greedy generation gives the same text: argmax of onnxruntime's logits, fed back
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    prime = model.encode(text[:40])
    state = [np.zeros((1, i.shape[1]), np.float32) for i in session.get_inputs()[1:]]
    for i in prime:
        logits, *state = session.run(None, dict(zip(names, [np.array([i], np.int64), *state], strict=True)))
    chars = []
    for _ in range(200):
        nxt = int(np.argmax(logits[0]))
        chars.append(model.vocab.chars[nxt])
        logits, *state = session.run(None, dict(zip(names, [np.array([nxt], np.int64), *state], strict=True)))
    expected = model.generate(text[:40], length=200, temperature=0, max_repeat="none", no_repeat_ngram=0)
    assert "".join(chars) == expected


def test_the_graph_names_its_inputs_and_outputs_in_state_order(models, tmp_path) -> None:
    export_onnx(runtime.load(models["lstm"]), tmp_path / "m.onnx", log=None)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["ids", "h0", "c0", "h1", "c1"]
    assert [o.name for o in session.get_outputs()] == ["logits", "h0_out", "c0_out", "h1_out", "c1_out"]
    desc = read_description(tmp_path / "m.onnx")
    assert desc["inputs"] == ["ids", "h0", "c0", "h1", "c1"] and desc["outputs"][0] == "logits"


def test_metadata_round_trips_chinese_and_emoji_and_the_sampling_defaults(tmp_path) -> None:
    chars = ("\n", " ", "。", "中", "文", "😀", "𠀋", "é", "a", "👍🏽"[0])
    path = tmp_path / "wide.keras"
    runs = [1, 2, 1, 1, 1, 3, 1, 1, 4, 1, 1]
    build_and_save(path, chars=chars, has_unknown=True, units=16, extra_meta={
        "seeds": ["中文 😀"], "longest_runs": runs, "items": {"boundary": "\n", "max_len": 12}})
    model = runtime.load(path)
    export_onnx(model, tmp_path / "wide.onnx", log=None)
    desc = read_description(tmp_path / "wide.onnx")
    assert tuple(desc["vocabulary"]) == chars == model.vocab.chars
    assert desc["unknown_id"] == len(chars) and desc["vocab_size"] == len(chars) + 1
    assert desc["sampling"]["no_repeat_ngram"] == 20 and desc["sampling"]["max_repeat"] == runs
    assert desc["items"] == {"boundary": "\n", "max_len": 12} and desc["seeds"] == ["中文 😀"]
    # the unknown symbol is never generated: its logit is -inf in the graph's output
    session = ort.InferenceSession(str(tmp_path / "wide.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: (np.array([3], np.int64) if i.name == "ids" else np.zeros((1, 16), np.float32))
            for i in session.get_inputs()}
    logits = session.run(["logits"], feed)[0][0]
    assert logits[len(chars)] == -np.inf and np.isfinite(logits[: len(chars)]).all()
    # the web export's model.json keeps them too
    export_web(model, tmp_path / "web", log=None)
    meta = json.loads((tmp_path / "web" / "model.json").read_text(encoding="utf-8"))
    assert tuple(meta["vocabulary"]) == chars and meta["items"]["boundary"] == "\n"


def test_a_lesson_model_keeps_the_lessons_sampling(models, tmp_path) -> None:
    export_onnx(runtime.load(models["lesson"]), tmp_path / "l.onnx", log=None)
    desc = read_description(tmp_path / "l.onnx")
    assert desc["recipe"] == "keras" and desc["sampling"]["no_repeat_ngram"] == 0 and desc["window"] == 40


def _float_bytes(path: Path) -> int:
    return path.stat().st_size


def test_int8_costs_under_a_hundredth_of_a_nat_at_under_30_percent_of_the_size(tiny_run, tmp_path) -> None:
    model_path = tiny_run / "model.keras"
    result = run_cli("export", str(model_path), "--onnx", str(tmp_path / "q.onnx"), "--quantize", "int8")
    assert result.returncode == 0, result.stderr
    figure = re.search(r"int8 weights: loss ([\d.]+) nats/char against float32's ([\d.]+) \(([-+][\d.]+) nats/char",
                       result.stdout)
    assert figure, result.stdout
    assert "validation text" in result.stdout  # measured where the file says its validation text is
    int8, f32, cost = (float(g) for g in figure.groups())
    assert abs(cost) < 0.01 and abs((int8 - f32) - cost) < 2e-4
    model = runtime.load(model_path)
    export_onnx(model, tmp_path / "f.onnx", log=None)
    # the graph runs, and its logits are the dequantized weights' (close to float32's, not equal)
    ids = model.encode("the cat sat on the mat.")
    q, f = onnx_steps(tmp_path / "q.onnx", ids), onnx_steps(tmp_path / "f.onnx", ids)
    assert 0 < np.abs(q - f).max() < 0.5
    assert read_description(tmp_path / "q.onnx")["quantized"]["cost_nats"] == pytest.approx(cost, abs=1e-4)


def test_int8_files_are_under_30_percent_of_float32s(tmp_path, text) -> None:
    """The default network, 2 x LSTM(128) (random weights: the size does not depend on training)."""
    path = tmp_path / "default.keras"
    build_and_save(path, layers=2, units=128, embedding_dim=64, chars=tuple(sorted(set(text))), seed=2)
    model = runtime.load(path)
    export_onnx(model, tmp_path / "f.onnx", log=None)
    export_onnx(model, tmp_path / "q.onnx", quantize_mode="int8", text=text, log=None)
    assert _float_bytes(tmp_path / "q.onnx") <= 0.30 * _float_bytes(tmp_path / "f.onnx")
    export_web(model, tmp_path / "wf", log=None)
    export_web(model, tmp_path / "wq", quantize_mode="int8", text=text, log=None)
    assert (tmp_path / "wq/weights.bin").stat().st_size <= 0.30 * (tmp_path / "wf/weights.bin").stat().st_size
    print("int8 / float32:", _float_bytes(tmp_path / "q.onnx") / _float_bytes(tmp_path / "f.onnx"))


def test_int8_measures_on_a_given_text_or_says_what_it_needs(models, text, tmp_path) -> None:
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    result = run_cli("export", str(models["gru"]), "--web", str(tmp_path / "w"), "--quantize", "int8",
                     "--text", str(tmp_path / "t.txt"))
    assert result.returncode == 0, result.stderr
    assert "on the given text (1,000 characters)" in result.stdout
    model = runtime.load(models["lesson"])  # records no validation text and no seeds
    with pytest.raises(CharlstmError, match="--text FILE"):
        export_onnx(model, tmp_path / "x.onnx", quantize_mode="int8", log=None)
    assert not (tmp_path / "x.onnx").exists()


def test_damaged_files_and_unsupported_layers_are_one_line_exit_2_nothing_written(models, tmp_path) -> None:
    damaged = tmp_path / "damaged.keras"
    data = models["lstm"].read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    # a zip with the entries, but a layer the runtime (and so the export) does not run
    odd = tmp_path / "odd.keras"
    with zipfile.ZipFile(models["lstm"]) as src, zipfile.ZipFile(odd, "w") as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            if item.filename == "config.json":
                body = body.replace(b'"class_name": "LSTM"', b'"class_name": "SimpleRNN"')
            dst.writestr(item, body)
    for bad, says in ((damaged, "damaged"), (odd, "SimpleRNN")):
        for flag, target in (("--onnx", tmp_path / "out.onnx"), ("--web", tmp_path / "outweb")):
            result = run_cli("export", str(bad), flag, str(target))
            assert result.returncode == 2
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("charlstm: error:") and says in lines[0], result.stderr
            assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.keras", "odd.keras"]  # no temporary left


def test_a_web_export_replaces_an_earlier_one_whole_and_refuses_a_foreign_folder(models, tmp_path) -> None:
    model = runtime.load(models["lstm"])
    export_web(model, tmp_path / "w", log=None)
    export_web(model, tmp_path / "w", quantize_mode="int8", text="the cat sat on the mat", log=None)
    meta = json.loads((tmp_path / "w/model.json").read_text(encoding="utf-8"))
    assert meta["quantized"]["mode"] == "int8"
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == sorted(
        ["index.html", "charlstm.js", "style.css", "model.json", "weights.bin"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CharlstmError, match="not an export"):
        export_web(model, tmp_path / "mine", log=None)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with zipfile.ZipFile(__import__("io").BytesIO(web_zip(model, name="lstm"))) as z:
        assert sorted(z.namelist()) == sorted(f"lstm-web/{n}" for n in
                                              ["index.html", "charlstm.js", "style.css", "model.json", "weights.bin"])


def test_the_numpy_step_of_the_exports_is_the_runtimes(models, text) -> None:
    """parts.step (what the 8-bit cost is measured with) computes what CharModel.step does."""
    model = runtime.load(models["gru"])
    weights = parts.step_weights(model)
    ids = model.encode(text[:200])
    state, mine = model.initial_state(1), parts.initial_state(weights)
    for i in ids:
        want, state = model.step(np.array([i]), state)
        got, mine = parts.step(weights, np.array([i]), mine)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_playground_serves_each_model_as_a_web_export_zip(models, tmp_path) -> None:
    import io

    from fastapi.testclient import TestClient

    from charlstm.server import Limits, create_app, load_entries

    app = create_app(load_entries([str(models["lstm"]), str(models["lesson"])]), Limits(), token="t0k")
    with TestClient(app) as client:
        assert client.get("/api/models/lstm/web.zip").status_code == 401
        auth = {"Authorization": "Bearer t0k"}
        r = client.get("/api/models/lstm/web.zip", headers=auth)
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        assert "lstm-web.zip" in r.headers["content-disposition"]
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            assert sorted(z.namelist()) == sorted(
                f"lstm-web/{n}" for n in ["index.html", "charlstm.js", "style.css", "model.json", "weights.bin"])
            meta = json.loads(z.read("lstm-web/model.json"))
        assert tuple(meta["vocabulary"]) == runtime.load(models["lstm"]).vocab.chars and meta["name"] == "lstm"
        assert client.get("/api/models/nope/web.zip", headers=auth).status_code == 404
        page = client.get("/").text
        assert 'id="download-web"' in page and "Download for the web" in page
