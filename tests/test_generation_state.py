"""The per-request generation state (charlstm.generation.state): generations stepped together give the texts they
give alone, logit processors see each row's history and constrain it, several stop strings."""

from __future__ import annotations

import numpy as np
import pytest
from model_factory import CHARS, build_and_save
from steps import Steps

from charlstm.generation import model as runtime
from charlstm.generation.processors import RowHistory
from charlstm.generation.state import Batch, step

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("genstate") / "m.keras"
    build_and_save(path, layers=2, units=32, logit_scale=3.0, seed=3)
    return runtime.load(path)


def run_together(gens, batch: Batch | None = None) -> list[list[str]]:
    """Step generations as the server's batcher does: one Batch over all steps, all together, each leaving
    when it is finished (down to the last one, stepped alone)."""
    batch = batch or Batch()
    texts = [["" for _ in range(g.rows)] for g in gens]
    active = list(range(len(gens)))
    while active:
        batch.step([gens[i] for i in active])
        for i in active:
            for b, ch in enumerate(gens[i].pieces):
                texts[i][b] += ch
        active = [i for i in active if not gens[i].finished]
    return texts


REQUESTS = [
    dict(prime="the cat ", length=120, temperature=1.0, seed=1),
    dict(prime="a dog", length=60, temperature=1.0, seed=2, num_samples=3),  # same settings: sampled as a group
    dict(prime="the ", length=150, temperature=0.7, top_k=5, seed=3),
    dict(prime="the mat", length=90, temperature=1.2, top_p=0.8, seed=4, num_samples=2, stop="e"),
    dict(prime="hot ", length=40, temperature=0.0),
    dict(prime="the log ", length=200, temperature=1.0, seed=5, stop=["at", "og"]),
]


def test_generations_stepped_together_give_the_texts_they_give_alone(model):
    steps = Steps(model)
    alone = []
    for kw in REQUESTS:
        out = model.generate(**kw)
        alone.append([out] if isinstance(out, str) else out)
    steps_alone = steps.count
    together = run_together([model.generation(**kw) for kw in REQUESTS])
    assert together == alone
    assert steps.count - steps_alone < steps_alone / 2  # and they really shared network steps
    # a request joining later (between steps) does not change the others either; nor does stepping with
    # one-off step() calls instead of a Batch kept over the steps
    gens = [model.generation(**kw) for kw in REQUESTS[:3]]
    batch = Batch()
    for _ in range(10):
        batch.step(gens)
    late = model.generation(**REQUESTS[3])
    texts = run_together([*gens, late], batch)
    assert texts[0][0] == alone[0][0][10:] and texts[2][0] == alone[2][0][10:]
    assert texts[1] == [t[10:] for t in alone[1]]
    assert texts[3] == alone[3]
    gens = [model.generation(**kw) for kw in REQUESTS]
    one_off = [["" for _ in range(g.rows)] for g in gens]
    while any(not g.finished for g in gens):
        running = [g for g in gens if not g.finished]
        step(running)
        for g in running:
            one_off[gens.index(g)] = [t + p for t, p in zip(one_off[gens.index(g)], g.pieces, strict=True)]
    assert one_off == alone


def test_several_stop_strings_end_a_row_at_the_first_of_them(model):
    full = model.generate("the ", 300, 1.0, seed=4)
    a, b = full[120:122], full[200:203]
    first = min(full.index(a) + len(a), full.index(b) + len(b))
    assert model.generate("the ", 300, 1.0, seed=4, stop=[b, a]) == full[:first]
    gen = model.generation("the ", 300, 1.0, seed=4, stop=[b, a])
    while not gen.finished:
        step([gen])
    assert gen.stopped_by[0] == (a if full.index(a) + len(a) == first else b)


def test_row_history_counts_the_run_from_the_prime():
    ids = np.array([3, 1, 1, 1])
    h = RowHistory(ids, rows=2)
    assert h.last.tolist() == [1, 1] and h.run.tolist() == [3, 3]
    h.update(np.array([1, 2]))
    assert h.last.tolist() == [1, 2] and h.run.tolist() == [4, 1]
    h.update(np.array([2, 2]))
    assert h.run.tolist() == [1, 2]


def test_a_logit_processor_constrains_every_row_with_its_history(model):
    """A processor that forbids a third character in a row (the shape of issue 10's repeat guard)."""
    seen = []

    def triples(text: str) -> bool:
        return any(text[i] == text[i + 1] == text[i + 2] for i in range(len(text) - 2))

    def no_triples(logits, history):
        seen.append((history.last.copy(), history.run.copy()))
        out = logits.copy()
        rows = np.flatnonzero(history.run >= 2)
        out[rows, history.last[rows]] = -np.inf
        return out

    prime = "the ss"
    unguarded = model.generate(prime, 200, 1.3, seed=8, num_samples=4)
    assert all(triples(prime[-2:] + t) for t in unguarded)  # this model repeats itself when let
    texts = model.generate(prime, 200, 1.3, seed=8, num_samples=4, processors=[no_triples])
    assert not any(triples(prime[-2:] + t) for t in texts)
    assert len(seen) == 200 and seen[0][1].tolist() == [2] * 4  # the prime's run of "s" counted
    assert seen[0][0].tolist() == [CHARS.index("s")] * 4
    # and it is honoured at temperature 0 too (greedy alone falls into a run of dots)
    assert triples(model.generate(prime, 200, 0.0))
    assert not triples(prime[-2:] + model.generate(prime, 200, 0.0, processors=[no_triples]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_row_steps_to_the_same_bits_alone_and_stacked_anywhere_among_others(tmp_path, cell):
    """Matrix-matrix products round differently with the number of rows and a row's place among them; the
    runtime's step computes each row on its own (runtime.rowwise), so stacking requests never changes a bit."""
    path = tmp_path / f"{cell}.keras"
    build_and_save(path, cell=cell, layers=2, units=128, embedding_dim=64, seed=1)
    model = runtime.load(path)
    rng = np.random.default_rng(0)

    def random_state(rows):
        return [tuple(rng.normal(0, 0.5, (rows, 128)).astype(np.float32) for _ in st) for st in model.initial_state(1)]

    for trial in range(6):
        alone_state = random_state(1)
        alone_id = rng.integers(0, len(CHARS), 1)
        logits, new_state = model.step(alone_id, alone_state)
        for rows in (2, 5, 17, 64):
            at = int(rng.integers(rows))
            state = random_state(rows)
            state = [tuple(np.concatenate([s[:at], a, s[at + 1 :]]) for s, a in zip(st, ast, strict=True))
                     for st, ast in zip(state, alone_state, strict=True)]
            ids = rng.integers(0, len(CHARS), rows)
            ids[at] = alone_id[0]
            stacked_logits, stacked_state = model.step(ids, state)
            assert np.array_equal(stacked_logits[at], logits[0]), (trial, rows, at)
            for st, ast in zip(stacked_state, new_state, strict=True):
                assert all(np.array_equal(s[at], a[0]) for s, a in zip(st, ast, strict=True))


def test_a_prime_is_read_to_the_same_bits_whatever_blas_threading_is_in_force(tmp_path):
    """A matrix product split over two BLAS threads rounds differently from one on one thread; reading a prime
    (forward) must not depend on the thread count in force, which another thread (a server's batcher for
    another model, threadpoolctl being process-wide) may change at any moment."""
    from threadpoolctl import threadpool_limits

    path = tmp_path / "m.keras"
    build_and_save(path, layers=2, units=128, embedding_dim=64, seed=3)
    model = runtime.load(path)
    ids = np.random.default_rng(0).integers(0, len(CHARS), (1, 300))
    with threadpool_limits(limits=1, user_api="blas"):
        one = model.forward(ids)
    with threadpool_limits(limits=2, user_api="blas"):
        two = model.forward(ids)
    assert np.array_equal(one[0], two[0])
    assert all(np.array_equal(a, b) for st1, st2 in zip(one[1], two[1], strict=True) for a, b in zip(st1, st2, strict=True))
