"""Any language: code points, Unicode normalisation, the rare-character policy, Chinese, legacy encodings.

Tiny texts are written here; the shared data is used only for the Chinese corpus and the lesson's book.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from charlstm.data.corpus import decode_bytes, load_corpus, preprocess
from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError
from charlstm.generation.model import load, model_from_parts
from charlstm.generation.modelfile import read_model_file
from charlstm.generation.modelfile import read_weights as _read_weights
from charlstm.training.recipes import make_config

EXT_B = "\U00020000\U00020001"  # 𠀀𠀁: CJK Extension B, outside the BMP (a surrogate pair in UTF-16)
EMOJI = "\U0001f600"  # 😀
THUMB = "\U0001f44d\U0001f3fd"  # 👍🏽: two code points (emoji + skin-tone modifier), two characters
DECOMPOSED = "cafe\u0301"  # café written as e + COMBINING ACUTE ACCENT
LINE = f"{EMOJI} {EXT_B} café {DECOMPOSED} naïve {THUMB} ok {EXT_B[0]}{EMOJI}\n"
RARES = "αβγδεζηθικλμνξοπ"  # each occurs once: below --min-count 2
TEXT = "".join(LINE * 2 + ch + "\n" for ch in RARES)  # a rare character every ~80 characters
TINY = {
    "epochs": 3,
    "layers": 1,
    "units": 32,
    "embedding_dim": 8,
    "seq_len": 16,
    "batch_size": 16,
    "lr": 1e-2,
    "dropout": 0.0,
    "sample_length": 20,
    "sample_temperatures": [0.5],
    "verbose": 0,
}


def _model_meta(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("charlstm.json"))


@pytest.fixture(scope="module")
def nfc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default NFC, --min-count 2: the Greek letters become the unknown symbol; astral characters stay."""
    import charlstm

    src = tmp_path_factory.mktemp("uni") / "nfc.txt"
    src.write_text(TEXT, encoding="utf-8")
    out = src.parent / "run"
    charlstm.train(str(src), out=out, min_count=2, **TINY)
    return out


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """--normalize none: the combining accent stays a character of its own."""
    import charlstm

    src = tmp_path_factory.mktemp("uni") / "raw.txt"
    src.write_text(LINE * 30, encoding="utf-8")
    out = src.parent / "run"
    charlstm.train(str(src), out=out, normalize="none", **TINY)
    return out


# -- characters are code points -----------------------------------------------------------------------
def test_astral_characters_are_one_character_each():
    text = f"a{EMOJI}{EXT_B}b{THUMB}"
    vocab = Vocabulary.build(text)
    assert vocab.size == len(set(text)) == 7
    ids = vocab.encode(text)
    assert len(ids) == len(text) == 7
    assert vocab.decode(ids) == text
    for ensure_ascii in (True, False):  # JSON with \ud840\udc00 escapes or raw UTF-8: same vocabulary
        back = Vocabulary.from_json(json.loads(json.dumps(vocab.to_json(), ensure_ascii=ensure_ascii)))
        assert back == vocab and back.decode(back.encode(text)) == text


def test_normalisation_forms():
    text = f"{DECOMPOSED} café ﬁ Ａ"
    nfc = preprocess(text)  # NFC is the default
    assert nfc == "café café ﬁ Ａ" and "\u0301" not in nfc
    raw = preprocess(text, normalize="none")
    assert raw == text and raw.count("\u0301") == 1
    assert preprocess(text, normalize="NFKC") == "café café fi A"  # compatibility forms folded too
    assert set(Vocabulary.build(raw).chars) - set(Vocabulary.build(nfc).chars) == {"e", "\u0301"}
    with pytest.raises(CharlstmError, match="--normalize"):
        preprocess(text, normalize="nfc")


# -- the rare-character policy --------------------------------------------------------------------------
def test_coverage_by_hand():
    text = "aaaabbbcc d"  # a:4 b:3 c:2 ' ':1 d:1 = 11 characters, 5 distinct
    v = Vocabulary.build(text, min_count=2)
    assert v.chars == ("a", "b", "c") and v.has_unknown and v.size == 4 and v.unknown_id == 3
    assert v.coverage == pytest.approx(9 / 11)
    v = Vocabulary.build(text, max_vocab=3)  # 2 characters + the unknown symbol
    assert v.chars == ("a", "b") and v.size == 3 and v.coverage == pytest.approx(7 / 11)
    v = Vocabulary.build(text, max_vocab=4)
    assert v.chars == ("a", "b", "c") and v.coverage == pytest.approx(9 / 11)
    v = Vocabulary.build(text, max_vocab=5)  # everything fits: no unknown symbol at all
    assert not v.has_unknown and v.size == 5 and v.coverage == 1.0
    v = Vocabulary.build(text, max_vocab=3, min_count=4)  # the stricter of the two wins
    assert v.chars == ("a",) and v.coverage == pytest.approx(4 / 11)
    v = Vocabulary.build(text, min_count=2)
    assert v.encode("abd", unknown="replace").tolist() == [0, 1, 3]
    assert v.encode("abd", unknown="skip").tolist() == [0, 1]
    with pytest.raises(CharlstmError, match="'d'"):
        v.encode("abd")
    assert Vocabulary.from_json(json.loads(json.dumps(v.to_json()))) == v


def test_policy_and_coverage_recorded_in_config_and_model_file(nfc_run):
    text = preprocess(TEXT)
    expected = (len(text) - len(RARES)) / len(text)  # everything but the 16 letters seen once
    for vocab in (
        json.loads((nfc_run / "config.json").read_text(encoding="utf-8"))["vocab"],
        _model_meta(nfc_run / "model.keras")["vocab"],
    ):
        assert vocab["min_count"] == 2 and vocab["max_vocab"] is None
        assert vocab["has_unknown"] is True
        assert vocab["coverage"] == pytest.approx(expected)
        assert not set(RARES) & set(vocab["chars"])
        assert vocab["size"] == len(vocab["chars"]) + 1


def test_astral_and_nfc_round_trip_through_model_file_and_generation(nfc_run):
    chars = _model_meta(nfc_run / "model.keras")["vocab"]["chars"]
    for ch in (EMOJI, *EXT_B, *THUMB, "é"):
        assert ch in chars  # one vocabulary entry each
    assert "\u0301" not in chars
    model = load(nfc_run / "model.keras")
    assert EXT_B[0] in model.vocab and EMOJI in model.vocab
    assert len(model.encode(EXT_B + EMOJI)) == 3
    assert len(model.encode(DECOMPOSED)) == 4  # the prime is NFC-normalised like the training text
    out = model.generate(EXT_B[0], 300, 1.0, seed=0)
    assert len(out) == 300 and set(out) <= set(model.vocab.chars)
    assert "\ufffd" not in out
    assert {EMOJI, EXT_B[0]} <= set(out)  # astral characters come back out, whole


def test_combining_marks_kept_apart_without_normalisation(raw_run):
    model = load(raw_run / "model.keras")
    assert model.preprocessing["normalize"] == "none"
    assert "\u0301" in model.vocab and "é" in model.vocab and "e" in model.vocab
    assert len(model.encode(DECOMPOSED)) == 5 and len(model.encode("café")) == 4
    out = model.generate(DECOMPOSED, 200, 1.0, seed=1)
    assert set(out) <= set(model.vocab.chars)


def test_prime_with_rare_characters_follows_the_policy(nfc_run):
    model = load(nfc_run / "model.keras")
    unk = model.vocab.unknown_id
    assert model.encode("okα", unknown="replace").tolist()[-1] == unk
    assert len(model.encode("okα", unknown="skip")) == 2
    with pytest.raises(CharlstmError, match="'α'"):
        model.generate("okα", 10)
    out = model.generate("okα", 50, 1.0, seed=0, unknown="replace")
    assert len(out) == 50 and "\ufffd" not in out
    r = run_cli("generate", str(nfc_run / "model.keras"), "--prime", "okβ", "--length", "5")
    assert r.returncode == 2 and "'β'" in r.stderr and "--unknown" in r.stderr
    r = run_cli(
        "generate", str(nfc_run / "model.keras"), "--prime", "okβ", "--length", "20", "--unknown", "replace"
    )
    assert r.returncode == 0, r.stderr
    assert "\ufffd" not in r.stdout


def test_default_primes_encode_strictly(nfc_run):
    """The seeds stored as default primes hold only vocabulary characters, so `generate` needs no --unknown."""
    from charlstm.training.plan import seeds as _seeds

    vocab = Vocabulary.build(TEXT, min_count=2)
    ids = vocab.encode(TEXT, unknown="replace")
    plain = _seeds(ids, vocab, 16, 40, 1337, clean=False)  # plain random snippets
    assert any("\ufffd" in s for s in plain) and all(len(s) == 40 for s in plain)
    clean = _seeds(ids, vocab, 16, 40, 1337)
    assert len(clean) == 16 and not any("\ufffd" in s or vocab.unknown_chars(s) for s in clean)
    model = load(nfc_run / "model.keras")
    assert model.meta["seeds"]
    for seed in model.meta["seeds"]:
        model.encode(seed)  # --unknown error: raises on any rare character
    r = run_cli("generate", str(nfc_run / "model.keras"), "--length", "20", "--seed", "3")
    assert r.returncode == 0, r.stderr


def test_unknown_symbol_is_never_generated_even_when_most_likely(nfc_run):
    config, meta, weights, _ = read_model_file(nfc_run / "model.keras")
    classes = [lc["class_name"] for lc in config["config"]["layers"]]
    per_layer = _read_weights(weights, classes)
    unk = Vocabulary.from_json(meta["vocab"]).unknown_id
    dense = per_layer[classes.index("Dense")]
    dense[1][unk] = 1e4  # the unknown logit dwarfs every other
    model = model_from_parts(config, meta, per_layer)
    assert int(model.logits("ok ")[-1].argmax()) == unk  # the network itself would pick it
    for kwargs in (
        {"temperature": 1.0},
        {"temperature": 0.0},
        {"temperature": 5.0},
        {"temperature": 1.0, "top_k": 3},
        {"temperature": 1.0, "top_p": 0.9},
        {"temperature": 1.0, "num_samples": 3},
        {"temperature": 1.0, "context": "window"},
    ):
        out = model.generate("ok ", 200, seed=0, **kwargs)
        for text in out if isinstance(out, list) else [out]:
            assert "\ufffd" not in text and set(text) <= set(model.vocab.chars), kwargs
    r = model.evaluate(preprocess(TEXT), unknown="replace")  # scored, not masked
    assert math.isfinite(r["bits_per_char"])


# -- Chinese ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zh_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLI on the first 20,000 characters of 唐诗三百首 with --max-vocab: a few seconds of training."""
    out = tmp_path_factory.mktemp("zh") / "run"
    r = run_cli(
        "train", str(shared_data / "chinese_tangshi300.txt"), "--out", str(out), "--max-chars", "20000",
        "--max-vocab", "1000", "--epochs", "4", "--layers", "1", "--units", "48", "--embedding-dim", "32",
        "--seq-len", "32", "--batch-size", "32", "--lr", "0.01", "--dropout", "0", "--sample-length", "30",
        "--sample-temperatures", "0.5", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_quantangshi_vocabulary(shared_data):
    """5,400 distinct characters, 22 of them outside the BMP; the policy's coverage matches a direct count."""
    from collections import Counter

    text = preprocess(load_corpus(shared_data / "chinese_quantangshi.txt").text)
    full = Vocabulary.build(text)
    assert full.size == 5400 and sum(ord(c) > 0xFFFF for c in full.chars) == 22
    assert full.decode(full.encode(text)) == text
    small = Vocabulary.build(text, max_vocab=3000)
    assert small.size == 3000 and small.has_unknown
    top = Counter(text).most_common()
    assert small.coverage == pytest.approx(sum(n for _, n in top[:2999]) / len(text))
    ids = small.encode(text, unknown="replace")
    assert np.mean(ids != small.unknown_id) == pytest.approx(small.coverage)


def test_chinese_training_learns_and_records_policy(zh_run):
    rows = (zh_run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(row.split(",")[header.index("loss")]) for row in rows[1:]]
    val_bpc = [float(row.split(",")[header.index("val_bpc")]) for row in rows[1:]]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.3
    assert val_bpc[-1] < math.log2(1000)  # better than uniform over the vocabulary
    vocab = json.loads((zh_run / "config.json").read_text(encoding="utf-8"))["vocab"]
    assert vocab["max_vocab"] == 1000 and vocab["size"] == 1000 and vocab["has_unknown"]
    assert 0.85 < vocab["coverage"] < 0.95


def test_chinese_generation_streams_whole_utf8_characters(zh_run):
    """stdout is text: the bytes decode as UTF-8 and hold only vocabulary characters, under any locale."""
    model = load(zh_run / "model.keras")
    allowed = set(model.vocab.chars) | {"\n"}
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    env.pop("PYTHONIOENCODING", None)
    for prime in ("春", None):
        args = ["--prime", prime] if prime else []
        proc = subprocess.run(
            [sys.executable, "-m", "charlstm.cli", "generate", str(zh_run / "model.keras"), "--length", "300",
             "--seed", "5", "--temperature", "0.8", *args],
            capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
        text = proc.stdout.decode("utf-8")  # strict: a split multi-byte character raises here
        assert "\ufffd" not in text and set(text) <= allowed
        assert len(text) >= 300 and sum(ord(c) > 0x2E80 for c in text) > 100  # Chinese, not '?'


# -- the lesson's path ------------------------------------------------------------------------------
def test_lesson_counts_on_treasure_island(shared_data):
    """--ascii-only + --lowercase (the classic recipe's preprocessing) reproduces the lesson's numbers."""
    cfg = make_config("classic")
    corpus = load_corpus(shared_data / "treasure_island.txt", encoding=cfg.text.encoding)
    text = preprocess(
        corpus.text,
        strip_gutenberg_text=bool(cfg.text.strip_gutenberg),
        normalize=cfg.text.normalize,
        lowercase=cfg.text.lowercase,
        ascii_only=cfg.text.ascii_only,
    )
    assert len(text) == 379_511 and len(set(text)) == 57
    with open(shared_data / "treasure_island.txt", encoding="utf-8") as f:  # the lesson: text mode
        lesson = "".join(c for c in f.read().lower() if ord(c) < 128)
    assert text == lesson
    assert Vocabulary.build(text).chars == tuple(sorted(set(lesson)))


# -- legacy encodings -------------------------------------------------------------------------------
POEM = "床前明月光，\r\n疑是地上霜。\r\n"


def test_gbk_file_with_encoding(tmp_path):
    path = tmp_path / "poem-gbk.txt"
    path.write_bytes(POEM.encode("gbk"))
    assert load_corpus(path, encoding="gbk").text == "床前明月光，\n疑是地上霜。\n"


def test_decoding_failure_names_file_offset_and_encoding(tmp_path):
    path = tmp_path / "poem-gbk.txt"
    path.write_bytes(b"ok\n" + POEM.encode("gbk"))
    with pytest.raises(CharlstmError) as info:
        load_corpus(path)
    msg = str(info.value)
    assert str(path) in msg and "byte offset 3" in msg and "line 2" in msg and "utf-8" in msg
    assert "--encoding" in msg and "--errors replace" in msg
    text = load_corpus(path, errors="replace").text  # goes on, with U+FFFD for the bad bytes
    assert text.startswith("ok\n") and "\ufffd" in text and "\n" in text[3:]
    path.write_bytes("床".encode("gbk")[:1])  # a truncated GBK character
    with pytest.raises(CharlstmError, match=r"byte offset 0 .* as gbk"):
        load_corpus(path, encoding="gbk")


def test_latin1_and_byte_order_marks():
    assert decode_bytes("café\r\n".encode("latin-1"), source="x", encoding="latin-1") == "café\n"
    with pytest.raises(CharlstmError, match=r"x: cannot decode byte offset 3 .* as utf-8"):
        decode_bytes("café".encode("latin-1"), source="x")
    with pytest.raises(CharlstmError, match="byte offset 5 "):  # counted from the file's start, BOM included
        decode_bytes(b"\xef\xbb\xbfok\xff", source="x")
    assert decode_bytes("\ufeff李白\n".encode(), source="x") == "李白\n"
    assert decode_bytes("李白\r\n".encode("utf-16"), source="x") == "李白\n"
    assert decode_bytes(f"{EXT_B}\n".encode("utf-32"), source="x") == f"{EXT_B}\n"
    with pytest.raises(CharlstmError, match="unknown encoding"):
        decode_bytes(b"x", source="x", encoding="no-such-codec")
    with pytest.raises(CharlstmError, match="--errors must be"):
        decode_bytes(b"x", source="x", errors="surrogateescape")


def test_cli_encoding_options(tmp_path, tiny_run):
    """`--encoding` and `--errors` reach the corpus reader; a failure is one line with exit status 2."""
    path = tmp_path / "latin.txt"
    path.write_bytes("the cat sat on the mat\n".encode("latin-1") + b"caf\xe9\n")
    model = str(tiny_run / "model.keras")
    r = run_cli("evaluate", model, str(path), "--unknown", "skip")
    assert r.returncode == 2
    assert r.stderr.startswith("charlstm: error:") and str(path) in r.stderr and "byte offset 26" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("evaluate", model, str(path), "--unknown", "skip", "--encoding", "latin-1")
    assert r.returncode == 0, r.stderr
    assert "bits/char" in r.stdout
    r = run_cli("evaluate", model, str(path), "--unknown", "skip", "--errors", "replace")
    assert r.returncode == 0, r.stderr


def test_training_on_a_gbk_file(tmp_path):
    import charlstm

    path = tmp_path / "poems-gbk.txt"
    path.write_bytes((POEM * 40).encode("gbk"))
    model = charlstm.train(str(path), out=tmp_path / "run", encoding="gbk", **{**TINY, "epochs": 1})
    assert set(model.vocab.chars) == set(POEM.replace("\r", ""))
    bad = tmp_path / "mixed.txt"
    bad.write_bytes((POEM * 40).encode("utf-8") + "月".encode("gbk"))
    with pytest.raises(CharlstmError, match=r"mixed.txt: cannot decode byte offset \d+"):
        charlstm.train(str(bad), out=tmp_path / "run2", **TINY)
    model = charlstm.train(str(bad), out=tmp_path / "run3", errors="replace", **{**TINY, "epochs": 1})
    assert "\ufffd" in model.vocab  # the undecodable bytes became U+FFFD, and training went on
    assert np.isfinite(model.evaluate(POEM.replace("\r", ""))["bits_per_char"])
