"""The copy check (issue 17): the suffix-array index beside a corpus, the spans it reports, and where users
meet it (model.copies, `generate --check-copies`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli
from model_factory import build_and_save

import charlstm.data.copyindex as ci
from charlstm.data.prepare import prepare
from charlstm.data.prepared import PreparedCorpus, open_prepared
from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError
from charlstm.generation.copies import Span, checker_for_corpus, find_spans
from charlstm.generation.model import load


@pytest.fixture(scope="module")
def book(shared_data, tmp_path_factory):
    """The first 100 KB of Treasure Island as a file, and its corpus prepared in memory."""
    path = tmp_path_factory.mktemp("book") / "book.txt"
    path.write_text((shared_data / "treasure_island.txt").read_text(encoding="utf-8")[:100_000], encoding="utf-8")
    corpus = prepare([path], None, verbose=False)
    return path, corpus, corpus.vocab.decode(np.asarray(corpus.train_ids))


def _noise(rng, n, avoid=""):
    letters = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in avoid]
    return "".join(rng.choice(letters, n))


def test_a_spliced_passage_is_reported_exactly(book):
    _, corpus, text = book
    checker = checker_for_corpus(corpus, log=None)
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = int(rng.integers(1, len(text) - 201))
        passage = text[a : a + 200]
        # random letters around it, never the ones that would extend the copy by a character either side
        sample = _noise(rng, 300, avoid=text[a - 1]) + passage + _noise(rng, 300, avoid=text[a + 200])
        report = checker.check(sample)
        assert report.longest is not None and (report.longest.start, report.longest.end) == (300, 500)
        assert text[report.longest.source : report.longest.source + 200] == passage
        assert [(s.start, s.end) for s in report.spans] == [(300, 500)]
        assert report.copied == 200 and report.share == pytest.approx(0.25)
        assert report.to_json()["longest"] == 200


def test_a_text_absent_from_the_corpus_reports_nothing_above_k(book):
    _, corpus, _ = book
    checker = checker_for_corpus(corpus, log=None)
    report = checker.check(_noise(np.random.default_rng(0), 1000))
    assert report.spans == [] and report.share == 0.0
    assert 0 < report.longest_length < 20  # short pieces (letters, pairs) are found, as in any text
    assert checker.check("ÆØÅ§").longest is None  # characters the corpus lacks cannot be copied
    with pytest.raises(CharlstmError, match="min-span"):
        checker.check("abc", min_span=0)


def _brute(corpus: np.ndarray, q: np.ndarray) -> np.ndarray:
    text = corpus.tobytes() if corpus.dtype == np.uint8 else corpus.astype(">u2").tobytes()
    size = corpus.dtype.itemsize
    out = []
    for i in range(len(q)):
        n = 0
        while i + n < len(q):
            needle = q[i : i + n + 1].astype(corpus.dtype.newbyteorder(">")).tobytes()
            hits = [k for k in range(0, len(text), 1) if text.startswith(needle, k) and k % size == 0]
            if not hits:
                break
            n += 1
        out.append(n)
    return np.array(out)


@pytest.mark.parametrize("vocab_size", [3, 300, 1500])  # pair buckets; one-id buckets past 1024
@pytest.mark.parametrize("chunked", [False, True])
def test_matching_statistics_equal_brute_force(monkeypatch, vocab_size, chunked):
    """Every position's longest match, for one-byte and two-byte ids, in one suffix array or in overlapping
    chunks (checked against a search of every substring)."""
    if chunked:
        monkeypatch.setattr(ci, "CHUNK_BYTES", 180)
        monkeypatch.setattr(ci, "OVERLAP", 48)
    rng = np.random.default_rng(vocab_size)
    dtype = np.uint8 if vocab_size <= 256 else np.uint16
    ids = rng.integers(0, vocab_size, 400).astype(dtype)
    meta = {"split": {"train": [0, 400]}, "ids": {"count": 400, "sha256": f"t{vocab_size}{chunked}"}, "name": "t"}
    corpus = PreparedCorpus(ids, Vocabulary(tuple(chr(0x100 + i) for i in range(vocab_size))), meta)
    index = ci.build_index(corpus, store=False)
    assert len(index.chunks) == (1 if not chunked else 3 if vocab_size <= 256 else 5)  # chunks of 180 bytes
    assert index.chunks[0].buckets.shape[1] == (vocab_size**2 if vocab_size <= 1024 else vocab_size)
    q = np.concatenate([rng.integers(0, vocab_size, 40), ids[100:160], rng.integers(0, vocab_size, 20)])
    lengths, where = index.matches(q)
    assert (lengths == np.minimum(_brute(ids, q), ci.OVERLAP)).all()
    for i in np.flatnonzero(lengths):
        assert (ids[where[i] : where[i] + lengths[i]] == q[i : i + lengths[i]]).all()
    longest = min(60, ci.OVERLAP)  # a match is never reported longer than the chunks' overlap
    assert any(s <= 40 and s + n >= 40 + longest for s, n, _ in find_spans(index, q))


def test_the_index_is_stored_reused_when_fresh_and_rebuilt_when_the_corpus_changes(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("the cat sat on the mat; the dog sat on the log. " * 40, encoding="utf-8")
    b.write_text("a quite different text about ships, islands and maps. " * 40, encoding="utf-8")
    prepare([a], tmp_path / "A", verbose=False)
    prepare([b], tmp_path / "B", verbose=False)
    corpus = open_prepared(tmp_path / "A")
    logs: list[str] = []
    first = ci.copy_index(corpus, log=logs.append)
    assert len(logs) == 1 and "built the copy index" in logs[0]
    stored = json.loads((tmp_path / "A" / "copies.json").read_text())
    assert stored["corpus_sha256"] == corpus.sha256 and (tmp_path / "A" / "copies.0.sa").stat().st_size == 4 * len(corpus.train_ids)
    monkeypatch.setattr(ci, "build_index", lambda *a, **k: pytest.fail("a fresh index was rebuilt"))
    again = ci.copy_index(open_prepared(tmp_path / "A"), log=logs.append)
    assert isinstance(again.chunks[0].sa, np.memmap) and len(logs) == 1
    assert np.array_equal(np.asarray(again.chunks[0].sa), np.asarray(first.chunks[0].sa))
    monkeypatch.undo()
    # the corpus in A changes (B's files copied over it): the index there is stale and is built again
    for name in ("ids.bin", "corpus.json"):
        shutil.copy(tmp_path / "B" / name, tmp_path / "A" / name)
    changed = open_prepared(tmp_path / "A")
    assert ci.open_index(changed) is None
    checker = checker_for_corpus(changed, log=logs.append)
    assert len(logs) == 2
    assert json.loads((tmp_path / "A" / "copies.json").read_text())["corpus_sha256"] == changed.sha256
    assert checker.check("different text about ships").longest_length == len("different text about ships")


def _model_of(tmp_path, text_path, **corpus):
    """A random-weight model file whose record names `text_path` as its training text."""
    train = prepare([text_path], None, verbose=False)
    chars = train.vocab.chars
    path = tmp_path / "m.keras"
    build_and_save(path, chars=chars, units=8, extra_meta={
        "config": {"val_frac": 0.1}, "corpus": {"source": str(text_path), "sha256": train.sha256, **corpus},
    })
    return path


def test_model_copies_and_generate_check_copies(book, tmp_path):
    text_path, _, text = book
    path = _model_of(tmp_path, text_path)
    model = load(path)
    sample = "zzqx" + text[5000:5100] + "qxzz"
    report = model.copies(sample)
    assert report.longest == Span(4, 104, 5000) or (report.longest.start, report.longest.end) == (4, 104)
    assert model.copies(sample, min_span=200).spans == []
    r = run_cli("generate", str(path), "--length", "60", "--check-copies", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "[copy check: " in r.stdout
    r = run_cli("generate", str(path), "--length", "20", "--num-samples", "2", "--check-copies", "--min-span", "5")
    assert r.returncode == 0, r.stderr and r.stdout.count("[copy check: ") == 2


def test_missing_or_changed_training_text_is_one_line(book, tmp_path):
    text_path, _, _ = book
    gone = tmp_path / "gone.txt"
    shutil.copy(text_path, gone)
    path = _model_of(tmp_path, gone)
    gone.unlink()
    r = run_cli("generate", str(path), "--length", "5", "--check-copies")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--against" in r.stderr
    r = run_cli("generate", str(path), "--length", "5", "--check-copies", "--against", str(text_path))
    assert r.returncode == 0, r.stderr
    gone.write_text("something else entirely", encoding="utf-8")
    r = run_cli("generate", str(path), "--length", "5", "--check-copies")
    assert r.returncode == 2 and "changed since" in r.stderr


@pytest.mark.parametrize("damage", ["json", "truncated", "entries"])
def test_a_damaged_index_is_one_line_exit_2(tmp_path, damage):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat; the dog sat on the log. " * 40, encoding="utf-8")
    prepare([text], tmp_path / "P", verbose=False)
    path = _model_of(tmp_path, text)
    r = run_cli("generate", str(path), "--length", "5", "--check-copies", "--against", str(tmp_path / "P"))
    assert r.returncode == 0, r.stderr
    sa = tmp_path / "P" / "copies-all" / "copies.0.sa"
    if damage == "json":
        (sa.parent / "copies.json").write_text("{not json", encoding="utf-8")
    elif damage == "truncated":
        sa.write_bytes(sa.read_bytes()[:-8])
    else:
        sa.write_bytes(np.full(sa.stat().st_size // 4, 10**8, dtype="<i4").tobytes())
    r = run_cli("generate", str(path), "--length", "5", "--check-copies", "--against", str(tmp_path / "P"))
    assert r.returncode == 2, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1 and "copy index damaged" in r.stderr


@pytest.mark.slow
def test_training_samples_say_their_longest_copied_span_and_metrics_get_a_copied_column(tiny_run):
    import csv

    samples = (tiny_run / "samples.txt").read_text(encoding="utf-8")
    headers = [line for line in samples.splitlines() if line.startswith("----- temperature:")]
    assert headers and all("longest copied span" in h for h in headers)
    rows = list(csv.DictReader((tiny_run / "metrics.csv").open(encoding="utf-8")))
    assert len(rows) == 8 and all(0.0 <= float(r["copied"]) <= 1.0 for r in rows)


@pytest.mark.slow
def test_the_epoch_samples_report_what_the_copy_check_finds(tiny_run, tmp_path):
    from charlstm.generation.copies import CopyReport
    from charlstm.training.samples import EpochSamples

    shutil.copy(tiny_run / "last.keras", tmp_path / "last.keras")
    seen: list[str] = []

    def check(text):  # a copy check that calls the first half of every sample copied
        seen.append(text)
        half = Span(0, len(text) // 2, 0)
        return CopyReport(len(text), 20, half, [half])

    samples = EpochSamples(tmp_path, seeds=["the cat"], temperatures=[0.5, 1.0], sample_length=40, seed=0,
                           verbose=False, copy_check=check)
    assert samples.samples(0) == pytest.approx(0.5)
    assert len(seen) == 2 and all(len(t) == 40 for t in seen)  # the generated text, not the prime
    assert (tmp_path / "samples.txt").read_text().count("(longest copied span 20 chars; 50% in spans >= 20)") == 2


# -- the server --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_api_reports_copies_when_it_knows_the_training_text(tiny_run, tiny_text, tmp_path):
    from fastapi.testclient import TestClient

    from charlstm.server import Limits, create_app, load_entries

    bare = tmp_path / "bare.keras"
    build_and_save(bare, units=8)  # records no training text
    app = create_app(load_entries([str(tiny_run), str(bare)]), Limits())
    with TestClient(app) as client:
        models = {m["name"]: m for m in client.get("/api/models").json()}
        assert models[tiny_run.name]["copy_check"] is True and models["bare"]["copy_check"] is False
        body = {"model": tiny_run.name, "prime": "the cat", "length": 80, "seed": 3, "num_samples": 2}
        r = client.post("/api/generate", json=body).json()
        model = load(tiny_run / "model.keras")
        assert r["copies"] == [model.copies(t).to_json() for t in r["texts"]]
        assert r["copies"][0]["chars"] == 80
        stream = client.post("/api/stream", json=body)
        done = [json.loads(block.split("data: ", 1)[1]) for block in stream.text.split("\n\n")
                if block.startswith("event: done")]
        assert done[0]["copies"] == r["copies"]
        assert "copies" not in client.post("/api/generate", json={"model": "bare", "length": 5}).json() or \
            client.post("/api/generate", json={"model": "bare", "length": 5}).json()["copies"] is None
        samples = client.get(f"/api/runs/{tiny_run.name}").json()["samples"]
        assert samples[0]["samples"][0]["temperature"] == 0.5 and "longest copied span" in samples[0]["samples"][0]["copies"]
    assert tiny_text  # the run trained on the fixture's text


def test_chunks_are_read_from_a_mapped_corpus_file_as_slicing_gives_them(tmp_path):
    path = tmp_path / "ids.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    mapped = np.memmap(path, dtype=np.uint16, mode="r", shape=(1000,))
    for ids in (mapped, mapped[100:900], np.arange(1000, dtype=np.uint16)):
        for a, b in ((0, 10), (5, 700), (690, 800)):
            got = ci._read(ids, a, b)
            assert np.array_equal(got, np.asarray(ids[a:b])) and got.flags.writeable
