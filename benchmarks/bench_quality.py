"""Time to quality on Treasure Island: the lesson's `classic` recipe vs charlstm's default, one script, one run.

Both see the same text (Gutenberg header/license stripped, lowercased, ASCII-only: 57-ish characters) and the
same split (last 10% held out). After every epoch the clock pauses and each model is scored on the same metric:
the validation loss of predicting each character from the 40 characters before it (nats/char). The default
model is also scored on its own long-context validation loss (one stateful pass over the held-out text).

    python benchmarks/bench_quality.py [--budget 600] [--variants classic,default]

Writes benchmarks/out/quality.csv and benchmarks/quality.png, prints a summary.
"""

from __future__ import annotations

import argparse
import csv
import os
import time

import numpy as np
from common import OUT, ROOT, cpu_name, seed_keras_cache, time_budget_callback, window_loss

LABELS = {
    "classic": "classic (the lesson)",
    "default": "default (2 x LSTM(128), 30 epochs)",
    "default-256": "default --units 256 --dropout 0.3 --epochs 40",
}
VARIANTS = {
    "classic": dict(recipe="classic", epochs=60, strip_gutenberg=True, val_frac=0.1),
    "default": dict(recipe="default"),
    "default-256": dict(recipe="default", units=256, dropout=0.3, epochs=40),
}
TEXT = dict(lowercase=True, ascii_only=True, normalize="none", strip_gutenberg=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per variant")
    ap.add_argument("--variants", default="classic,default")
    ap.add_argument("--plot-only", action="store_true", help="redraw quality.png from out/quality.csv")
    args = ap.parse_args()
    if args.plot_only:
        with open(OUT / "quality.csv") as fh:
            rows = [{**r, "seconds": float(r["seconds"]), "val_window40": float(r["val_window40"])}
                    if r["epoch"] else r for r in csv.DictReader(fh)]
        plot(rows)
        return
    seed_keras_cache()

    import keras

    import charlstm
    from charlstm.data.batches import split_ids
    from charlstm.data.corpus import load_corpus, preprocess
    from charlstm.data.vocab import Vocabulary
    from charlstm.generation.model import load

    raw = load_corpus("treasure-island").text
    text = preprocess(raw, strip_gutenberg_text=True, normalize="none", lowercase=True, ascii_only=True)
    vocab = Vocabulary.build(text)
    _, val_ids = split_ids(vocab.encode(text), 0.1)
    print(f"text: {len(text):,} chars, {vocab.size} distinct; validation {len(val_ids):,} chars", flush=True)

    rows: list[dict] = []
    for name in args.variants.split(","):
        clock: dict = {}

        class Score(keras.callbacks.Callback):
            def __init__(self, name: str, clock: dict) -> None:
                super().__init__()
                self.name, self.clock = name, clock

            def on_epoch_end(self, epoch, logs=None):
                name, clock = self.name, self.clock
                t0 = time.perf_counter()
                w40 = window_loss(self.model, val_ids)
                rows.append({"variant": name, "epoch": epoch + 1, "seconds": round(clock["train"], 1),
                             "val_window40": w40, "val_own": (logs or {}).get("val_loss")})
                print(f"[{name}] epoch {epoch + 1}: {clock['train']:.0f} s, window-40 val {w40:.4f} nats/char "
                      f"(own val {rows[-1]['val_own']}) [scored in {time.perf_counter() - t0:.1f} s]", flush=True)

        settings = {**TEXT, **VARIANTS[name]}
        out = OUT / f"quality-{name}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        # order: the budget callback closes the epoch's clock before Score runs
        charlstm.train("treasure-island", out=out, verbose=0, sample_length=0,
                       callbacks=[time_budget_callback(args.budget, clock), Score(name, clock)], **settings)
        if name != "classic":
            from charlstm.generation.evaluation import stateful_loss

            best = load(out / "model.keras")
            stateful = stateful_loss(best, val_ids.astype(np.int64), streams=1)
            rows.append({"variant": name + " (long context, best model)", "epoch": "", "seconds": "",
                         "val_window40": "", "val_own": stateful[0] / stateful[1]})

    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "quality.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summarize(rows)
    plot(rows)


def summarize(rows: list[dict]) -> None:
    per = {}
    for r in rows:
        if r["epoch"] != "":
            per.setdefault(r["variant"], []).append(r)
    classic = per.get("classic")
    for name, rs in per.items():
        best = min(rs, key=lambda r: r["val_window40"])
        print(f"{name}: best window-40 val {best['val_window40']:.4f} at {best['seconds']} s (epoch {best['epoch']}); "
              f"last {rs[-1]['val_window40']:.4f} at {rs[-1]['seconds']} s")
    if classic:
        target = min(r["val_window40"] for r in classic)
        t_classic = min(r["seconds"] for r in classic if r["val_window40"] == target)
        for name, rs in per.items():
            if name == "classic":
                continue
            hit = [r for r in rs if r["val_window40"] <= target]
            best = min(r["val_window40"] for r in rs)
            when = f"{hit[0]['seconds']} s = {hit[0]['seconds'] / t_classic:.2f} of classic's {t_classic} s" if hit else "never"
            print(f"{name} reaches classic's best ({target:.4f}) at {when}; ends {target - best:.3f} nats/char lower")
    for r in rows:
        if r["epoch"] == "":
            print(f"{r['variant']}: stateful validation loss {r['val_own']:.4f} nats/char")


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["variant"] for r in rows if r["epoch"] != ""):
        rs = [r for r in rows if r["variant"] == name]
        ax.plot([r["seconds"] for r in rs], [r["val_window40"] for r in rs], "o-", ms=3, label=LABELS.get(name, name))
    ax.set_xlabel(f"training wall time (s), {cpu_name()} ({os.cpu_count()} cores)")
    ax.set_ylabel("validation loss, 40-char context (nats/char)")
    ax.set_title("Treasure Island: classic (the lesson) vs default recipe")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "benchmarks" / "quality.png", dpi=110)


if __name__ == "__main__":
    main()
