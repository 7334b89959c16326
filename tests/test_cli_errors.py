"""Bad input through the real command line: exit status 2 and one readable line, never a traceback."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest
from conftest import run_cli

import charlstm
from charlstm.data.corpus import NAMED_CORPORA

# a proxy on a closed local port: any download fails at once, whatever the network (no minutes of waiting)
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "",
           "NO_PROXY": ""}


def one_line_error(r, *fragments: str) -> str:
    """The run failed with status 2 and printed exactly one line, `charlstm: error: ...`, naming fragments."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("charlstm: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


@pytest.fixture(scope="module")
def model_path(tiny_run: Path) -> str:
    return str(tiny_run / "model.keras")


# -- text sources --------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere" / "book.txt"
    one_line_error(run_cli("train", str(missing)), str(missing), "no such file or folder")


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    one_line_error(run_cli("train", str(empty)), str(empty), "empty")


def test_empty_folder(tmp_path):
    folder = tmp_path / "nothing_here"
    folder.mkdir()
    one_line_error(run_cli("train", str(folder)), str(folder), "no text files")
    (folder / "a.txt").write_text("")
    (folder / "b.txt").write_text("")
    one_line_error(run_cli("train", str(folder)), str(folder), "empty")


def test_binary_file_names_file_and_offset(tmp_path):
    binary = tmp_path / "picture.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    one_line_error(run_cli("train", str(binary)), str(binary), "binary", "offset 8")


def test_non_utf8_file_names_offset_and_latin1_then_works(tmp_path, tiny_text):
    latin = tmp_path / "latin.txt"
    body = tiny_text + "le café est très chaud.\n" * 4
    latin.write_bytes(body.encode("latin-1"))
    offset = body.encode("latin-1").index(b"\xe9")
    one_line_error(run_cli("train", str(latin)), str(latin), f"byte offset {offset}", "--encoding")
    folder = tmp_path / "books"  # in a folder, the message names the one file that fails
    folder.mkdir()
    (folder / "a_good.txt").write_text(tiny_text, encoding="utf-8")
    (folder / "b_bad.txt").write_bytes(latin.read_bytes())
    line = one_line_error(run_cli("train", str(folder)), str(folder / "b_bad.txt"), f"byte offset {offset}")
    assert "a_good.txt" not in line
    out = tmp_path / "run"
    r = run_cli(
        "train", str(latin), "--encoding", "latin-1", "--out", str(out), "--epochs", "1", "--layers", "1",
        "--units", "16", "--embedding-dim", "8", "--seq-len", "32", "--batch-size", "16",
        "--sample-length", "0", "--quiet",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    vocab = charlstm.load(str(out / "model.keras")).vocab
    assert "é" in vocab and "è" in vocab


def test_named_corpus_not_cached_while_offline(tmp_path):
    home = tmp_path / "empty_keras_home"
    home.mkdir()
    target = home / "datasets" / "nietzsche.txt"
    url = NAMED_CORPORA["nietzsche"].url
    started = time.monotonic()
    r = run_cli("train", "nietzsche", env={"KERAS_HOME": str(home), **OFFLINE}, timeout=120)
    assert time.monotonic() - started < 60
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("charlstm: error: ") and url in last and str(target) in last, last
    assert not target.exists()  # no half-downloaded file left to be mistaken for the corpus


def test_evaluate_on_uncached_named_corpus_says_where_to_put_it(model_path, tmp_path):
    """evaluate never downloads: one line naming the URL and the exact path to save the file as."""
    home = tmp_path / "empty_keras_home"
    home.mkdir()
    target = home / "datasets" / "tiny_shakespeare.txt"
    r = run_cli("evaluate", model_path, "tiny-shakespeare", env={"KERAS_HOME": str(home), **OFFLINE})
    one_line_error(r, NAMED_CORPORA["tiny-shakespeare"].url, str(target))


@pytest.mark.parametrize(("recipe", "option"), [("default", "--seq-len"), ("classic", "--maxlen")])
def test_corpus_shorter_than_one_window(tmp_path, recipe, option):
    short = tmp_path / "short.txt"
    short.write_text("just a few words here\n", encoding="utf-8")
    r = run_cli("train", str(short), "--recipe", recipe, "--out", str(tmp_path / "run"))
    one_line_error(r, "shorter than one training window", option)
    assert not (tmp_path / "run" / "model.keras").exists()


def test_epochs_below_one(tiny_corpus, tmp_path):
    r = run_cli("train", str(tiny_corpus), "--epochs", "0", "--out", str(tmp_path / "run"))
    one_line_error(r, "--epochs", "0")


def test_unknown_recipe_and_option(tiny_corpus):
    one_line_error(run_cli("train", str(tiny_corpus), "--recipe", "fancy"), "fancy", "classic")
    one_line_error(run_cli("train", str(tiny_corpus), "--no-such-option"), "--no-such-option")


# -- generation ----------------------------------------------------------------------------------------


def test_prime_outside_the_vocabulary(model_path):
    r = run_cli("generate", model_path, "--prime", "the Quiz€ ", "--length", "20", "--seed", "0")
    line = one_line_error(r, "'Q'", "'z'", "'€'", "--unknown")
    assert "'t'" not in line and r.stdout == ""
    r = run_cli("generate", model_path, "--prime", "the Quiz€ ", "--length", "20", "--seed", "0",
                "--unknown", "skip")
    assert r.returncode == 0, r.stderr
    generated = r.stdout.rstrip("\n")[len("the Quiz€ ") :]
    assert len(generated) == 20 and set(generated) <= set(charlstm.load(model_path).vocab.chars)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--temperature=-0.5"], "temperature must be >= 0"), (["--temperature", "0.5,-1"], "temperature"),
     (["--temperature", ","], "at least one number"), (["--length=-3"], "length must be"),
     (["--top-p", "1.5"], "top-p"), (["--top-k", "0"], "top-k"), (["--num-samples", "0"], "num-samples")],
)
def test_bad_generation_settings(model_path, args, fragment):
    r = run_cli("generate", model_path, "--prime", "the ", *args)
    one_line_error(r, fragment)
    assert r.stdout == ""


def test_model_path_that_is_not_a_model(model_path, tmp_path):
    text = tmp_path / "readme.txt"
    text.write_text("not a model\n")
    zipped = tmp_path / "random.keras"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("something.json", "{}")
    damaged = tmp_path / "damaged.keras"  # a real model file whose weights were overwritten
    with zipfile.ZipFile(model_path) as src, zipfile.ZipFile(damaged, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"\x00" * 64 if name == "model.weights.h5" else src.read(name))
    for path in (text, zipped, damaged):
        one_line_error(run_cli("generate", str(path), "--prime", "a"), str(path), "not a charlstm model")
        one_line_error(run_cli("evaluate", str(path), str(text)), str(path), "not a charlstm model")
    one_line_error(
        run_cli("train", str(text), "--init-from", str(zipped), "--out", str(tmp_path / "run")),
        str(zipped), "not a charlstm model",
    )
    missing = tmp_path / "missing.keras"
    one_line_error(run_cli("generate", str(missing)), str(missing))


# -- listing and defaults ------------------------------------------------------------------------------


def _corpora_lines(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if line and not line[0].isspace()}


def test_corpora_lists_the_four_and_offline_availability(tmp_path):
    r = run_cli("corpora")  # KERAS_HOME is the session's seeded cache
    assert r.returncode == 0, r.stderr
    lines = _corpora_lines(r.stdout)
    assert set(lines) == {"treasure-island", "tiny-shakespeare", "nietzsche", "python-stdlib"}
    for name in ("treasure-island", "tiny-shakespeare", "python-stdlib"):
        assert "offline ok" in lines[name], lines[name]
    assert "needs network" in lines["nietzsche"]
    assert NAMED_CORPORA["nietzsche"].url in r.stdout
    empty = tmp_path / "empty_home"
    empty.mkdir()
    r = run_cli("corpora", env={"KERAS_HOME": str(empty)})
    lines = _corpora_lines(r.stdout)
    assert "needs network" in lines["treasure-island"] and "offline ok" in lines["python-stdlib"]
    assert str(empty / "datasets" / "treasure_island.txt") in r.stdout


def test_generate_without_prime_starts_from_a_training_seed(model_path, tiny_text):
    r = run_cli("generate", model_path, "--length", "60", "--seed", "3")
    assert r.returncode == 0, r.stderr
    out = r.stdout.rstrip("\n")
    assert len(out) == 40 + 60
    seed = out[:40]
    meta = charlstm.load(model_path).meta
    assert seed in meta["seeds"]
    assert seed in tiny_text[: meta["corpus"]["train_chars"]]
    again = run_cli("generate", model_path, "--length", "60", "--seed", "3")
    assert again.stdout == r.stdout
