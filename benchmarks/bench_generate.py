"""Generation speed, side by side (issue 4): the lesson's loop vs the charlstm NumPy runtime.

    python benchmarks/bench_generate.py [--readme]

For two models with random weights (speed does not depend on training) — the classic LSTM(128) on one-hot
input with a 40-character window, and the default recipe's model (2 x LSTM(128) on a 64-wide embedding) — it measures
characters per second for
  (a) the lesson's loop: `model.predict` on the last 40 characters, once per generated character, then the
      lesson's `sample` (log, exp, multinomial);
  (b) the charlstm runtime, one sample (stateful: one step per character);
  (c) the charlstm runtime, 64 samples as one batch (aggregate characters per second);
and the cold start of `charlstm generate MODEL --length 1` against `python -c "import tensorflow"`.
With --readme the table replaces the "## Generation speed (issue 4)" section of benchmarks/README.md.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import cpu_name, replace_readme_section  # noqa: E402

README = HERE / "README.md"
SECTION = "## Generation speed (issue 4)"
VOCAB = tuple(sorted(set("abcdefghijklmnopqrstuvwxyz0123456789 \n.,;:!?'\"-()[]*_&$")))  # ~ the lesson's 60
MAXLEN = 40

TARGETS = {
    "speedup": 500.0,  # runtime batch 1 / lesson loop
    "classic_b1": 20_000.0,  # chars/s, LSTM(128), batch 1
    "b64": 200_000.0,  # aggregate chars/s, batch 64
    "cold": 0.5,  # generate cold start / TensorFlow import
}


def make_models(folder: Path) -> dict[str, tuple[Path, object]]:
    import keras

    from charlstm.data.vocab import Vocabulary
    from charlstm.training.model import ModelSpec, build_model
    from charlstm.training.saving import save_model

    keras.utils.set_random_seed(0)
    vocab = Vocabulary(VOCAB)
    specs = {
        "classic LSTM(128)": ModelSpec(vocab_size=vocab.size, input="onehot", layers=1, units=128, window=MAXLEN),
        "default 2xLSTM(128)": ModelSpec(vocab_size=vocab.size),
    }
    out = {}
    for name, spec in specs.items():
        model = build_model(spec)
        path = folder / f"{name.split()[0]}.keras"
        save_model(model, path, {"vocab": vocab.to_json(), "preprocessing": {}, "seeds": ["the sea " * 5]})
        out[name] = (path, model)
    return out


def lesson_sample(preds: np.ndarray, temperature: float = 1.0) -> int:
    """The lesson's sampling function, verbatim in spirit (probabilities in, one id out)."""
    preds = np.asarray(preds).astype("float64")
    preds = np.log(preds) / temperature
    exp_preds = np.exp(preds)
    preds = exp_preds / np.sum(exp_preds)
    return int(np.argmax(np.random.multinomial(1, preds, 1)))


def lesson_loop(model, n_chars: int, blocks: int = 3) -> float:
    """The lesson's generation loop: predict on the 40-character window for every character. Returns chars/s,
    the median over `blocks` equal runs (a shared machine makes single runs jumpy)."""
    windowed = len(model.outputs[0].shape) == 2  # classic: last step only; default: every position
    rng = np.random.default_rng(0)
    window = list(rng.integers(0, len(VOCAB), MAXLEN))
    model.predict(np.array([window]), verbose=0)  # warm-up (graph tracing), as the lesson's first call pays
    per_block = max(1, n_chars // blocks)
    rates = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(per_block):
            logits = model.predict(np.array([window[-MAXLEN:]]), verbose=0)[0]
            logits = logits if windowed else logits[-1]
            p = np.exp(logits - logits.max())
            nxt = lesson_sample(p / p.sum(), 1.0)
            window.append(nxt)
        rates.append(per_block / (time.perf_counter() - start))
    return statistics.median(rates)


def runtime_speed(path: Path, length: int, num_samples: int, repeats: int = 3) -> float:
    """Median aggregate chars/s of charlstm's runtime (stateful) over `repeats` runs."""
    from charlstm.generation import model as runtime

    model = runtime.load(path)
    model.generate("the sea ", 50, 1.0, seed=0, num_samples=num_samples)  # warm-up
    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        model.generate("the sea ", length, 1.0, seed=r, num_samples=num_samples)
        rates.append(length * num_samples / (time.perf_counter() - start))
    return statistics.median(rates)


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cold_start(path: Path, runs: int) -> tuple[float, float]:
    exe = Path(sys.executable).with_name("charlstm")
    cli = [str(exe)] if exe.is_file() else [sys.executable, "-m", "charlstm.cli"]
    generate = wall([*cli, "generate", str(path), "--length", "1", "--seed", "0"], runs)
    tf_import = wall([sys.executable, "-c", "import tensorflow"], runs)
    return generate, tf_import




def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lesson-chars", type=int, default=150, help="characters for the (slow) lesson loop")
    ap.add_argument("--runs", type=int, default=5, help="cold-start runs (median)")
    ap.add_argument("--readme", action="store_true", help=f"write the results into {README}")
    args = ap.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(Path(tmp))
        for name, (path, keras_model) in models.items():
            big = "default" in name
            lesson = lesson_loop(keras_model, args.lesson_chars)
            b1 = runtime_speed(path, 4_000 if big else 20_000, 1)
            b64 = runtime_speed(path, 300 if big else 1_500, 64)
            rows.append((name, lesson, b1, b64))
            print(f"{name}: lesson {fmt(lesson)}  runtime b1 {fmt(b1)}  runtime b64 {fmt(b64)} chars/s", flush=True)
        gen_cold, tf_cold = cold_start(models["classic LSTM(128)"][0], args.runs)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    lines = [
        "| model | (a) lesson loop, `model.predict` per char | (b) charlstm, 1 sample | (b)/(a) "
        "| (c) charlstm, 64 samples (aggregate) | (c)/(a) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, lesson, b1, b64 in rows:
        lines.append(
            f"| {name} | {fmt(lesson)} chars/s | {fmt(b1)} chars/s | {b1 / lesson:,.0f}x "
            f"| {fmt(b64)} chars/s | {b64 / lesson:,.0f}x |"
        )
    lines += [
        "",
        f"| cold start (median of {args.runs}) | seconds |",
        "|---|---:|",
        f"| `charlstm generate MODEL --length 1` (whole process) | {gen_cold:.2f} |",
        f"| `python -c \"import tensorflow\"` | {tf_cold:.2f} |",
        f"| ratio | {gen_cold / tf_cold:.2f} |",
    ]
    classic = rows[0]
    checks = [
        (f"runtime batch 1 >= {TARGETS['speedup']:.0f}x the lesson's loop (classic)",
         classic[2] / classic[1] >= TARGETS["speedup"]),
        (f"LSTM(128) batch 1 >= {TARGETS['classic_b1']:,.0f} chars/s", classic[2] >= TARGETS["classic_b1"]),
        (f"LSTM(128) batch 64 >= {TARGETS['b64']:,.0f} chars/s aggregate", classic[3] >= TARGETS["b64"]),
        ("generate cold start < half the TensorFlow import", gen_cold / tf_cold < TARGETS["cold"]),
    ]
    lines += ["", "| target | met |", "|---|---|"] + [f"| {t} | {'yes' if ok else 'NO'} |" for t, ok in checks]
    table = "\n".join(lines)
    machine = (
        f"{cpu_name()} ({os.cpu_count()} cores), Python {platform.python_version()}, "
        f"NumPy {np.__version__}; 1-minute load average {load:.1f} before and {load_after:.1f} after the run"
    )
    if max(load, load_after) >= 0.5 * (os.cpu_count() or 1):
        machine += (
            ". The machine was shared with other jobs during the run, so every figure moves from run to run;"
            " the lesson's loop (TensorFlow's thread pools) moves the most, and with it the ratios"
        )
    print()
    print(table)
    print(f"\n{machine}")
    if args.readme:
        write_readme(table, machine, args.lesson_chars)


def write_readme(table: str, machine: str, lesson_chars: int) -> None:
    body = f"""{SECTION}

Command: `python benchmarks/bench_generate.py --readme` (random-weight models; speed does not depend on
training). (a) is the lesson's loop: Keras `model.predict` on the last 40 characters for every new
character (median of 3 runs of {lesson_chars // 3} characters); (b) and (c) are `CharModel.generate` (stateful: one step per
character, NumPy only), the median of 3 runs; (c) counts the characters of all 64 samples.

{table}

Machine: {machine}.

Batched steps (64 samples, or `evaluate`'s 64 streams) run on one BLAS thread (`runtime.OneBlasThread`, via threadpoolctl):
OpenBLAS splits a 64 x 128 by 128 x 512 product over threads that then wait for each other, and on this
shared 2-core machine that product took 3.4-6.5 ms on the default 2 threads against 0.17 ms on one (measured
once while writing this benchmark). Batch 1 (vector times matrix) is left alone.

Since issue 9 a batched step computes every row on its own, one vector-matrix product per row
(`runtime.rowwise`), so that a row's bits, and with them a server request's text, do not depend on the rows
stacked with it. A matrix-matrix product rounds a row differently according to its place in the BLAS kernel's
tiles and the number of rows (measured on this machine's OpenBLAS 0.3.31: a row's result took one of five
different bit patterns across 1-79 rows and positions), and no grouping of rows into fixed-size products was
both invariant and faster than per-row products (groups of 8 were invariant here, at the per-row products'
cost). The price, measured with this command before and after that change in one session on AMD EPYC
(2 cores): 64 samples as one batch 394,805 -> 292,375 chars/s (classic) and 187,881 -> 119,323 (default);
one sample unchanged (63,171 -> 62,011 and 35,218 -> 34,786, noise).

"""
    replace_readme_section(README, SECTION, body)


if __name__ == "__main__":
    main()
