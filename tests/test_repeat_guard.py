"""Issue 10, healthy samples: each character's longest run in the training text is recorded in the model file,
and generation never exceeds it (`--max-repeat auto|N|none`), leaving the distribution untouched otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_TEXT, run_cli
from model_factory import CHARS, build_and_save
from test_sampling import DRAWS, chi_square_p, softmax

from charlstm.data.batches import RemappedIds, span, split_ids
from charlstm.data.vocab import Vocabulary, longest_runs
from charlstm.errors import CharlstmError
from charlstm.generation import model as runtime

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

A = CHARS.index("a")
LIMIT = 3


def _reference_runs(ids: list[int], size: int) -> np.ndarray:
    out = [0] * size
    i = 0
    while i < len(ids):
        j = i
        while j < len(ids) and ids[j] == ids[i]:
            j += 1
        out[ids[i]] = max(out[ids[i]], j - i)
        i = j
    return np.array(out)


def test_longest_runs_across_chunk_boundaries_and_on_a_memory_map(tmp_path):
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(1, 200))
        ids = np.repeat(rng.integers(0, 5, n), rng.integers(1, 9, n)).astype(np.uint8)
        expected = _reference_runs(ids.tolist(), 7)
        for chunk in (1, 2, 3, 5, 64, 1 << 24):
            np.testing.assert_array_equal(longest_runs(ids, 7, chunk=chunk), expected)
    path = tmp_path / "ids.bin"
    ids = np.repeat(rng.integers(0, 300, 5000), rng.integers(1, 12, 5000)).astype(np.uint16)
    ids.tofile(path)
    mapped = np.memmap(path, dtype=np.uint16, mode="r")
    np.testing.assert_array_equal(longest_runs(mapped, 300, chunk=999), _reference_runs(ids.tolist(), 300))
    # as the trainer reads a prepared corpus: chunks from the file (batches.span), of a slice of the map
    # (the training part), and through a fine-tuned model's renumbering table
    part = mapped[123:4567]
    expected = _reference_runs(ids[123:4567].tolist(), 300)
    np.testing.assert_array_equal(longest_runs(part, 300, chunk=999, read=span), expected)
    table = np.arange(300)[::-1]
    np.testing.assert_array_equal(
        longest_runs(RemappedIds(part, table), 300, chunk=777, read=span), expected[table.argsort()]
    )


def test_span_reads_what_slicing_gives_from_every_kind_of_id_array(tmp_path):
    ids = np.arange(1000, dtype=np.uint16) % 97
    path = tmp_path / "ids.bin"
    ids.tofile(path)
    mapped = np.memmap(path, dtype=np.uint16, mode="r")
    table = (np.arange(97) * 5) % 97
    for source, plain in ((ids, ids), (mapped, ids), (mapped[100:900], ids[100:900]),
                          (RemappedIds(mapped[10:], table), table[ids[10:]])):
        for start, stop in ((0, 10), (5, 700), (650, 5000), (len(plain), len(plain) + 3)):
            np.testing.assert_array_equal(span(source, start, stop), plain[start:stop])


@pytest.fixture(scope="module")
def looping(tmp_path_factory):
    """A default-recipe model that wants 'a' forever, whose training text never had more than 3 in a row."""
    path = tmp_path_factory.mktemp("guard") / "m.keras"
    runs = [1] * len(CHARS)
    runs[A] = LIMIT
    build_and_save(path, units=16, logit_scale=0.5, output_bias={A: 4.0}, seed=5, extra_meta={"longest_runs": runs})
    return runtime.load(path)


def _longest(text: str, ch: str) -> int:
    best = run = 0
    for c in text:
        run = run + 1 if c == ch else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize("temperature", [0.0, 0.2, 0.5, 1.0])
def test_the_guard_never_lets_a_run_pass_the_training_texts_longest(looping, temperature):
    texts = looping.generate("the ", 400, temperature, seed=1, num_samples=8)
    assert max(_longest(t, "a") for t in texts) == LIMIT  # the default for a default-recipe model: auto
    window = looping.generate("the ", 200, temperature, seed=1, context="window")
    assert _longest(window, "a") <= LIMIT
    free = looping.generate("the ", 400, temperature, seed=1, num_samples=8, max_repeat="none")
    assert max(_longest(t, "a") for t in free) > LIMIT  # without it, the model does loop
    two = looping.generate("the ", 400, temperature, seed=1, num_samples=8, max_repeat=2)
    assert max(max(_longest(t, c) for c in set(t)) for t in two) <= 2


def test_the_guard_leaves_the_distribution_untouched_below_the_limit(looping):
    for prime in ("the a", "the aa"):  # runs of 1 and 2 < 3: no constraint
        probs = softmax(looping.logits(prime)[-1].astype(np.float64))
        first = looping.generate(prime, 1, 1.0, seed=5, num_samples=DRAWS)
        counts = np.bincount(looping.vocab.encode("".join(first)), minlength=looping.vocab.size)
        assert chi_square_p(counts, probs) > 1e-3
    # at the limit, 'a' is removed and the rest keeps its proportions
    probs = softmax(looping.logits("the aaa")[-1].astype(np.float64))
    first = looping.generate("the aaa", 1, 1.0, seed=5, num_samples=DRAWS)
    counts = np.bincount(looping.vocab.encode("".join(first)), minlength=looping.vocab.size)
    assert counts[A] == 0
    guarded = probs.copy()
    guarded[A] = 0.0
    assert chi_square_p(counts, guarded / guarded.sum()) > 1e-3
    free = looping.generate("the aaa", 1, 1.0, seed=5, num_samples=DRAWS, max_repeat="none")
    assert "".join(free).count("a") > 0.5 * probs[A] * DRAWS  # unguarded, the 4th 'a' is the likeliest


def test_classic_models_keep_the_lessons_sampling_unless_asked(tmp_path):
    path = tmp_path / "classic.keras"
    runs = [1] * len(CHARS)
    runs[A] = LIMIT
    build_and_save(path, units=16, window=10, logit_scale=0.5, output_bias={A: 4.0}, seed=5,
                   extra_meta={"longest_runs": runs})
    model = runtime.load(path)
    assert model.recipe == "classic" and model.repeat_limits() is None
    assert _longest(model.generate("the ", 200, 0.5, seed=1), "a") > LIMIT
    assert _longest(model.generate("the ", 200, 0.5, seed=1, max_repeat="auto"), "a") <= LIMIT


def test_trained_models_record_their_longest_runs(tiny_run):
    meta = runtime.load(tiny_run / "model.keras").meta
    vocab = Vocabulary.from_json(meta["vocab"])
    train, _ = split_ids(vocab.encode(TINY_TEXT), 0.1)
    assert meta["longest_runs"] == longest_runs(train, vocab.size).tolist()
    assert meta["longest_runs"][vocab.encode("\n")[0]] == 1


def test_max_repeat_errors_and_the_cli(tmp_path, looping):
    old = tmp_path / "old.keras"
    build_and_save(old, units=8)  # no longest_runs: a model from before the guard
    model = runtime.load(old)
    assert model.repeat_limits() is None  # the default quietly stays off
    with pytest.raises(CharlstmError, match="does not record .* longest runs"):
        model.generate("the ", 5, max_repeat="auto")
    for bad in (0, -1, "lots", 1.5):
        with pytest.raises(CharlstmError, match="max-repeat must be auto, none or an integer"):
            model.generate("the ", 5, max_repeat=bad)
    r = run_cli("generate", str(old), "--max-repeat", "lots")
    assert r.returncode == 2 and "max-repeat must be auto, none or an integer" in r.stderr
    r = run_cli("generate", looping.path, "--prime", "the ", "--length", "300", "--temperature", "0",
                "--max-repeat", "2")
    assert r.returncode == 0, r.stderr
    assert "aaa" not in r.stdout
    r = run_cli("generate", looping.path, "--prime", "the ", "--length", "300", "--temperature", "0",
                "--max-repeat", "none")
    assert "aaaa" in r.stdout
