"""Generation: stateful and equal to the lesson's window re-reading where both see the same characters, seeded,
top-k/top-p/temperature honoured, streamed, constant memory, and a CLI with clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from conftest import run_cli
from model_factory import CHARS, build_and_save
from steps import Steps

from charlstm.errors import CharlstmError
from charlstm.generation import model as runtime
from charlstm.generation.sampling import probabilities, sample

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gen_models")


@pytest.fixture(scope="module")
def model_path(model_dir):
    """Two LSTM layers with a fairly peaked output, so top-k and top-p cut real probability mass."""
    path = model_dir / "default.keras"
    build_and_save(path, layers=2, units=32, logit_scale=3.0, seed=3, extra_meta={"seeds": ["the cat "]})
    return path


@pytest.fixture(scope="module")
def classic_path(model_dir):
    path = model_dir / "classic.keras"
    build_and_save(path, window=40, input="onehot", units=32, logit_scale=3.0, seed=2, forget_bias=5.0)
    return path


@pytest.fixture
def model(model_path):
    return runtime.load(model_path)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def step_logits(model, prime: str, text: str) -> np.ndarray:
    """Logits that chose each character of `text`, computed independently by one forward pass."""
    ids = model.encode(prime + text)
    return model.forward(ids[None, :])[0][0, len(prime) - 1 : len(prime) - 1 + len(text)]


def nucleus(logits: np.ndarray, temperature: float, top_p: float) -> set[int]:
    q = softmax(logits / temperature)
    order = np.argsort(-q)
    n = int(np.searchsorted(np.cumsum(q[order]), top_p)) + 1  # smallest prefix holding top_p of the mass
    return set(order[:n].tolist())


# -- stateful = window where they see the same characters; the prime is read once -----------------------------


@pytest.mark.parametrize("prime", ["the cat ", "a nice old red hat, the"])
def test_stateful_equals_window_rereading_while_the_text_fits_the_window(classic_path, prime):
    model = runtime.load(classic_path)
    length = 80
    stateful = model.generate(prime, length, 1.0, seed=5, context="stateful")
    window = model.generate(prime, length, 1.0, seed=5, context="window")
    fit = 40 - len(prime)
    assert stateful[:fit] == window[:fit]
    assert len(stateful) == len(window) == length
    # and the equality is not vacuous: past 40 characters the two contexts give different logits
    ids = model.encode(prime + stateful)[None, :]
    assert np.abs(model.forward(ids)[0][0, -1] - model.forward(ids[:, -40:])[0][0, -1]).max() > 1e-2


def test_window_context_reproduces_the_lesson_loop_with_keras(tmp_path):
    """context="window" is the lesson's loop: Keras on the last 40 characters, sample, append, repeat."""
    import keras

    path = tmp_path / "classic.keras"
    keras_model = build_and_save(path, window=40, input="onehot", units=16, logit_scale=3.0, seed=9)
    model = runtime.load(path)
    prime = "the old sea dog sat on the red mat, then"[:40]
    assert len(prime) == 40
    text = model.generate(prime, 12, 0.0, context="window")
    history = list(model.encode(prime))
    expected = ""
    for _ in range(12):
        logits = keras.ops.convert_to_numpy(keras_model(np.array([history[-40:]], dtype="int32")))[0]
        nxt = int(np.argmax(logits))
        expected += CHARS[nxt]
        history.append(nxt)
    assert text == expected


@pytest.mark.parametrize("num_samples", [1, 4])
def test_stateful_generation_reads_the_prime_once(model_path, num_samples):
    model = runtime.load(model_path)
    steps = Steps(model)
    prime, length = "the cat sat", 50
    model.generate(prime, length, 1.0, seed=0, num_samples=num_samples)
    assert steps.count == len(prime) + length - 1  # P steps for the prime, one per new char but the last
    windowed = runtime.load(model_path)
    windowed_steps = Steps(windowed)
    windowed.generate(prime, length, 1.0, seed=0, context="window")
    assert windowed_steps.count > 10 * steps.count  # what re-reading would have cost


def test_greedy_generation_follows_the_argmax_of_a_full_forward_pass(model):
    prime = "the dog "
    text = model.generate(prime, 40, temperature=0.0, no_repeat_ngram=0)  # the argmax itself, unconstrained
    logits = step_logits(model, prime, text)
    assert model.encode(text).tolist() == logits.argmax(axis=-1).tolist()


# -- seeds, temperature, samples ------------------------------------------------------------------------------


def test_temperature_zero_is_deterministic_whatever_the_seed(model):
    texts = {model.generate("the ", 60, 0.0, seed=s) for s in (None, 1, 2, 3)}
    assert len(texts) == 1


def test_same_seed_same_text_and_different_seeds_differ(model):
    a = model.generate("the ", 200, 1.0, seed=42)
    b = runtime.load(model.path).generate("the ", 200, 1.0, seed=42)
    c = model.generate("the ", 200, 1.0, seed=43)
    assert a == b
    assert a != c
    assert model.generate(None, 30, 1.0, seed=7) == model.generate(None, 30, 1.0, seed=7)


def test_num_samples_are_different_texts_of_the_full_length(model):
    texts = model.generate("the ", 120, 1.0, seed=3, num_samples=8)
    assert isinstance(texts, list) and len(texts) == 8
    assert all(len(t) == 120 for t in texts)
    assert len(set(texts)) == 8


def test_num_samples_stream_yields_one_character_per_sample(model):
    steps = list(model.stream("the ", 5, 1.0, seed=0, num_samples=3))
    assert len(steps) == 5 and all(isinstance(s, list) and len(s) == 3 for s in steps)
    assert all(len(ch) == 1 for s in steps for ch in s)


def test_lower_temperature_concentrates_on_likelier_characters(model):
    prime = "the "
    mean_logp = {}
    for temp in (0.3, 1.5):
        texts = model.generate(prime, 150, temp, seed=1, num_samples=8)
        total = []
        for text in texts:
            logits = step_logits(model, prime, text)
            logp = np.log(softmax(logits))
            total.extend(logp[np.arange(len(text)), model.encode(text)])
        mean_logp[temp] = float(np.mean(total))
    assert mean_logp[0.3] > mean_logp[1.5] + 0.3


# -- top-k and top-p ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 7])
def test_sample_top_k_never_leaves_the_k_most_likely(k):
    rng = np.random.default_rng(k)
    logits = rng.normal(0.0, 2.0, size=(3000, 25))
    ids = sample(logits, rng.random(3000), 1.0, top_k=k)
    ranks = (logits > logits[np.arange(3000), ids][:, None]).sum(axis=1)
    assert ranks.max() < k
    row = logits[0]  # the batch-1 path, many draws of one row
    picks = {int(sample(row, np.array([u]), 1.2, top_k=k)[0]) for u in rng.random(2000)}
    assert picks == set(np.argsort(-row)[:k].tolist())  # all of them, and only them


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 1.0])
def test_sample_top_p_never_leaves_the_nucleus(top_p):
    rng = np.random.default_rng(int(top_p * 10))
    logits = rng.normal(0.0, 2.0, size=(2000, 25))
    for temperature in (0.7, 1.0):
        ids = sample(logits, rng.random(2000), temperature, top_p=top_p)
        assert all(int(i) in nucleus(row, temperature, top_p) for row, i in zip(logits, ids, strict=True))
    row = logits[1]
    picks = {int(sample(row, np.array([u]), 1.0, top_p=top_p)[0]) for u in rng.random(3000)}
    assert picks == nucleus(row, 1.0, top_p)


def test_sample_draws_at_the_ends_of_the_unit_interval_stay_in_the_support():
    logits = np.array([[0.0, 5.0, -np.inf, 4.0, 1.0, -np.inf]])
    for u in (0.0, 1e-300, 0.5, np.nextafter(1.0, 0.0)):
        for kw in ({}, {"top_k": 2}, {"top_p": 0.5}):
            i = int(sample(logits, np.array([u]), 1.0, **kw)[0])
            assert probabilities(logits, 1.0, **kw)[0, i] > 0, (u, kw, i)


@pytest.mark.parametrize("options", [{"top_k": 3}, {"top_p": 0.6}, {"top_k": 5, "top_p": 0.8}])
def test_generation_respects_top_k_and_top_p(model, options):
    prime, temperature = "the ", 1.3
    texts = model.generate(prime, 150, temperature, seed=11, num_samples=4, **options)
    single = model.generate(prime, 150, temperature, seed=12, **options)
    for text in [*texts, single]:
        logits = step_logits(model, prime, text)
        for row, ch in zip(logits, model.encode(text), strict=True):
            allowed = set(range(len(row)))
            if "top_k" in options:
                allowed &= set(np.argsort(-row)[: options["top_k"]].tolist())
            if "top_p" in options:
                kept = probabilities(row, temperature, top_k=options.get("top_k"), top_p=options["top_p"])[0]
                allowed &= set(np.flatnonzero(kept).tolist())
            assert int(ch) in allowed


def test_unknown_symbol_is_never_generated(tmp_path):
    path = tmp_path / "unk.keras"
    build_and_save(path, has_unknown=True, output_bias={len(CHARS): 8.0})  # the unknown id is the favourite
    model = runtime.load(path)
    assert model.forward(model.encode("the ")[None, :])[0][0, -1].argmax() == len(CHARS)
    text = model.generate("the ", 500, 1.5, seed=0)
    assert len(text) == 500 and "\ufffd" not in text
    assert "\ufffd" not in model.generate("the ", 50, 0.0)


# -- stop, unknown characters, errors -------------------------------------------------------------------------


def test_stop_ends_generation_at_the_first_occurrence(model):
    full = model.generate("the ", 300, 1.0, seed=4)
    stop = full[100:102]
    stopped = model.generate("the ", 300, 1.0, seed=4, stop=stop)
    assert stopped == full[: full.index(stop) + len(stop)]
    assert model.generate("the ", 50, 1.0, seed=4, stop="never appears because q is not a character") == full[:50]


def test_stop_with_several_samples_ends_each_one(model):
    texts = model.generate("the ", 400, 1.0, seed=6, num_samples=5, stop="e")
    assert all(t.endswith("e") and t.count("e") == 1 for t in texts)


def test_unknown_prime_characters_follow_the_policy(model, tmp_path):
    with pytest.raises(CharlstmError, match="'q'"):
        model.generate("the quiet ", 10)
    assert model.generate("the quiet ", 30, 1.0, seed=1, unknown="skip") == model.generate(
        "the uiet ", 30, 1.0, seed=1
    )
    path = tmp_path / "unk.keras"
    build_and_save(path, has_unknown=True)
    unk = runtime.load(path)
    replaced = unk.generate("qa", 20, 0.0, unknown="replace")
    ids = np.array([len(CHARS), CHARS.index("a")])
    logits = unk.forward(np.concatenate([ids, unk.encode(replaced)])[None, :])[0][0, 1:-1]
    logits[:, len(CHARS)] = -np.inf
    assert unk.encode(replaced).tolist() == logits.argmax(axis=-1).tolist()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_p": 0.0}, "top-p"),
        ({"top_p": 1.5}, "top-p"),
        ({"top_k": 0}, "top-k"),
        ({"temperature": -1.0}, "temperature"),
        ({"num_samples": 0}, "num-samples"),
        ({"num_samples": 2.5}, "num-samples"),
        ({"length": -5}, "length"),
        ({"context": "sliding"}, "context"),
        ({"prime": ""}, "prime is empty"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(model, kwargs, message):
    args = {"prime": "the ", "length": 10, **kwargs}
    steps = Steps(model)
    with pytest.raises(CharlstmError, match=message):
        model.stream(**args)
    assert steps.count == 0


# -- streaming and memory -------------------------------------------------------------------------------------


def test_stream_is_a_lazy_iterator(model):
    steps = Steps(model)
    it = model.stream("the ", 10**9, 1.0, seed=0)
    assert iter(it) is it
    first = [next(it) for _ in range(5)]
    assert all(isinstance(ch, str) and len(ch) == 1 for ch in first)
    assert steps.count == len("the ") + 4  # nothing computed ahead of what was asked for
    it.close()


def _peak_bytes(model, length: int, **kw) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    n = 0
    for _ in model.stream("the ", length, 1.0, seed=0, **kw):
        n += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == length
    return peak


def test_long_generation_runs_in_constant_memory(tmp_path):
    """The state is a few fixed-size arrays: 5x more characters, the same peak (an 8-byte pointer kept per
    character would add 160 kB). The default no_repeat_ngram has to remember the n-grams it has seen: about
    100 bytes a character (issue 16), bounded here."""
    path = tmp_path / "small.keras"
    build_and_save(path, units=8, embedding_dim=4)
    model = runtime.load(path)
    short = _peak_bytes(model, 5_000, no_repeat_ngram=0)  # both past the 4096 draws taken at a time
    long = _peak_bytes(model, 25_000, no_repeat_ngram=0)
    assert long < short + 32_000, (short, long)
    assert long < 1_000_000
    short, long = _peak_bytes(model, 5_000), _peak_bytes(model, 25_000)
    assert long - short < 20_000 * 160, (short, long)


# -- the command line -----------------------------------------------------------------------------------------


def test_cli_prints_one_sample_per_temperature(model_path):
    r = run_cli("generate", str(model_path), "--prime", "the ", "--length", "60", "--seed", "1",
                "--temperature", "0.2,0.5,1.0,1.2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("----- temperature: ") == 4
    model = runtime.load(model_path)
    expected = "\n".join(
        f"----- temperature: {t}\nthe {model.generate('the ', 60, t, seed=1)}\n" for t in (0.2, 0.5, 1.0, 1.2)
    )
    assert r.stdout == expected


def test_cli_output_matches_the_api_with_the_same_seed(model_path):
    r = run_cli("generate", str(model_path), "--prime", "the ", "--length", "80", "--seed", "9",
                "--temperature", "0.8", "--top-k", "5")
    assert r.returncode == 0, r.stderr
    expected = runtime.load(model_path).generate("the ", 80, 0.8, seed=9, top_k=5)
    assert r.stdout == "the " + expected + "\n"


def test_cli_default_prime_matches_the_api(model_path):
    r = run_cli("generate", str(model_path), "--length", "30", "--seed", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "the cat " + runtime.load(model_path).generate(None, 30, 1.0, seed=2) + "\n"


def test_cli_stop(model_path):
    full = runtime.load(model_path).generate("the ", 300, 1.0, seed=4)
    stop = full[150:153]
    r = run_cli("generate", str(model_path), "--prime", "the ", "--length", "300", "--seed", "4", "--stop", stop)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "the " + full[: full.index(stop) + len(stop)] + "\n"


def test_cli_num_samples_prints_each(model_path):
    r = run_cli("generate", str(model_path), "--prime", "the ", "--length", "40", "--seed", "4",
                "--num-samples", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("----- sample ") == 3


def test_cli_unknown_character_policies(model_path):
    r = run_cli("generate", str(model_path), "--prime", "the quiet ", "--length", "20")
    assert r.returncode == 2
    assert "'q'" in r.stderr and "--unknown" in r.stderr and "Traceback" not in r.stderr
    for policy in ("skip", "replace"):  # this vocabulary has no unknown symbol: replace drops too
        r = run_cli("generate", str(model_path), "--prime", "the quiet ", "--length", "20", "--seed", "1",
                    "--unknown", policy)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "the quiet " + runtime.load(model_path).generate("the uiet ", 20, 1.0, seed=1) + "\n"
    r = run_cli("generate", str(model_path), "--prime", "q", "--unknown", "skip")
    assert r.returncode == 2 and "prime is empty" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-p", "0"], "top-p must be in (0, 1]"),
        (["--top-p", "1.5"], "top-p must be in (0, 1]"),
        (["--top-p", "-0.2"], "top-p must be in (0, 1]"),
        (["--top-k", "0"], "top-k must be an integer >= 1"),
        (["--temperature", "0.5,-1"], "temperature must be >= 0"),
        (["--num-samples", "0"], "num-samples must be an integer >= 1"),
        (["--length", "-3"], "length must be an integer >= 0"),
        (["--unknown", "ignore"], "invalid choice"),
    ],
)
def test_cli_bad_arguments_exit_2_with_a_clear_message(model_path, args, message):
    r = run_cli("generate", str(model_path), "--prime", "the ", *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_cli_missing_model_file(tmp_path):
    r = run_cli("generate", str(tmp_path / "missing.keras"))
    assert r.returncode == 2 and "no such model file" in r.stderr


def test_cli_streams_characters_as_they_are_generated(model_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm.cli", "generate", str(model_path), "--prime", "the ",
         "--length", "100000000", "--seed", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        got = b""
        deadline = time.monotonic() + 60
        while len(got) < 200 and time.monotonic() < deadline:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            got += chunk
        assert proc.poll() is None, proc.stderr.read().decode()  # still generating: nothing was held back
        assert got.startswith(b"the ") and len(got) >= 200
    finally:
        proc.kill()
        proc.wait()


def test_zero_length_generates_nothing_and_computes_nothing(model):
    steps = Steps(model)
    assert model.generate("the ", 0) == ""
    assert model.generate("the ", 0, num_samples=3) == ["", "", ""]
    assert steps.count == 0
