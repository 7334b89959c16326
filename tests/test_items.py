"""Lists of items (issue 17): items cut from the text with a boundary symbol, a random sample of whole items held
out, a new item order every epoch, rows that start at items; generation of whole items marked new or seen."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

import charlstm
from charlstm.data.item_batches import ItemBatches
from charlstm.data.items import RECORD_SEPARATOR, split_items, split_text
from charlstm.errors import CharlstmError
from charlstm.generation.items import NEW, TRAINING, VALIDATION, ItemMarks
from charlstm.generation.model import load

SYLLABLES = ["ka", "lo", "mi", "ra", "ne", "to", "su", "vi"]


def synthetic_list(n: int = 400, seed: int = 0) -> list[str]:
    """Made-up names of 2-4 syllables, unique, in alphabetical order (as names.txt's ties are)."""
    rng = np.random.default_rng(seed)
    names: set[str] = set()
    while len(names) < n:
        names.add("".join(rng.choice(SYLLABLES, int(rng.integers(2, 5)))))
    return sorted(names)


def test_items_are_cut_stripped_and_whole_items_are_held_out():
    names = synthetic_list(200)
    text = "\n".join(f"  {n} " for n in names) + "\n\n\n"
    it = split_items(text, "line", val_frac=0.1, seed=1)
    b = it.vocab.chars[it.boundary]
    assert b == "\n" and it.record["train_items"] == 180 and it.record["val_items"] == 20
    train = it.vocab.decode(it.train).split(b)[1:-1]
    val = it.vocab.decode(it.val).split(b)[1:-1]
    assert train == [n for n in names if n not in set(val)]  # file order kept; shuffled per epoch later
    assert set(val) <= set(names) and not set(val) & set(train)
    positions = sorted(names.index(v) for v in val)
    assert positions[0] < 150  # a random sample, not the file's tail
    assert it.vocab.decode(it.train)[0] == b and it.vocab.decode(it.train)[-1] == b
    assert it.record["max_len"] == max(len(n) for n in names)


def test_blank_line_items_get_a_record_separator_and_keep_their_lines():
    text = "roses are red\nviolets are blue\n\n  \nsugar is sweet\n\nand so are you\nthe end\n"
    assert split_text(text, "blank") == ["roses are red\nviolets are blue", "sugar is sweet",
                                         "and so are you\nthe end"]
    it = split_items(text, "blank", val_frac=0.0, seed=0)
    assert it.vocab.chars[it.boundary] == RECORD_SEPARATOR and "\n" in it.vocab
    assert split_text("a%%b%%c", "%%") == ["a", "b", "c"]
    with pytest.raises(CharlstmError, match="U\\+001E"):
        split_items("a\x1eb\n\nc", "blank", val_frac=0.0, seed=0)
    with pytest.raises(CharlstmError, match="no items"):
        split_items("\n\n  \n", "line", val_frac=0.0, seed=0)


def test_item_rows_start_at_items_and_the_order_changes_every_epoch():
    names = synthetic_list(300)
    it = split_items("\n".join(names), "line", val_frac=0.0, seed=0)
    rows = ItemBatches(it.train, it.boundary, 24, 8, seed=5)
    again = ItemBatches(it.train, it.boundary, 24, 8, seed=5)
    b = it.boundary
    orders = []
    for epoch in range(3):
        ring, bounds = rows.epoch_stream(epoch)
        body = it.vocab.decode(ring[: len(it.train) - 1])
        assert sorted(body.split("\n")[1:]) == names  # every item once per epoch
        orders.append(body)
        for x, y in rows.epoch_batches(epoch):
            assert (x[:, 0] == b).all()  # a row starts where an item starts
            np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
        for (x1, _), (x2, _) in zip(rows.epoch_batches(epoch), again.epoch_batches(epoch), strict=True):
            np.testing.assert_array_equal(x1, x2)  # a pure function of (seed, epoch): resume stays exact
    assert len(set(orders)) == 3
    targets = sum(int(y.size) for _, y in rows.epoch_batches(0))
    assert abs(targets - len(it.train)) <= 8 * 24  # one pass over the stream (the last batch wraps round)
    val = ItemBatches(it.train, b, 24, 8, seed=5, shuffle=False)
    assert it.vocab.decode(val.epoch_stream(0)[0][: len(it.train)]) == it.vocab.decode(it.train)


def test_marks_are_exact_fingerprints():
    names = synthetic_list(100)
    it = split_items("\n".join(names), "line", val_frac=0.2, seed=3)
    marks = ItemMarks(it.record)
    val = set(it.vocab.decode(it.val).split("\n")[1:-1])
    for name in names:
        assert marks.status(name) == (VALIDATION if name in val else TRAINING)
    for other in ("kalo" + "x", names[0] + "a", "", names[0][:-1]):
        if other not in names:
            assert marks.status(other) == NEW


@pytest.fixture(scope="module")
def items_run(tmp_path_factory):
    """A few seconds of training on a synthetic list, with --items, for a time budget."""
    root = tmp_path_factory.mktemp("items")
    names = synthetic_list(400)
    (root / "names.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    out = root / "run"
    charlstm.train(str(root / "names.txt"), out=out, items=True, time="8s", layers=1, units=48,
                   embedding_dim=16, seq_len=32, batch_size=32, lr=1e-2, dropout=0.0, sample_length=60,
                   sample_temperatures=[0.5], verbose=0)
    return root, names, out


@pytest.mark.slow
def test_a_synthetic_list_trains_and_generates_whole_marked_items(items_run):
    root, names, out = items_run
    model = load(out / "model.keras")
    assert model.is_items and model.default_prime(np.random.default_rng(0)) == "\n"
    meta = json.loads((out / "config.json").read_text())
    assert meta["items"]["train_items"] + meta["items"]["val_items"] == 400
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) >= 2 and "val_loss" in rows[0]
    alphabet = set("".join(SYLLABLES))
    items = model.items(60, 0.8, seed=2)
    assert len(items) == 60
    marks = ItemMarks(model.meta["items"])
    for item in items:
        assert item.text and "\n" not in item.text and set(item.text) <= alphabet
        assert item.status == marks.status(item.text)
        assert (item.status != NEW) == (item.text in set(names))  # exact: seen iff on the list
    new = model.items(20, 1.0, seed=3, only_new=True)
    assert len(new) == 20 and all(i.new and i.text not in set(names) for i in new)
    r = run_cli("generate", str(out / "model.keras"), "--num-samples", "12", "--seed", "4", "--only-new")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 12 and all(line.endswith("[new]") for line in lines)
    assert all(line.split()[0] not in set(names) for line in lines)
    r = run_cli("generate", str(out / "model.keras"), "--check-copies")
    assert r.returncode == 2 and "items model" in r.stderr
    r = run_cli("generate", str(out / "model.keras"), "--num-samples", "30", "--seed", "4")
    for line in r.stdout.strip().splitlines():
        text, mark = line.split()[0], line.split("[")[1].rstrip("]")
        assert (mark == "new") == (text not in set(names))


@pytest.mark.slow
def test_items_runs_resume_with_more_time(items_run, tmp_path):
    root, names, out = items_run
    import shutil

    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = len((run / "metrics.csv").read_text().splitlines())
    model = charlstm.train(out=run, resume=True, time="4s", verbose=0)
    assert model.is_items and model.meta["items"] == load(out / "model.keras").meta["items"]
    assert len((run / "metrics.csv").read_text().splitlines()) > before
    assert all(set(i.text) <= set("".join(SYLLABLES)) for i in model.items(10, 0.8, seed=0))


def test_items_errors_are_one_line(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("a\nb\n", encoding="utf-8")
    r = run_cli("train", str(text), "--items", "--recipe", "classic", "--epochs", "1")
    assert r.returncode == 2 and "--items" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("train", str(text), "--item-sep", "", "--epochs", "1")
    assert r.returncode == 2 and "--item-sep" in r.stderr


@pytest.mark.slow
def test_the_api_gives_items_models_whole_marked_items(items_run):
    from fastapi.testclient import TestClient

    from charlstm.server import Limits, create_app, load_entries

    root, names, out = items_run
    app = create_app(load_entries([str(out)]), Limits())
    with TestClient(app) as client:
        assert client.get("/api/models").json()[0]["items"] is True
        r = client.post("/api/generate", json={"length": 60, "seed": 1, "num_samples": 8, "temperature": 0.8}).json()
        assert r["prime"] == "\n" and len(r["items"]) == 8
        for sample, item in zip(r["texts"], r["items"], strict=True):
            if item["status"] != "unfinished":
                assert sample == item["text"] + "\n" and "\n" not in item["text"]
                assert item["new"] == (item["text"] not in set(names))
        stream = client.post("/api/stream", json={"length": 60, "seed": 1, "num_samples": 8, "temperature": 0.8})
        done = [json.loads(b.split("data: ", 1)[1]) for b in stream.text.split("\n\n") if b.startswith("event: done")]
        assert done[0]["items"] == r["items"]


@pytest.mark.slow
def test_an_items_model_fine_tunes_on_a_list_with_new_characters(items_run, tmp_path):
    root, names, out = items_run
    more = [n.replace("k", "ä") for n in synthetic_list(200, seed=9)]
    (tmp_path / "more.txt").write_text("\n".join(more), encoding="utf-8")
    tuned = charlstm.train(str(tmp_path / "more.txt"), out=tmp_path / "ft", items=True,
                           init_from=str(out / "model.keras"), epochs=2, batch_size=32, seq_len=32, verbose=0)
    base = load(out / "model.keras")
    assert tuned.is_items and "ä" in tuned.vocab and tuned.vocab.chars[: base.vocab.size] == base.vocab.chars
    marks = ItemMarks(tuned.meta["items"])
    assert marks.status(more[0]) in (TRAINING, VALIDATION)
    assert all("\n" not in i.text for i in tuned.items(10, 0.8, seed=0))
