"""Tags: one model, many styles (`--tags folder|file`, `--tag-field N`), chosen when generating; classify.

One tagged and one untagged model are trained once (the same steps, the same folder: tiny Shakespeare and
a shuffled slice of names.txt, two texts a 48-unit model tells apart within seconds), and one items model on
a synthetic list whose two tags use different letters.
"""

from __future__ import annotations

import collections
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CHARS = 20_000
TRAIN = dict(epochs=6, units=48, layers=1, seq_len=32, lr=1e-2, verbose=0, sample_temperatures=[], seed=7)


def _texts() -> dict[str, str]:
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED}")
    play = (SHARED / "tiny_shakespeare.txt").read_text(encoding="utf-8")[:CHARS]
    names = (SHARED / "names.txt").read_text(encoding="utf-8").split()
    random.Random(0).shuffle(names)
    return {"play": play, "names": "\n".join(names)[:CHARS]}


@pytest.fixture(scope="session")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tagged") / "styles"
    for tag, text in _texts().items():
        (root / tag).mkdir(parents=True)
        (root / tag / f"{tag}.txt").write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def models(folder: Path, tmp_path_factory: pytest.TempPathFactory):
    from charlstm import train

    runs = tmp_path_factory.mktemp("tag_runs")
    tagged = train(folder, tags="folder", out=runs / "tagged", **TRAIN)
    untagged = train(folder, out=runs / "untagged", **TRAIN)
    return tagged, untagged, runs


def _split(text: str) -> tuple[str, str]:
    """A tag's training and validation text, as the tagged run holds out the last tenth of each tag."""
    cut = int(round(len(text) * 0.9))
    return text[:cut], text[cut:]


def test_corpus_records_tag_spans_and_holds_out_every_tag(folder: Path) -> None:
    from charlstm.data.cache import corpus_for_training
    from charlstm.data.sources import TextOptions
    from charlstm.data.tags import split_by_tag

    corpus = corpus_for_training(folder, TextOptions(), tags="folder", verbose=False)
    record = corpus.meta["tags"]
    assert record["names"] == ["names", "play"]  # first seen first (files in path order)
    texts = _texts()
    parts = {"names": texts["names"], "play": "\n" + texts["play"]}  # sources are joined with one newline
    split = split_by_tag(corpus.ids, record, 0.1, str(folder))
    for t, name in enumerate(record["names"]):
        train_text, val_text = _split(parts[name])
        assert corpus.vocab.decode(split.val_ids[split.val_tags == t]) == val_text
        assert corpus.vocab.decode(split.train_ids[split.train_tags == t]) == train_text


def test_batches_carry_a_tag_at_every_position_and_balance_evens_the_tags() -> None:
    from charlstm.data.batches import make_sequence_batches

    ids = np.arange(1000, dtype=np.int32)  # each id is its position
    tags = np.r_[np.zeros(900), np.ones(100)].astype(np.uint8)
    rows = make_sequence_batches(ids, 10, 16, seed=1, tags=tags)
    for epoch in range(2):
        for x, y in rows.epoch_batches(epoch):
            assert x["tags"].shape == x["chars"].shape == y.shape
            np.testing.assert_array_equal(x["tags"], tags[x["chars"]])
    even = make_sequence_batches(ids, 10, 16, seed=1, tags=tags, balance=True)
    shares = collections.Counter(int(tags[s]) for s in even.arrangement(3))
    assert shares[0] == shares[1] == even.row_count() // 2
    plain = collections.Counter(int(tags[s]) for s in rows.arrangement(3))
    assert plain[0] > 5 * plain[1]


def test_each_tags_validation_loss_is_lower_than_the_untagged_models(models) -> None:
    tagged, untagged, runs = models
    assert tagged.tags == ("names", "play") and untagged.tags == ()
    for name, text in _texts().items():
        _, val = _split(text)
        with_tag = tagged.with_tag(name).evaluate(val)["nats_per_char"]
        without = untagged.evaluate(val)["nats_per_char"]
        assert with_tag < without, (name, with_tag, without)
    header = (runs / "tagged" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_loss_names", "val_loss_play", "val_bpc_names", "val_bpc_play"} <= set(header)
    assert "val_loss_names" not in (runs / "untagged" / "metrics.csv").read_text()


def _naive_bayes(texts: dict[str, str], n: int = 3):
    """A character n-gram (1..n) naive Bayes with add-one smoothing: an independent judge of style."""
    counts = {tag: collections.Counter(text[i : i + k] for k in range(1, n + 1) for i in range(len(text) - k + 1))
              for tag, text in texts.items()}
    totals = {tag: sum(c.values()) for tag, c in counts.items()}
    vocab = len(set().union(*counts.values()))

    def classify(sample: str) -> str:
        grams = [sample[i : i + k] for k in range(1, n + 1) for i in range(len(sample) - k + 1)]
        score = {tag: sum(math.log((counts[tag][g] + 1) / (totals[tag] + vocab)) for g in grams) for tag in counts}
        return max(score, key=score.get)

    return classify


def test_samples_under_each_tag_are_classified_as_that_tag(models) -> None:
    tagged, untagged, _ = models
    judge = _naive_bayes({tag: _split(text)[0] for tag, text in _texts().items()})
    for tag in tagged.tags:
        samples = tagged.with_tag(tag).generate("\n", length=150, temperature=0.5, num_samples=100, seed=11)
        assert sum(judge(s) == tag for s in samples) >= 90, tag
        assert sum(tagged.classify(s).best == tag for s in samples) >= 90, tag
    # the same prime without a tag gives one style or the other, never both at 90 %
    mixed = untagged.generate("\n", length=150, temperature=0.5, num_samples=100, seed=11)
    assert min(sum(judge(s) == tag for s in mixed) for tag in tagged.tags) < 90


def test_classify_held_out_text_and_agree_with_keras(models) -> None:
    import keras

    tagged, _, _ = models
    for tag, text in _texts().items():
        val = _split(text)[1]
        pieces = [val[i : i + 200] for i in range(0, len(val) - 200, 200)][:10]
        assert all(tagged.classify(p).best == tag for p in pieces)
        result = tagged.classify(pieces[0])
        assert math.isclose(float(result.probs.sum()), 1.0) and result.chars == 199
    k = keras.saving.load_model(tagged.path)  # a plain Functional model of built-in layers: safe mode loads it
    ids = tagged.encode("ROMEO:\nemma\n")[None]
    for t, tag in enumerate(tagged.tags):
        want = np.asarray(k.predict({"chars": ids, "tags": np.full_like(ids, t)}, verbose=0))
        np.testing.assert_allclose(tagged.with_tag(tag).forward(ids)[0], want, atol=1e-4)
        both = tagged.forward(np.repeat(ids, 2, axis=0), tags=np.arange(2))[0]
        np.testing.assert_allclose(both[t], want[0], atol=1e-4)


def test_an_untagged_model_is_as_before(models) -> None:
    from charlstm.errors import CharlstmError
    from charlstm.generation.model import load

    _, untagged, runs = models
    model = load(runs / "untagged" / "model.keras")
    assert "tags" not in model.meta and "tags" not in model.meta["config"] and "num_tags" not in model.meta["model"]
    assert model.with_tag(None) is model and model.tag is None
    with pytest.raises(CharlstmError, match="has no tags"):
        model.with_tag("play")
    with pytest.raises(CharlstmError, match="no tags to classify"):
        model.classify("some text")


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "charlstm.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_classify_cli_and_unknown_tag(models, tmp_path: Path) -> None:
    tagged, _, runs = models
    sample = tmp_path / "sample.txt"
    sample.write_text(_split(_texts()["play"])[1][:300], encoding="utf-8")
    out = _cli("classify", str(runs / "tagged" / "model.keras"), str(sample))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(":")[1].split()[0] == "play"
    from charlstm.errors import CharlstmError

    with pytest.raises(CharlstmError, match="unknown tag 'opera'; the model knows names, play"):
        tagged.with_tag("opera")
    with pytest.raises(CharlstmError, match="unknown tag empty"):
        tagged.with_tag(" ")


def _items_list(n: int = 600) -> str:
    rng = random.Random(3)
    lines = []
    for _ in range(n):
        tag = rng.choice(["low", "high"])
        letters = "abcde" if tag == "low" else "vwxyz"
        lines.append(f"{tag}\t{''.join(rng.choice(letters) for _ in range(rng.randint(3, 7)))}")
    return "\n".join(lines) + "\n"


def test_items_with_a_tag_field_obey_their_tag(tmp_path: Path) -> None:
    from charlstm import train

    src = tmp_path / "words.txt"
    src.write_text(_items_list(), encoding="utf-8")
    model = train(src, items=True, tag_field=1, out=tmp_path / "run", **{**TRAIN, "epochs": 15, "units": 32, "batch_size": 16})
    assert model.tags == ("low", "high") and model.is_items
    for tag, letters in (("low", set("abcde")), ("high", set("vwxyz"))):
        items = model.with_tag(tag).items(40, temperature=0.5, seed=5)
        texts = [getattr(i, "text", i) for i in items]
        assert sum(bool(t) and set(t) <= letters for t in texts) >= 36, (tag, texts)
        assert not any("\t" in t or t in ("low", "high") for t in texts)


@pytest.mark.parametrize(
    ("lines", "flags", "message"),
    [
        ("low\tabc\nhigh\txyz\nabc\n", ["--items", "--tag-field", "1"], "item 3 ('abc') has 1 field(s); it needs"),
        ("low\tabc\n\tvwx\n", ["--items", "--tag-field", "1"], "item 2 ('\\tvwx'): empty tag"),
        ("abc\tlow\nxyz\t \n", ["--items", "--tag-field", "2"], "item 2 ('xyz\\t '): empty tag"),
        ("abc\tlow\nxyz\tlow\n", ["--items", "--tag-field", "2"], "every item has the tag 'low'"),
    ],
)
def test_bad_tag_fields_are_one_line_exit_2_nothing_written(tmp_path: Path, lines: str, flags: list[str],
                                                            message: str) -> None:
    src = tmp_path / "list.txt"
    src.write_text(lines, encoding="utf-8")
    out = _cli("train", str(src), *flags, "--out", str(tmp_path / "run"), "--epochs", "1", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_a_folder_with_one_tag_is_refused(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.txt").write_text("some text\n" * 20, encoding="utf-8")
    out = _cli("train", str(tmp_path), "--tags", "folder", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 2 and "found one tag only ('only')" in out.stderr
    assert not (tmp_path / "run").exists()


def test_fine_tuning_adds_a_tag_and_keeps_the_old_tags_outputs() -> None:
    import keras

    from charlstm.training.grow import grow_tags
    from charlstm.training.model import ModelSpec, build_model

    keras.utils.set_random_seed(1)
    old = build_model(ModelSpec(vocab_size=12, embedding_dim=8, layers=1, units=16, num_tags=2, tag_dim=4))
    new = build_model(ModelSpec(vocab_size=12, embedding_dim=8, layers=1, units=16, num_tags=3, tag_dim=4))
    grow_tags(new, old, None)
    ids = np.arange(10, dtype=np.int32)[None] % 12
    for t in range(2):
        x = {"chars": ids, "tags": np.full_like(ids, t)}
        np.testing.assert_allclose(new.predict(x, verbose=0), old.predict(x, verbose=0), atol=1e-6)
    rows = new.get_layer("tag_embedding").get_weights()[0]
    np.testing.assert_allclose(rows[2], rows[:2].mean(axis=0), atol=1e-6)


def test_a_prepared_tagged_corpus_trains_and_resumes_with_its_tags(folder: Path, tmp_path: Path) -> None:
    from charlstm import train

    out = _cli("prepare", str(folder), "--tags", "folder", "--out", str(tmp_path / "prepared"))
    assert out.returncode == 0, out.stderr
    small = {**TRAIN, "epochs": 1, "units": 16}
    first = train(tmp_path / "prepared", out=tmp_path / "run", **small)
    assert first.tags == ("names", "play")
    resumed = train(out=tmp_path / "run", resume=True, epochs=2, verbose=0)
    assert resumed.tags == ("names", "play") and resumed.meta["config"]["tags"] == "folder"
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_loss_play" in rows[0]


def test_served_runs_are_named_after_their_folders_and_list_their_tags(models) -> None:
    from charlstm.server import load_entries

    _, _, runs = models
    entries = load_entries([str(runs / "tagged" / "model.keras"), str(runs / "untagged" / "model.keras"),
                            str(runs / "tagged" / "best.keras")])
    assert [e.name for e in entries] == ["tagged", "untagged", "tagged-best"]
    assert entries[0].info()["tags"] == ["names", "play"] and entries[1].info()["tags"] == []


def test_the_api_generates_in_a_tag_and_serves_each_tag_as_a_model(models) -> None:
    from fastapi.testclient import TestClient

    from charlstm.server import Limits, create_app, load_entries

    tagged, _, runs = models
    app = create_app(load_entries([str(runs / "tagged"), str(runs / "untagged")]), Limits())
    body = {"model": "tagged", "prime": "\n", "length": 80, "seed": 3, "temperature": 0.5}
    with TestClient(app) as client:
        assert client.get("/api/models").json()[0]["tags"] == ["names", "play"]
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert ids == ["tagged", "tagged:names", "tagged:play", "untagged"]
        for tag in tagged.tags:
            want = tagged.with_tag(tag).generate("\n", length=80, seed=3, temperature=0.5)
            assert client.post("/api/generate", json={**body, "tag": tag}).json()["texts"] == [want]
            events = client.post("/api/stream", json={**body, "tag": tag}).text.split("\n\n")
            pieces = [json.loads(b.split("data: ", 1)[1])["texts"][0] for b in events if b.startswith("event: text")]
            start = next(json.loads(b.split("data: ", 1)[1]) for b in events if b.startswith("event: start"))
            assert "".join(pieces) == want and start["model"] == f"tagged:{tag}"
            completion = client.post("/v1/completions", json={"model": f"tagged:{tag}", "prompt": "\n",
                                                              "max_tokens": 80, "seed": 3, "temperature": 0.5})
            assert completion.json()["choices"][0]["text"] == want
        bad = client.post("/api/generate", json={**body, "tag": "opera"})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "tag"
        assert "the model knows names, play" in bad.json()["error"]["message"]
        assert client.post("/api/generate", json={**body, "model": "untagged", "tag": "play"}).status_code == 422
        assert client.post("/v1/completions", json={"model": "tagged:opera", "prompt": "\n"}).status_code == 404


def test_generate_cli_one_sample_per_tag_and_unknown_tags(models, tmp_path: Path) -> None:
    tagged, _, runs = models
    model = str(runs / "tagged" / "model.keras")
    out = _cli("generate", model, "--tag", "names,play", "--prime", "\n", "--length", "60", "--seed", "2",
               "--temperature", "0.5")
    assert out.returncode == 0, out.stderr
    parts = out.stdout.split("===== tag: ")[1:]
    assert [p.split("\n", 1)[0] for p in parts] == ["names", "play"]
    for part, tag in zip(parts, tagged.tags, strict=True):
        want = tagged.with_tag(tag).generate("\n", length=60, seed=2, temperature=0.5)
        assert part.split("\n", 1)[1].strip("\n") == ("\n" + want).strip("\n")
    for flags, message in ((["--tag", "opera"], "unknown tag 'opera'; the model knows names, play"),
                           (["--tag", ""], "unknown tag empty; the model knows names, play"),
                           (["--tag", "play,opera"], "unknown tag 'opera'")):
        bad = _cli("generate", model, *flags, "--length", "10")
        assert bad.returncode == 2 and message in bad.stderr and bad.stdout == ""
        assert len(bad.stderr.strip().splitlines()) == 1
    untagged = _cli("generate", str(runs / "untagged" / "model.keras"), "--tag", "play", "--length", "10")
    assert untagged.returncode == 2 and "has no tags" in untagged.stderr and untagged.stdout == ""


def test_fine_tuning_onto_a_new_tag_adds_it(models, folder: Path, tmp_path: Path) -> None:
    import shutil

    from charlstm import train

    tagged, _, runs = models
    more = tmp_path / "more"
    shutil.copytree(folder, more)
    (more / "poem").mkdir()
    (more / "poem" / "poem.txt").write_text("roses are red\nviolets are blue\n" * 200, encoding="utf-8")
    tuned = train(more, tags="folder", init_from=runs / "tagged" / "model.keras", out=tmp_path / "tuned",
                  **{**TRAIN, "epochs": 1})
    assert tuned.tags == ("names", "play", "poem")  # the old tags keep their ids; the new one is appended
    assert tuned.meta["model"]["num_tags"] == 3 and tuned.with_tag("poem").generate("\n", length=5)
    out = _cli("score", str(tmp_path / "tuned" / "model.keras"), str(more / "poem" / "poem.txt"), "--tag", "poem")
    assert out.returncode == 0 and "bits/char" in out.stdout


def test_an_export_carries_the_chosen_tag(models) -> None:
    from charlstm.export.parts import initial_state, step, step_weights

    tagged, _, _ = models
    ids = tagged.encode("ROMEO:\n")
    for tag in tagged.tags:
        view = tagged.with_tag(tag)
        weights = step_weights(view)
        state = initial_state(weights)
        for i in ids:
            logits, state = step(weights, np.array([i]), state)
        want = view.forward(ids[None])[0][0, -1]
        np.testing.assert_allclose(logits[0][np.isfinite(logits[0])], want[np.isfinite(logits[0])], atol=1e-4)
