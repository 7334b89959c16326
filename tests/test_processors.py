"""Issue 16: logit processors (phrase-loop control, penalties, bias) and the min_p / typical_p transforms: the
exact formulas on crafted logit vectors, Hugging Face's n-gram semantics against a straight reference, and
no_repeat_ngram never repeating an n-gram over many seeds."""

from __future__ import annotations

import numpy as np
import pytest

from charlstm.errors import CharlstmError
from charlstm.generation.processors import (
    LogitBias,
    NoRepeatNGram,
    PresenceFrequencyPenalty,
    RepetitionPenalty,
    RowHistory,
)
from charlstm.generation.sampling import min_p_filter, probabilities, typical_filter


def _history(prime, generated=(), rows=1):
    h = RowHistory(np.asarray(prime), rows, keep_ids=True)
    for i in generated:
        h.update(np.full(rows, i))
    return h


def test_repetition_penalty_is_ctrl_form_over_prime_and_generated():
    logits = np.array([[2.0, -1.0, 0.5, -3.0, 1.0, 0.0]])
    h = _history([0, 1], [3])
    out = RepetitionPenalty(2.0)(logits, h)
    np.testing.assert_array_equal(out, [[1.0, -2.0, 0.5, -6.0, 1.0, 0.0]])
    out = RepetitionPenalty(0.5)(logits, h)  # < 1 encourages repeats
    np.testing.assert_array_equal(out, [[4.0, -0.5, 0.5, -1.5, 1.0, 0.0]])
    np.testing.assert_array_equal(RepetitionPenalty(1.0)(logits, h), logits)
    with pytest.raises(CharlstmError, match="repetition-penalty"):
        RepetitionPenalty(0)


def test_presence_and_frequency_penalties_count_generated_characters_only():
    logits = np.array([[1.0, 1.0, 1.0, 1.0]])
    h = _history([0, 0, 3], [1, 1, 2])  # 0 and 3 only in the prompt
    out = PresenceFrequencyPenalty(presence=0.5, frequency=0.25)(logits, h)
    np.testing.assert_allclose(out, [[1.0, 1.0 - 2 * 0.25 - 0.5, 1.0 - 0.25 - 0.5, 1.0]], rtol=0, atol=0)
    h.update(np.array([1]))  # counts follow the history step by step
    out = PresenceFrequencyPenalty(presence=0.5, frequency=0.25)(logits, h)
    np.testing.assert_array_equal(out[0, 1], 1.0 - 3 * 0.25 - 0.5)


def test_processor_state_lives_in_each_generation_history():
    pen = RepetitionPenalty(2.0)
    a, b = _history([0], [1]), _history([2])
    logits = np.ones((1, 3))
    np.testing.assert_array_equal(pen(logits, a), [[0.5, 0.5, 1.0]])
    np.testing.assert_array_equal(pen(logits, b), [[1.0, 1.0, 0.5]])  # not a's characters
    rows = _history([0], rows=2)
    rows.update(np.array([1, 2]))
    np.testing.assert_array_equal(pen(np.ones((2, 3)), rows), [[0.5, 0.5, 1.0], [0.5, 1.0, 0.5]])


def test_logit_bias_adds_per_id_and_rejects_unknown_ids():
    logits = np.zeros((2, 4))
    out = LogitBias({1: 5.0, 3: -100}, 4)(logits, None)
    np.testing.assert_array_equal(out, [[0, 5, 0, -100]] * 2)
    with pytest.raises(CharlstmError, match="token id 4"):
        LogitBias({4: 1.0}, 4)


def _hf_banned(seq, n):
    """Hugging Face's _calc_banned_ngram_tokens for one hypothesis, written out."""
    if len(seq) + 1 < n:
        return set()
    grams = {}
    for gram in zip(*[seq[i:] for i in range(n)], strict=False):
        grams.setdefault(tuple(gram[:-1]), []).append(gram[-1])
    return set(grams.get(tuple(seq[len(seq) + 1 - n :]), []))


def test_no_repeat_ngram_bans_exactly_what_hugging_face_bans():
    h = _history([0, 1, 2, 0, 1])  # "abcab": "ab" was followed by "c"
    out = NoRepeatNGram(3)(np.zeros((1, 5)), h)
    assert np.isneginf(out[0]).tolist() == [False, False, True, False, False]
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5):
        proc = NoRepeatNGram(n)
        rows = 3
        prime = rng.integers(0, 6, 7)
        h = RowHistory(prime, rows, keep_ids=True)
        seqs = [prime.tolist() for _ in range(rows)]
        for _ in range(40):  # stepped incrementally, compared with the reference from scratch each step
            logits = np.zeros((rows, 40))
            out = proc(logits, h)
            for b in range(rows):
                assert set(np.flatnonzero(np.isneginf(out[b]))) == _hf_banned(seqs[b], n)
            ids = rng.integers(0, 40, rows)
            for b in range(rows):
                seqs[b].append(int(ids[b]))
            h.update(ids)


def test_no_repeat_ngram_compares_ngrams_exactly_over_a_two_character_vocabulary():
    """Over a binary vocabulary every (n-1)-gram recurs with both continuations and many n-grams differ in one
    id only: the ban at each step is exactly the reference's, for long n-grams too (the keys are the ids
    themselves, as base-V digits, not hashes), whether the history is indexed step by step or all at once."""
    rng = np.random.default_rng(1)
    for n in (4, 9, 16):
        seqs = rng.integers(0, 2, (2, 300))
        proc = NoRepeatNGram(n)
        step_by_step = RowHistory(seqs[0, :20], 2, keep_ids=True)
        step_by_step.update(seqs[:, 20])
        for t in range(21, 300):
            out = proc(np.zeros((2, 2)), step_by_step)
            for b in range(2):
                want = _hf_banned(step_by_step.ids[b].tolist(), n)
                if len(want) < 2:  # both banned: the row is left alone
                    assert set(np.flatnonzero(np.isneginf(out[b]))) == want, (n, t, b)
            step_by_step.update(seqs[:, t])
        at_once = RowHistory(seqs[0, :20], 2, keep_ids=True)
        for t in range(20, 300):
            at_once.update(seqs[:, t])
        np.testing.assert_array_equal(NoRepeatNGram(n)(np.zeros((2, 2)), at_once), proc(np.zeros((2, 2)), step_by_step))


def test_no_repeat_ngram_never_emits_a_repeated_ngram_over_many_seeds():
    vocab = 64  # 120 characters cannot use up every continuation of any (n-1)-gram (see the fallback test)
    for n in (2, 3, 4):
        for seed in range(40):
            rng = np.random.default_rng(seed)
            base = rng.normal(0, 2, vocab)
            base[0] += 4  # a strong favourite, the kind of model that loops
            proc, rows = NoRepeatNGram(n), 2
            h = RowHistory(np.array([0, 0, 1]), rows, keep_ids=True)
            for _ in range(120):
                z = proc(np.tile(base, (rows, 1)) / 0.3, h)
                p = np.exp(z - z.max(axis=1, keepdims=True))
                u = rng.random(rows)
                ids = (np.cumsum(p, axis=1) / p.sum(axis=1, keepdims=True) < u[:, None]).sum(axis=1)
                h.update(ids)
            for row in h.ids.tolist():
                grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
                assert len(grams) == len(set(grams)), (n, seed)


def test_no_repeat_ngram_leaves_a_row_alone_rather_than_ban_everything():
    h = _history([0, 1, 0, 1])
    logits = np.array([[0.0, 0.0, -np.inf]])  # id 2 already masked (the unknown symbol)
    out = NoRepeatNGram(1)(logits, h)  # would ban 0 and 1: nothing left
    np.testing.assert_array_equal(out, logits)


def test_min_p_keeps_entries_above_min_p_times_the_top():
    p = np.array([[0.5, 0.3, 0.1, 0.05, 0.05], [5.0, 1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(min_p_filter(p, 0.2), [[0.5, 0.3, 0.1, 0, 0], [5.0, 1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(min_p_filter(p, 0.21)[1], [5.0, 0, 0, 0, 0])


def test_typical_p_keeps_the_entries_closest_to_the_entropy():
    q = np.array([[0.4, 0.3, 0.2, 0.1]])
    ent = -(q * np.log(q)).sum()
    shift = np.abs(-np.log(q[0]) - ent)  # 0.3 and 0.2 are nearest the entropy (~1.28 nats)
    order = np.argsort(shift)
    assert order[:2].tolist() == [1, 2]
    np.testing.assert_array_equal(typical_filter(q * 4, 0.45), [[0, 1.2, 0.8, 0]])  # 0.3 < .45, + 0.2 reaches it
    np.testing.assert_array_equal(typical_filter(q, 0.3)[0] > 0, [False, True, False, False])
    np.testing.assert_array_equal(typical_filter(q, 0.999), q)
    zero = np.array([[0.0, 0.7, 0.3]])  # a masked entry stays out
    assert typical_filter(zero, 0.99)[0, 0] == 0


def test_min_p_and_typical_p_apply_after_temperature_in_probabilities():
    z = np.log(np.array([[0.5, 0.3, 0.1, 0.05, 0.05]]))
    p = probabilities(z, 1.0, min_p=0.2)
    np.testing.assert_allclose(p / p.sum(), [[0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9, 0, 0]])
    p = probabilities(z, 0.5, min_p=0.2)  # T = 0.5 squares the ratios: 0.1 / 0.5 -> 0.04 < 0.2
    assert (p[0] > 0).tolist() == [True, True, False, False, False]
    np.testing.assert_array_equal(probabilities(z, 1.0, typical_p=1.0), probabilities(z, 1.0))
