"""Training for a time budget: validation loss reached by `charlstm.train(..., time=B)` at several budgets.

    python benchmarks/bench_budget.py --budgets 60,150,300,600                 # the default settings
    python benchmarks/bench_budget.py --budgets 150 --set units=256,dropout=0.3 --tag 2x256
    python benchmarks/bench_budget.py --budgets 150 --set lr_schedule=cosine --tag cosine
    python benchmarks/bench_budget.py --classic 600                              # the lesson, scored per epoch
    python benchmarks/bench_budget.py --corpus python-stdlib --budgets 150
    python benchmarks/bench_budget.py --plot                                     # benchmarks/budget.png

Treasure Island is prepared as in bench_quality.py (Gutenberg header stripped, lowercased, ASCII-only, last
10 % held out) and every model is scored on the same metric: the loss of predicting each held-out character
from the 40 before it (nats/char). Each budgeted run is scored once, after it ends (its model.keras); the
classic recipe is scored after every epoch, with the clock paused, and its best counts. Other corpora report
the run's own validation loss. Rows are appended to benchmarks/out/budget.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time

from common import OUT, ROOT, seed_keras_cache, time_budget_callback, window_loss

TEXT = dict(lowercase=True, ascii_only=True, normalize="none", strip_gutenberg=True)
CSV = OUT / "budget.csv"
FIELDS = ["tag", "corpus", "budget", "layers", "units", "dropout", "schedule", "val_window40", "val_own",
          "train_loss", "seconds", "wall", "epochs", "chars_per_s", "why"]


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _append(row: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    new = not CSV.exists()
    with open(CSV, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in FIELDS})
    print(json.dumps(row), flush=True)


def _val_ids(corpus: str):
    from charlstm.data.batches import split_ids
    from charlstm.data.corpus import load_corpus, preprocess
    from charlstm.data.vocab import Vocabulary

    text = preprocess(load_corpus(corpus).text, strip_gutenberg_text=True, normalize="none", lowercase=True,
                      ascii_only=True)
    vocab = Vocabulary.build(text)
    return split_ids(vocab.encode(text), 0.1)[1]


def _steps_per_s(out) -> float:
    from charlstm.training.saving import read_meta

    return float(read_meta(out / "last.keras")["train_state"]["budget"]["steps_per_second"] or 0.0)


def run_budget(corpus: str, seconds: float, settings: dict, tag: str, max_chars: int | None) -> None:
    import keras

    import charlstm

    out = OUT / f"budget-{tag}-{corpus}-{int(seconds)}"
    shutil.rmtree(out, ignore_errors=True)
    book = corpus == "treasure-island"
    extra = {**(TEXT if book else {}), **({"max_chars": max_chars} if max_chars else {})}
    t0 = time.time()
    charlstm.train(corpus, out=out, time=seconds, verbose=0, sample_length=0, **extra, **settings)
    wall = time.time() - t0
    meta = json.loads((out / "config.json").read_text())
    cfg, budget = meta["config"], meta["budget"]
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    w40 = ""
    if book:
        model = keras.saving.load_model(out / "model.keras", compile=False)
        w40 = round(window_loss(model, _val_ids(corpus)), 4)
    sizing = budget.get("sizing") or {}
    _append({
        "tag": tag, "corpus": corpus + (f"[:{max_chars}]" if max_chars else ""), "budget": seconds,
        "layers": cfg["layers"], "units": cfg["units"], "dropout": cfg["dropout"], "schedule": cfg["lr_schedule"],
        "val_window40": w40, "val_own": round(float(best["val_loss"]), 4), "train_loss": round(float(rows[-1]["loss"]), 4),
        "seconds": rows[-1]["time"], "wall": round(wall, 1), "epochs": rows[-1]["epoch"],
        "chars_per_s": round(_steps_per_s(out) * cfg["batch_size"] * cfg["seq_len"]),
        "why": sizing.get("why", ""),
    })


def run_classic(seconds: float) -> None:
    import keras

    import charlstm

    val_ids = _val_ids("treasure-island")
    clock: dict = {}
    scores: list[tuple[float, float, int]] = []

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            scores.append((clock["train"], window_loss(self.model, val_ids), epoch + 1))
            print(f"[classic] epoch {epoch + 1}: {clock['train']:.0f} s, window-40 {scores[-1][1]:.4f}", flush=True)

    out = OUT / "budget-classic"
    shutil.rmtree(out, ignore_errors=True)
    charlstm.train("treasure-island", out=out, recipe="classic", epochs=60, strip_gutenberg=True, val_frac=0.1,
                   verbose=0, sample_length=0, callbacks=[time_budget_callback(seconds, clock), Score()])
    for t, loss, epoch in scores:
        _append({"tag": "classic-epoch", "corpus": "treasure-island", "budget": round(t, 1), "layers": 1,
                 "units": 128, "dropout": 0.0, "schedule": "constant", "val_window40": round(loss, 4),
                 "seconds": round(t, 1), "epochs": epoch})


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(CSV) as fh:
        rows = [r for r in csv.DictReader(fh) if r["corpus"] == "treasure-island" and r["val_window40"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    classic = [r for r in rows if r["tag"] == "classic-epoch"]
    if classic:
        t = [float(r["seconds"]) for r in classic]
        v = [float(r["val_window40"]) for r in classic]
        best = [min(v[: i + 1]) for i in range(len(v))]
        ax.plot(t, v, "o", ms=3, color="tab:gray", alpha=0.6, label="classic (the lesson), after each epoch")
        ax.step(t, best, where="post", color="tab:gray", label="classic: best so far")
    default = sorted((r for r in rows if r["tag"] == "default"), key=lambda r: float(r["budget"]))
    if default:
        ax.plot([float(r["budget"]) for r in default], [float(r["val_window40"]) for r in default], "o-",
                color="tab:blue", label="default --time B (one run per budget)")
        for r in default:
            ax.annotate(f"{r['layers']}x{r['units']}", (float(r["budget"]), float(r["val_window40"])),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("training budget (s), AMD EPYC (2 cores)")
    ax.set_ylabel("validation loss, 40-char context (nats/char)")
    ax.set_title("Treasure Island: --time B vs the classic recipe")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "benchmarks" / "budget.png", dpi=110)
    print(f"wrote {ROOT / 'benchmarks' / 'budget.png'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="treasure-island")
    ap.add_argument("--budgets", default="", help="comma-separated seconds")
    ap.add_argument("--set", default="", help="extra settings, e.g. units=256,dropout=0.3,lr_schedule=cosine")
    ap.add_argument("--tag", default="default")
    ap.add_argument("--max-chars", type=int)
    ap.add_argument("--classic", type=float, help="also run the classic recipe for this many training seconds")
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args()
    if args.plot:
        plot()
        return
    seed_keras_cache()
    settings = {k: _value(v) for k, v in (kv.split("=") for kv in args.set.split(",") if kv)}
    if args.classic:
        run_classic(args.classic)
    for b in [float(b) for b in args.budgets.split(",") if b]:
        run_budget(args.corpus, b, settings, args.tag, args.max_chars)


if __name__ == "__main__":
    main()
