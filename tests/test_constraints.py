"""Getting what was asked for (issue 26): regular-expression constraints compiled to a character automaton
and applied as a mask, required words, best-of-n and beam search. One items model trained once (names), its
samples drawn in batches."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import run_cli

import charlstm
from charlstm.errors import CharlstmError
from charlstm.generation.constraints import choice_pattern, compile_constraint, constraint_for
from charlstm.generation.model import load
from charlstm.generation.sampling import probabilities
from charlstm.generation.state import Batch, step

CHARS = tuple("\nabcdeilmnorsty ")


# -- the automaton alone (no model) ---------------------------------------------------------------------------


def random_walks(constraint, length: int, rows: int, seed: int) -> list[str]:
    """Rows that choose uniformly among the allowed characters: the mask alone must bring each to a match."""
    rng = np.random.default_rng(seed)
    st = constraint.begin(rows, length)
    texts = [""] * rows
    for _ in range(length):
        ok = st.allowed()
        assert ok[~st.frozen].any(axis=-1).all()  # never a step with nothing allowed
        ids = np.array([rng.choice(np.flatnonzero(r)) for r in ok])
        live = ~st.frozen
        st.advance(ids)
        texts = [t + CHARS[i] if alive else t for t, i, alive in zip(texts, ids.tolist(), live, strict=True)]
        st.frozen = st.frozen | st.complete
    return texts


@pytest.mark.parametrize(
    "pattern, length",
    [(r"[a-z ]*na", 12), (r"[a-z]{2,5}( [a-z]{2,5}){1,3}", 40), (r"(anna|emma|olivia)\n[lm][aeiou]+", 14),
     (r"\w+ \w", 30), (r"(?i)MA[^\n]*", 20), (r"[^ ]{3}|mississippi", 11)],
)
def test_random_walks_under_the_mask_always_match_within_the_length(pattern, length):
    c = compile_constraint([("regex", pattern)], CHARS)
    for text in random_walks(c, length, 64, seed=length):
        assert re.fullmatch(pattern, text), (pattern, text)
        assert len(text) <= length


def test_a_required_ending_is_reached_exactly_at_the_length():
    c = compile_constraint([("regex", r"[a-z ]*a")], CHARS)
    assert c.shortest == 1
    texts = random_walks(c, 12, 100, seed=0)
    assert all(len(t) == 12 and t.endswith("a") for t in texts)  # [a-z ]* can go on, so rows run to 12


def test_classes_follow_python_re_for_the_vocabulary():
    chars = ("a", "é", "1", "٣", " ", "\ufffd")
    c = compile_constraint([("regex", r"\w\d\s\W")], chars)
    ids = {ch: i for i, ch in enumerate(chars)}
    assert c.matches([ids["é"], ids["٣"], ids[" "], ids[" "]])  # Unicode \w and \d, as re.fullmatch has them
    assert not c.matches([ids["é"], ids["a"], ids[" "], ids[" "]])
    assert (c.table[:, ids["\ufffd"]] < 0).all()  # the unknown symbol is never written


def test_stops_end_a_sample_only_where_the_pattern_allows():
    chars = tuple("ab.")
    # included (generate's text keeps the stop): the text with its stop matches
    c = compile_constraint([("regex", r"a+b\.")], chars, stops=["."])
    ids = {ch: i for i, ch in enumerate(chars)}
    assert c.matches([ids[x] for x in "aab."]) and not c.matches([ids[x] for x in "a.b."])
    # required (an item): the text before the stop matches, and the stop comes
    c = compile_constraint([("regex", r"a+b")], chars, stops=["."], stop_mode="required")
    assert c.matches([ids[x] for x in "aab."]) and not c.matches([ids[x] for x in "aab"])
    # excluded (OpenAI strips the stop): either a match run to the length, or a match then the stop
    c = compile_constraint([("regex", r"a+b")], chars, stops=["."], stop_mode="excluded")
    assert c.matches([ids[x] for x in "aab."]) and c.matches([ids[x] for x in "aab"])
    assert not c.matches([ids[x] for x in "a.b"])


@pytest.mark.parametrize(
    "parts, field, words",
    [([("regex", "(a")], "regex", "not a valid regular expression"),
     ([("regex", r"(a)\1")], "regex", "not supported"),
     ([("regex", r"\bab")], "regex", "not supported"),
     ([("regex", "xyz")], "regex", "no text made of the model's characters"),
     ([("regex", "a+"), ("regex", "b+")], "regex", "no text")],
)
def test_bad_patterns_are_one_error_naming_the_field(parts, field, words):
    with pytest.raises(CharlstmError, match=words) as info:
        compile_constraint(parts, CHARS)
    assert info.value.field == field and "\n" not in str(info.value)


def test_intersections_are_exact_and_huge_repeats_are_refused():
    chars = tuple("abcdeilmnorst .\n")
    # a bounded line that must contain two words: the product automaton (NumPy), checked by walking it
    c = compile_constraint([("regex", r"[^\n]{0,300}\."), ("must_include", r"[\s\S]*cat[\s\S]*"),
                            ("must_include", r"[\s\S]*lemon[\s\S]*")], chars)
    for text in random_walks_over(c, chars, 320, 32, seed=1):
        assert re.fullmatch(r"[^\n]{0,300}\.", text) and "cat" in text and "lemon" in text
    with pytest.raises(CharlstmError, match="repeat counts above 1,000") as info:
        compile_constraint([("regex", "a{1,5000}")], chars)
    assert info.value.field == "regex"


def random_walks_over(constraint, chars, length: int, rows: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    st = constraint.begin(rows, length)
    texts = [""] * rows
    for _ in range(length):
        ok = st.allowed()
        ids = np.array([rng.choice(np.flatnonzero(r)) for r in ok])
        live = ~st.frozen
        st.advance(ids)
        texts = [t + chars[i] if alive else t for t, i, alive in zip(texts, ids.tolist(), live, strict=True)]
        st.frozen = st.frozen | st.complete
    return texts


def test_shorthands_and_words_name_their_fields():
    with pytest.raises(CharlstmError, match="'z'") as info:
        constraint_for(CHARS, must_include="anna,zoe")
    assert info.value.field == "must_include"
    with pytest.raises(CharlstmError) as info:
        constraint_for(CHARS, min_length=5, max_length=3)
    assert info.value.field == "min_length"
    with pytest.raises(CharlstmError) as info:
        compile_constraint([("regex", "a{50}")], CHARS).begin(1, 20)
    assert info.value.field == "length" and "50 characters" in str(info.value)
    with pytest.raises(CharlstmError) as info:
        choice_pattern([])
    assert info.value.field == "guided_choice"
    assert constraint_for(CHARS) is None


# -- with a trained model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def names_model(tmp_path_factory, shared_data):
    """An items model trained briefly on 2,000 names (one line each)."""
    root = tmp_path_factory.mktemp("names")
    names = (shared_data / "names.txt").read_text(encoding="utf-8").split()[:2000]
    (root / "names.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    charlstm.train(str(root / "names.txt"), out=root / "run", items=True, epochs=4, layers=1, units=48,
                   embedding_dim=16, seq_len=32, batch_size=32, lr=1e-2, dropout=0.0, sample_length=20,
                   sample_temperatures=[0.5], verbose=0)
    return load(root / "run" / "model.keras")


def sample_recorded(model, prime, length, temperature, seed, rows, **settings):
    """Step one generation to its end; each row's text, and whether every chosen character had non-zero
    probability in the distribution it was drawn from (after the processors and the mask)."""
    gen = model.generation(prime, length, temperature, seed=seed, num_samples=rows, **settings)
    prepare = gen.processed_logits
    seen: list[np.ndarray] = []

    def recording() -> np.ndarray:
        seen.append(prepare())
        return seen[-1]

    gen.processed_logits = recording
    texts = [""] * rows
    possible = True
    while not gen.finished:
        live = ~np.array(gen.done)
        step([gen])
        p = probabilities(seen[-1], temperature)
        possible &= bool((p[np.arange(rows), gen.ids][live] > 0).all())
        texts = [t + piece for t, piece in zip(texts, gen.pieces, strict=True)]
    return texts, possible


PATTERNS = [
    r"[\s\S]*na",  # a required ending
    r"[a-z]{3,8}",  # a bounded length (the row ends at its dead end)
    r"(anna|emma|olivia|zoe)\n[a-z]+\n",  # alternatives (zoe: a name the vocabulary may not spell)
    r"[aeiou][a-z]*\n[b-df-hj-np-tv-z][a-z]*",  # character classes
]


@pytest.mark.slow
@pytest.mark.parametrize("pattern", PATTERNS)
def test_200_samples_all_match_and_no_step_is_impossible(names_model, pattern):
    m = names_model
    pattern = pattern if "z" in m.vocab else pattern.replace("|zoe", "")
    texts = []
    for seed, temperature in ((0, 0.5), (1, 0.8), (2, 1.0), (3, 1.2)):
        got, possible = sample_recorded(m, "\n", 30, temperature, seed, 50, regex=pattern)
        assert possible, (pattern, temperature)
        texts += got
    assert len(texts) == 200
    assert all(re.fullmatch(pattern, t) for t in texts), [t for t in texts if not re.fullmatch(pattern, t)][:3]
    assert len(set(texts)) > 20  # samples, not one forced text


@pytest.mark.slow
def test_same_seed_same_text_alone_or_beside_another_request(names_model):
    m = names_model
    kw = dict(regex=r"[\s\S]*a\n[\s\S]*n", seed=7, num_samples=3)
    a = m.generate("\n", 40, 1.0, **kw)
    assert a == m.generate("\n", 40, 1.0, **kw)
    gens = [m.generation("\n", 40, 1.0, **kw), m.generation("\n", 40, 0.9, seed=8, num_samples=2),
            m.generation("\n", 40, 1.0, seed=9, num_samples=2, must_include=["lee"])]
    batch = Batch()
    texts = [[""] * g.rows for g in gens]
    while not all(g.finished for g in gens):
        live = [g for g in gens if not g.finished]
        batch.step(live)
        for g in live:
            k = gens.index(g)
            texts[k] = [t + piece for t, piece in zip(texts[k], g.pieces, strict=True)]
    assert texts[0] == a
    assert texts[1] == m.generate("\n", 40, 0.9, seed=8, num_samples=2)
    assert all("lee" in t for t in texts[2])


@pytest.mark.slow
def test_stops_and_items_end_only_where_the_pattern_allows(names_model):
    m = names_model
    texts = m.generate("\n", 40, 1.0, seed=1, num_samples=50, stop="\n", regex=r"[a-z]+a\n")
    assert all(re.fullmatch(r"[a-z]+a\n", t) for t in texts)
    items = m.items(60, 1.0, seed=2, starts_with="ma", ends_with="a", min_length=4, max_length=7)
    assert len(items) == 60
    assert all(re.fullmatch(r"ma[a-z]*a", i.text) and 4 <= len(i.text) <= 7 for i in items)
    assert {i.status for i in items} <= {"new", "in training set", "in validation set"}
    choices = ["anna", "emma", "mila"]
    items = m.items(20, 1.0, seed=3, regex=choice_pattern(choices))
    assert len(items) == 20 and all(i.text in choices for i in items)


@pytest.mark.slow
def test_must_include_succeeds_for_100_samples_of_200_chars(names_model):
    texts = names_model.generate("\n", 200, 1.0, seed=5, num_samples=100, must_include="anna,lee")
    hits = sum("anna" in t and "lee" in t for t in texts)
    assert hits >= 95 and all(len(t) == 200 for t in texts)


@pytest.mark.slow
def test_best_of_returns_the_likeliest_drawn_by_the_models_own_score(names_model):
    m = names_model
    prime, n, k = "\nma", 3, 12
    drawn = m.generate(prime, 30, 1.0, seed=4, num_samples=k)
    per_char = [m.score(prime + t).logprobs[len(prime):].mean() for t in drawn]
    best = m.search(prime, 30, 1.0, seed=4, num_samples=n, best_of=k)
    expected = [drawn[i] for i in np.argsort(per_char)[::-1][:n]]
    assert [b.text for b in best] == expected
    assert m.generate(prime, 30, 1.0, seed=4, num_samples=n, best_of=k) == expected
    for b in best:
        assert b.logprob == pytest.approx(m.score(prime + b.text).logprobs[len(prime):].sum(), abs=1e-3)
    with pytest.raises(CharlstmError) as info:
        m.generate(prime, 10, num_samples=4, best_of=2)
    assert info.value.field == "best_of"


@pytest.mark.slow
def test_beam_search_is_at_least_as_likely_as_greedy(names_model):
    m = names_model
    for prime in ("\n", "\nma", "\nanna\nj", "\nol"):
        greedy = m.generate(prime, 40, 0)
        beam = m.search(prime, 40, beam=4)[0]
        lp = m.score(prime + beam.text).logprobs[len(prime):].sum()
        assert lp == pytest.approx(beam.logprob, abs=1e-3)
        assert lp >= m.score(prime + greedy).logprobs[len(prime):].sum() - 1e-6
    # the n-gram ban works inside the beam: no 3-gram twice in any hypothesis
    for hyp in m.search("\n", 60, beam=4, num_samples=4, no_repeat_ngram=3):
        grams = [hyp.text[i : i + 3] for i in range(len(hyp.text) - 2)]
        assert len(grams) == len(set(grams)), hyp.text
    # with a pattern, every hypothesis matches
    for hyp in m.search("\n", 30, beam=4, num_samples=4, regex=r"[a-z]+a\n[a-z]+n"):
        assert re.fullmatch(r"[a-z]+a\n[a-z]+n", hyp.text)


@pytest.mark.slow
def test_the_cli_shapes_items_and_text_and_bad_input_is_one_line(names_model):
    path = str(names_model.path)
    r = run_cli("generate", path, "--num-samples", "12", "--seed", "1", "--starts-with", "ma", "--ends-with", "a",
                "--min-length", "3", "--max-length", "7")
    assert r.returncode == 0, r.stderr
    items = [line.split()[0] for line in r.stdout.strip().splitlines()]
    assert len(items) == 12 and all(re.fullmatch(r"ma[a-z]*a", i) and 3 <= len(i) <= 7 for i in items)
    r = run_cli("generate", path, "--prime", "\nma", "--length", "30", "--beam", "3", "--num-samples", "2",
                "--best-of", "4")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "best-of" in r.stderr
    for args, words in ((["--regex", "(a"], "not a valid regular expression"),
                        (["--must-include", "anna,ö"], "not in the model's vocabulary"),
                        (["--regex", "[a-z]{50}", "--max-length", "10"], "no text")):
        r = run_cli("generate", path, *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr, r.stderr


def test_a_selected_history_bans_what_a_rebuilt_one_bans():
    """Beam search carries the processors' memos from parent to child rows (RowHistory.select): the
    result must be what the processors compute from the children's ids afresh, siblings independent."""
    from charlstm.generation.processors import NoRepeatNGram, RepetitionPenalty, RowHistory

    rng = np.random.default_rng(0)
    procs = [NoRepeatNGram(3), RepetitionPenalty(1.3)]
    prime = np.array([0, 1, 2, 0, 1])
    ids = rng.integers(0, 4, size=(3, 12))
    carried = RowHistory(prime, 3, keep_ids=True)
    rows = np.arange(3)
    for t in range(12):
        for p in procs:
            p(np.zeros((len(rows), 4)), carried)  # index what the history holds
        pick = np.array([1, 1, 0]) if t % 3 == 1 else np.array([2, 0, 1])
        carried = carried.select(pick)
        rows = rows[pick]
        ids = ids[pick]
        carried.update(ids[:, t])
        fresh = RowHistory(prime, 3, keep_ids=True)
        for k in range(t + 1):
            fresh.update(ids[:, k])
        logits = rng.normal(size=(3, 4))
        for p in procs:
            np.testing.assert_array_equal(p(logits, carried), p(logits, fresh))
