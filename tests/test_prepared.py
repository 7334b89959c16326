"""Issue 8: prepared corpora (streaming encode into ids.bin + corpus.json, memory-mapped) and the tf.data feed.

Every check compares against the whole-text path (load_corpus + preprocess + Vocabulary.build + encode), which
is the definition of what a text's ids are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

import charlstm.data.cache as cache_module
import charlstm.data.sources as sources_module
from charlstm.data.batches import make_sequence_batches, make_window_batches, split_ids
from charlstm.data.corpus import load_corpus, preprocess
from charlstm.data.prepare import prepare
from charlstm.data.prepared import open_prepared
from charlstm.data.sources import TextOptions
from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError
from charlstm.training.feeds import to_tf_dataset


def whole_text_ids(source: Path | str, opts: TextOptions) -> tuple[Vocabulary, np.ndarray]:
    corpus = load_corpus(source, encoding=opts.encoding, errors=opts.errors, glob=opts.glob)
    strip = opts.strip_gutenberg if opts.strip_gutenberg is not None else corpus.gutenberg
    text = preprocess(
        corpus.text, strip_gutenberg_text=strip, normalize=opts.normalize, lowercase=opts.lowercase,
        ascii_only=opts.ascii_only,
    )
    text = text[: opts.max_chars] if opts.max_chars else text
    vocab = Vocabulary.build(text, max_vocab=opts.max_vocab, min_count=opts.min_count)
    return vocab, vocab.encode(text, unknown="replace" if vocab.has_unknown else "skip")


# Multi-byte characters (2, 3 and 4 bytes in UTF-8), combining sequences that NFC composes and NFD reorders
# (e + acute, a cedilla + dot below pair out of canonical order), Hangul jamo that compose into a syllable,
# a ligature NFKC splits, Greek capitals whose lowercase depends on the next letter (final sigma), CRLF and
# lone CR line ends, and one long line without a newline.
TRICKY = (
    "café cafe\u0301 façade c\u0327\u0323a\u0323\u0327 naïve \u1100\u1161\u11a8 ﬁne ΟΔΟΣ ΣΟΦΟΣ ΑΣ.\r\n"
    "😀\U00020000 中文字 e\u0301\u0301\r"
    "no newline for a while: " + "e\u0301 ΟΔΟΣ 中 " * 40 + "\n"
)


@pytest.mark.parametrize(
    "opts",
    [
        TextOptions(),
        TextOptions(normalize="NFKC", lowercase=True),
        TextOptions(normalize="NFD", max_vocab=12),
        TextOptions(normalize="none", ascii_only=True),
    ],
    ids=["NFC", "NFKC-lower", "NFD-maxvocab", "ascii"],
)
def test_chunked_preparation_gives_the_whole_text_ids(tmp_path, monkeypatch, opts):
    src = tmp_path / "tricky.txt"
    data = TRICKY.encode("utf-8")
    src.write_bytes(data)
    vocab, ids = whole_text_ids(src, opts)
    # with 1..7-byte reads a read ends inside every multi-byte character and every combining sequence;
    # a 16-character carry limit makes the long line end pieces before spaces too
    monkeypatch.setattr(sources_module, "CARRY_LIMIT", 16)
    inside_char = {i for i in range(1, len(data)) if data[i] & 0xC0 == 0x80}
    for chunk in range(1, 8):
        assert any(i % chunk == 0 for i in inside_char)
        got = prepare(src, None, opts, verbose=False, chunk_bytes=chunk)
        assert got.vocab == vocab, chunk
        assert got.ids.dtype == ids.dtype
        np.testing.assert_array_equal(got.ids, ids, err_msg=f"chunk {chunk}")
    if opts.normalize == "NFC":  # the split e + combining acute became one character, as on the whole text
        assert vocab.decode(ids[:10]) == "café café "


def test_gutenberg_stripping_and_folders_stream_like_the_whole_text(tmp_path):
    book = tmp_path / "books"
    book.mkdir()
    (book / "a.txt").write_text(
        "Title: X\r\n\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n\r\n\r\nChapter 1\r\nIt was.\r\n\r\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\nLicense text " * 3,
        encoding="utf-8",
    )
    (book / "b.txt").write_text("\ufeffSecond file, after the first's END marker.\n", encoding="utf-8")
    for opts in (TextOptions(strip_gutenberg=True), TextOptions(strip_gutenberg=False, val_frac=0.3)):
        vocab, ids = whole_text_ids(book, opts)
        for chunk in (3, 11, 1 << 20):
            got = prepare(book, None, opts, verbose=False, chunk_bytes=chunk)
            assert got.vocab == vocab
            np.testing.assert_array_equal(got.ids, ids)
            train, val = split_ids(ids, opts.val_frac)
            np.testing.assert_array_equal(got.train_ids, train)
            np.testing.assert_array_equal(got.val_ids, val)
    stripped_vocab, stripped = whole_text_ids(book, TextOptions(strip_gutenberg=True))
    assert stripped_vocab.decode(stripped) == "Chapter 1\nIt was.\n"  # the first START..END only, as ever


@pytest.mark.parametrize(
    ("symbols", "dtype"), [(2, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)]
)
def test_id_dtype_follows_the_vocabulary_size(symbols, dtype):
    chars = tuple(chr(0x10000 + i) for i in range(symbols))
    assert Vocabulary(chars).dtype == dtype
    if symbols > 1:  # one of the symbols as the unknown symbol: the size, not the kept characters, decides
        assert Vocabulary(chars[:-1], has_unknown=True).dtype == dtype


@pytest.mark.parametrize("symbols", [300, 70_000])
def test_prepared_ids_use_the_smallest_dtype_and_round_trip(tmp_path, symbols):
    text = "".join(chr(0x10000 + i) for i in range(symbols)) + "\n"
    src = tmp_path / "synthetic.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "prepared"
    prepare(src, out, TextOptions(normalize="none", val_frac=0.0), verbose=False)
    corpus = open_prepared(out)
    expected = np.uint16 if symbols + 1 <= 65536 else np.uint32
    assert corpus.ids.dtype == expected and isinstance(corpus.ids, np.memmap)
    assert (out / "ids.bin").stat().st_size == len(text) * np.dtype(expected).itemsize
    assert corpus.vocab.decode(corpus.ids) == text
    # batches read rows from the file at the right place, whatever the item size and the slice's offset
    from charlstm.data.batches import gather

    part, starts = corpus.ids[3:], np.array([0, 7, len(text) - 10])
    np.testing.assert_array_equal(gather(part, starts, 6), np.asarray(part)[starts[:, None] + np.arange(6)])


def test_chinese_corpus_prepares_as_uint16_and_decodes_back(shared_data, tmp_path):
    src = shared_data / "chinese_tangshi300.txt"
    out = tmp_path / "zh"
    prepare(src, out, TextOptions(), verbose=False, chunk_bytes=4097)  # reads end inside 3-byte characters
    corpus = open_prepared(out)
    vocab, ids = whole_text_ids(src, TextOptions())
    assert corpus.ids.dtype == np.uint16 and corpus.vocab == vocab and vocab.size > 256
    np.testing.assert_array_equal(corpus.ids, ids)
    assert corpus.vocab.decode(corpus.ids) == preprocess(load_corpus(src).text)
    meta = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    assert meta["sources"][0]["files"][0]["bytes"] == src.stat().st_size
    assert sum(meta["vocab"]["counts"]) == len(ids)


@pytest.mark.parametrize("layout", ["sequences", "windows"])
def test_memory_mapped_tf_data_batches_equal_the_in_memory_batches(tiny_corpus, tmp_path, layout):
    opts = TextOptions(val_frac=0.1)
    _, ids = whole_text_ids(tiny_corpus, opts)
    train, val = split_ids(ids, opts.val_frac)
    prepare(tiny_corpus, tmp_path / "p", opts, verbose=False)
    mapped = open_prepared(tmp_path / "p")
    assert isinstance(mapped.train_ids, np.memmap)

    def make(a, shuffle=True):
        if layout == "windows":
            return make_window_batches(a, 40, 3, 32, seed=7, shuffle=shuffle)
        return make_sequence_batches(a, 24, 8, seed=7, shuffle=shuffle)

    reference, fed = make(train), make(mapped.train_ids)
    expected = [b for epoch in (2, 3, 4) for b in reference.epoch_batches(epoch)]  # a resumed run's epochs
    got = list(to_tf_dataset(fed, 2, 5).as_numpy_iterator())
    assert len(got) == len(expected) == 3 * len(reference)
    for (ex, ey), (gx, gy) in zip(expected, got, strict=True):
        assert gx.dtype == ex.dtype == np.int32 and gy.dtype == ey.dtype
        assert gx.tobytes() == ex.tobytes() and gy.tobytes() == ey.tobytes()
    if layout == "sequences":
        val_expected = list(make(val, shuffle=False).epoch_batches(0))
        val_got = list(to_tf_dataset(make(mapped.val_ids, shuffle=False)).as_numpy_iterator())
        assert [b.tobytes() for pair in val_got for b in pair] == [b.tobytes() for pair in val_expected for b in pair]


def test_interrupted_prepare_leaves_nothing_that_looks_finished(tmp_path, tiny_corpus):
    bad_val = tmp_path / "val.txt"
    bad_val.write_bytes(b"fine text, then \xff a bad byte\n")  # fails late: in the writing pass
    out = tmp_path / "corpus"
    with pytest.raises(CharlstmError, match="cannot decode byte offset 16"):
        prepare(tiny_corpus, out, TextOptions(val_file=str(bad_val)), verbose=False)
    assert list(tmp_path.iterdir()) == [bad_val]  # no corpus, no half-built temporary folder


def damage(kind: str, out: Path, source: Path) -> None:
    ids, meta_path = out / "ids.bin", out / "corpus.json"
    if kind == "truncated":
        ids.write_bytes(ids.read_bytes()[:-5])
    elif kind == "json-syntax":
        meta_path.write_text(meta_path.read_text()[:-20])
    elif kind == "json-edited":  # still valid JSON, the vocabulary swapped around: ids would mean other chars
        meta = json.loads(meta_path.read_text())
        meta["vocab"]["chars"] = meta["vocab"]["chars"][::-1]
        meta_path.write_text(json.dumps(meta))
    elif kind == "id-out-of-range":
        data = bytearray(ids.read_bytes())
        data[100] = 250
        ids.write_bytes(bytes(data))
    elif kind == "ids-modified":
        data = bytearray(ids.read_bytes())
        data[100], data[101] = data[101], data[100] + 1 if data[100] == data[101] else data[100]
        ids.write_bytes(bytes(data))
    elif kind == "source-changed":
        source.write_text(source.read_text() + "more\n")
    elif kind == "ids-missing":
        ids.unlink()


DAMAGES = {
    "truncated": "truncated",
    "json-syntax": "not valid JSON",
    "json-edited": "checksum",
    "id-out-of-range": "outside the vocabulary",
    "ids-modified": "sha256",
    "source-changed": "changed after",
    "ids-missing": "ids.bin",
}


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_damaged_prepared_corpus_is_a_one_line_error(tmp_path, tiny_text, kind):
    source = tmp_path / "text.txt"
    source.write_text(tiny_text, encoding="utf-8")
    out = tmp_path / "corpus"
    prepare(source, out, TextOptions(), verbose=False)
    open_prepared(out)  # intact: opens
    damage(kind, out, source)
    with pytest.raises(CharlstmError, match=DAMAGES[kind]):
        open_prepared(out)
    r = run_cli("train", str(out), "--out", str(tmp_path / "run"), "--epochs", "1")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlstm: error: ") and DAMAGES[kind] in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_prepare_cli_writes_a_corpus_and_refuses_to_overwrite(tiny_corpus, tmp_path):
    out = tmp_path / "p"
    r = run_cli("prepare", str(tiny_corpus), "--out", str(out), "--lowercase", "--val-frac", "0.2")
    assert r.returncode == 0, r.stderr
    assert "charlstm train" in r.stdout and "uint8" in r.stdout
    corpus = open_prepared(out)
    assert corpus.options.lowercase and corpus.meta["split"]["validation"][0] == round(0.8 * len(corpus.ids))
    r = run_cli("prepare", str(tiny_corpus), "--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- training on prepared corpora ------------------------------------------------------------------------------
SMALL = dict(layers=1, units=32, embedding_dim=8, seq_len=24, batch_size=8, lr=1e-2, sample_length=20,
             sample_temperatures=[0.5], verbose=0)


def _losses(run: Path) -> list[float]:
    import csv

    with open(run / "metrics.csv") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


def test_chinese_uint16_corpus_trains_and_generates_end_to_end(shared_data, tmp_path):
    corpus_dir, run = tmp_path / "zh", tmp_path / "run"
    r = run_cli("prepare", str(shared_data / "chinese_tangshi300.txt"), "--out", str(corpus_dir),
                "--max-chars", "8000", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "uint16" in r.stdout
    r = run_cli("train", str(corpus_dir), "--out", str(run), "--epochs", "1", "--layers", "1", "--units", "32",
                "--embedding-dim", "16", "--seq-len", "32", "--batch-size", "16", "--quiet")
    assert r.returncode == 0, r.stderr
    meta = json.loads((run / "config.json").read_text(encoding="utf-8"))
    corpus = open_prepared(corpus_dir)
    assert meta["corpus"]["prepared"] == str(corpus_dir) and meta["corpus"]["sha256"] == corpus.sha256
    assert meta["vocab"] == corpus.vocab.to_json() and corpus.vocab.size > 256
    r = run_cli("generate", str(run / "model.keras"), "--length", "40", "--seed", "1", "--temperature", "0.8")
    assert r.returncode == 0, r.stderr
    assert sum("\u4e00" <= c <= "\u9fff" for c in r.stdout) >= 20  # Chinese characters came out
    r = run_cli("evaluate", str(run / "model.keras"), str(corpus_dir))  # a prepared corpus: its validation part
    assert r.returncode == 0, r.stderr
    assert f"({len(corpus.val_ids) - 1:,} characters)" in r.stdout  # predicted: all but the first


def test_train_dir_refuses_text_options_it_was_not_prepared_with(tiny_corpus, tmp_path):
    prepare(tiny_corpus, tmp_path / "p", TextOptions(), verbose=False)
    r = run_cli("train", str(tmp_path / "p"), "--lowercase", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "--lowercase" in r.stderr and "prepare" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


class _SigintAfterFirstEpoch:
    """Keras callback (built lazily so that importing this module does not import Keras)."""

    def __new__(cls):
        import os
        import signal

        import keras

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    os.kill(os.getpid(), signal.SIGINT)

        return Stop()


def test_resume_and_init_from_work_with_a_prepared_corpus(tiny_corpus, tiny_run, tmp_path):
    import charlstm
    from charlstm.errors import TrainingInterrupted
    from charlstm.generation.model import load

    corpus_dir = tmp_path / "p"
    prepare(tiny_corpus, corpus_dir, TextOptions(), verbose=False)
    settings = dict(SMALL, epochs=2, seed=5)
    charlstm.train(str(corpus_dir), out=tmp_path / "straight", **settings)
    with pytest.raises(TrainingInterrupted):
        charlstm.train(str(corpus_dir), out=tmp_path / "resumed", callbacks=[_SigintAfterFirstEpoch()], **settings)
    charlstm.train(out=tmp_path / "resumed", resume=True, verbose=0)
    assert _losses(tmp_path / "resumed") == pytest.approx(_losses(tmp_path / "straight"), rel=1e-4)

    # fine-tuning: the new text's own vocabulary is a subset, numbered differently from the model's
    small = tmp_path / "small.txt"
    small.write_text("a dog sat on a log. " * 40, encoding="utf-8")
    small_dir = tmp_path / "small"
    prepare(small, small_dir, TextOptions(), verbose=False)
    base = load(tiny_run / "model.keras")
    assert open_prepared(small_dir).vocab.chars != base.vocab.chars
    tuned = charlstm.train(str(small_dir), out=tmp_path / "ft", init_from=str(tiny_run / "model.keras"),
                           epochs=1, verbose=0, seq_len=24, batch_size=8)
    assert tuned.vocab == base.vocab
    scratch = charlstm.train(str(small_dir), out=tmp_path / "scratch", epochs=1, verbose=0, seq_len=24,
                             batch_size=8, layers=1, units=48, embedding_dim=16, lr=1e-2, dropout=0.0)
    assert scratch.vocab != base.vocab
    # ids mapped right: the first epoch's loss is no worse than the base model's own loss on this text (ids
    # read in the corpus' numbering would be other characters, and the loss far higher), and it beats a fresh
    # model's first epoch
    before = base.evaluate(small.read_text(encoding="utf-8"))["nats_per_char"]
    assert _losses(tmp_path / "ft")[0] < min(before + 0.1, _losses(tmp_path / "scratch")[0])


def test_a_big_text_is_prepared_once_into_the_cache_and_trains_like_a_small_one(
    tiny_corpus, tmp_path, monkeypatch, capsys
):
    import charlstm

    cache = tmp_path / "cache"
    monkeypatch.setenv("CHARLSTM_CACHE", str(cache))
    charlstm.train(str(tiny_corpus), out=tmp_path / "memory", epochs=1, **SMALL)  # below the threshold
    assert not cache.exists()
    monkeypatch.setattr(cache_module, "CACHE_THRESHOLD_BYTES", 1000)
    verbose = dict(SMALL, verbose=1)
    charlstm.train(str(tiny_corpus), out=tmp_path / "first", epochs=1, **verbose)
    first = capsys.readouterr().out
    entries = list((cache / "prepared").iterdir())
    assert len(entries) == 1 and "preparing it once into" in first and str(entries[0]) in first
    charlstm.train(str(tiny_corpus), out=tmp_path / "second", epochs=1, **verbose)
    second = capsys.readouterr().out
    assert "using the copy prepared before" in second and "preparing it once" not in second
    assert list((cache / "prepared").iterdir()) == entries
    for run in ("first", "second"):
        assert json.loads((tmp_path / run / "config.json").read_text())["corpus"]["prepared"] == str(entries[0])
    # same ids, same batches: the memory-mapped runs train exactly like the in-memory one
    assert _losses(tmp_path / "first") == pytest.approx(_losses(tmp_path / "memory"), rel=1e-5)
    assert _losses(tmp_path / "second") == pytest.approx(_losses(tmp_path / "memory"), rel=1e-5)
