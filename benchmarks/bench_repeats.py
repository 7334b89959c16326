"""Degenerate samples at the lesson's low temperatures: how often a model falls into one character forever.

    python benchmarks/bench_repeats.py MODEL [MODEL ...] [--prime "def "] [--samples 20] [--length 3000]

For each model and temperature (0.2, 0.5) it draws `--samples` samples of `--length` characters (one batch,
seed 1) under each sampling variant and counts:
- degenerate: a run of one character longer than twice the training text's longest run of it (issue 10);
- cycling: the last 1,000 characters repeat exactly with a period of at most 300 characters.
Variants: plain sampling; the repeat guard (`max_repeat="auto"`); Hugging Face's / llama.cpp's repetition
penalty (1.1 over the last 64 characters); min-p 0.1. The training text's longest runs come from the model
file, or, for a model trained before they were recorded, from its corpus read the trainer's way.
"""

from __future__ import annotations

import argparse
import json
from collections import deque

import numpy as np
from common import OUT, seed_keras_cache


def training_runs(model) -> np.ndarray:
    if model.meta.get("longest_runs"):
        return np.asarray(model.meta["longest_runs"])
    from charlstm.data.vocab import longest_runs
    from charlstm.training.plan import Plan, read_text
    from charlstm.training.recipes import TrainConfig

    config = TrainConfig.from_json(model.meta["config"])
    text = read_text(Plan(config, model.meta["corpus"]["source"], None))
    return longest_runs(text.train_ids, model.vocab.size)


class RepetitionPenalty:
    """HF `repetition_penalty` / llama.cpp `repeat_penalty` over the last `n` characters of each row."""

    def __init__(self, penalty: float, n: int) -> None:
        self.penalty, self.n, self.recent = penalty, n, None

    def __call__(self, logits, history):
        if self.recent is None:
            self.recent = [deque(maxlen=self.n) for _ in range(len(logits))]
        for row, last in zip(self.recent, history.last.tolist(), strict=True):
            row.append(last)
        out = np.array(logits, dtype=np.float64)
        for b, row in enumerate(self.recent):
            ids = np.fromiter(set(row), dtype=np.int64)
            vals = out[b, ids]
            out[b, ids] = np.where(vals > 0, vals / self.penalty, vals * self.penalty)
        return out


class MinP:
    """min-p: drop characters less likely than `p` times the most likely one (at the sampling temperature)."""

    def __init__(self, p: float, temperature: float) -> None:
        self.p, self.t = p, max(temperature, 1e-6)

    def __call__(self, logits, history):
        z = np.asarray(logits, dtype=np.float64) / self.t
        z = z - z.max(axis=-1, keepdims=True)
        return np.where(np.exp(z) < self.p, -np.inf, logits)


def degenerate(text: str, limits: dict[str, int]) -> tuple[bool, int, str]:
    """(has a run > 2x the training text's longest of that character, longest run, its character)."""
    worst, worst_char, bad = 0, "", False
    run, prev = 0, None
    for ch in text:
        run = run + 1 if ch == prev else 1
        prev = ch
        if run > worst:
            worst, worst_char = run, ch
        if run > 2 * limits.get(ch, 1):
            bad = True
    return bad, worst, worst_char


def cycling(text: str, tail: int = 1000, max_period: int = 300) -> bool:
    if len(text) < tail + max_period:
        return False
    end = text[-tail:]
    return any(end == text[-tail - p : -p] for p in range(1, max_period + 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--prime", default=None, help="default: each model's own default prime (seed 1)")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--length", type=int, default=3000)
    ap.add_argument("--temperatures", default="0.2,0.5")
    ap.add_argument("--variants", default="plain,guard,penalty,minp")
    args = ap.parse_args()
    seed_keras_cache()
    from charlstm.generation.model import load
    from charlstm.generation.processors import RepeatGuard

    results = []
    for path in args.models:
        model = load(path)
        runs = training_runs(model)
        limits = {c: int(runs[i]) for i, c in enumerate(model.vocab.chars)}
        for t in [float(x) for x in args.temperatures.split(",")]:
            for variant in args.variants.split(","):
                kw: dict = {"max_repeat": "none"}
                if variant == "guard":  # max_repeat="auto", also for models trained before they recorded runs
                    kw["processors"] = [RepeatGuard(np.maximum(runs, 1))]
                if variant == "penalty":
                    kw["processors"] = [RepetitionPenalty(1.1, 64)]
                if variant == "minp":
                    kw["processors"] = [MinP(0.1, t)]
                texts = model.generate(args.prime, args.length, t, seed=1, num_samples=args.samples, **kw)
                stats = [degenerate(x, limits) for x in texts]
                row = {
                    "model": path, "T": t, "variant": variant,
                    "degenerate": sum(s[0] for s in stats) / len(stats),
                    "cycling": sum(cycling(x) for x in texts) / len(texts),
                    "longest_run_median": float(np.median([s[1] for s in stats])),
                    "longest_run_max": max(s[1] for s in stats),
                    "longest_run_chars": "".join(sorted({s[2] for s in stats if s[1] > 2 * limits.get(s[2], 1)})),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "repeats.jsonl", "a") as fh:
        for row in results:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
