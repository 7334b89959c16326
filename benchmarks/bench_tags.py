"""One model, many styles (issue 25): a tagged model on tiny Shakespeare (`play`) and Treasure Island (`novel`)
against an untagged model and against one model per tag, all trained for the same total time; then the
tagged model as a classifier of held-out text, and the cost of the tag at generation.

    python benchmarks/bench_tags.py --chars 200000 --time 2m

- per-tag validation loss: each tag's held-out tail (the last 10 % of its text, as the tagged run holds it
  out), read by the NumPy runtime (`evaluate`, stateful, 64 streams) under the tag, by the untagged model,
  and by the separate model of that tag; the separate models get half the time each (same total time);
- classifier: 200-character pieces of each tag's held-out text, `model.classify` against a character 1-3 gram
  naive Bayes trained on the training parts;
- generation: chars/s of 2,000 characters at batch 1 and 16 rows, tagged (`with_tag`) vs untagged model.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, cpu_name  # noqa: E402


def texts(chars: int) -> dict[str, str]:
    play = (DATA / "tiny_shakespeare.txt").read_text(encoding="utf-8")[:chars]
    book = (DATA / "treasure_island.txt").read_text(encoding="utf-8")
    start = book.find("PART ONE")  # past the Gutenberg header and the contents
    return {"play": play, "novel": book[start : start + chars]}


def split(text: str) -> tuple[str, str]:
    cut = int(round(len(text) * 0.9))
    return text[:cut], text[cut:]


def naive_bayes(train: dict[str, str], n: int = 3):
    counts = {t: collections.Counter(x[i : i + k] for k in range(1, n + 1) for i in range(len(x) - k + 1))
              for t, x in train.items()}
    totals = {t: sum(c.values()) for t, c in counts.items()}
    vocab = len(set().union(*counts.values()))

    def classify(s: str) -> str:
        grams = [s[i : i + k] for k in range(1, n + 1) for i in range(len(s) - k + 1)]
        return max(counts, key=lambda t: sum(math.log((counts[t][g] + 1) / (totals[t] + vocab)) for g in grams))

    return classify


def chars_per_second(models: dict, rows: int, length: int = 2000, rounds: int = 5) -> dict[str, float]:
    """Best chars/s of each model over `rounds` rounds, the models taking turns within each round (so a
    burst of load from the other sessions hits both alike)."""
    best = dict.fromkeys(models, 0.0)
    for model in models.values():
        model.generate("\n", length=20, seed=0, num_samples=rows)  # warm
    for _ in range(rounds):
        for name, model in models.items():
            started = time.perf_counter()
            model.generate("\n", length=length, seed=1, num_samples=rows, no_repeat_ngram=0, max_repeat="none")
            best[name] = max(best[name], rows * length / (time.perf_counter() - started))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chars", type=int, default=200_000, help="characters of each text")
    p.add_argument("--time", default="2m", help="time budget of the tagged and of the untagged model")
    p.add_argument("--epochs", type=int, help="equal steps instead of equal time: N epochs each (a separate "
                   "model's epoch is half as long, so the total steps match); a shared machine's load moves "
                   "the steps a time budget buys")
    p.add_argument("--units", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    args = p.parse_args()

    import charlstm
    from charlstm.training.budget import format_duration, parse_duration

    seconds = parse_duration(args.time)
    work = Path(tempfile.mkdtemp(prefix="bench-tags-"))
    data = texts(args.chars)
    for tag, text in data.items():
        (work / "styles" / tag).mkdir(parents=True)
        (work / "styles" / tag / f"{tag}.txt").write_text(text, encoding="utf-8")
    common = dict(units=args.units, layers=args.layers, verbose=0, sample_temperatures=[], seed=1)
    runs = {}
    started = time.perf_counter()
    length = {"epochs": args.epochs} if args.epochs else {"time": seconds}
    part = {"epochs": args.epochs} if args.epochs else {"time": seconds / len(data)}
    runs["tagged"] = charlstm.train(work / "styles", tags="folder", out=work / "tagged", **length, **common)
    runs["untagged"] = charlstm.train(work / "styles", out=work / "untagged", **length, **common)
    for tag in data:
        runs[tag] = charlstm.train(work / "styles" / tag, val_frac=0.1, out=work / f"only-{tag}", **part, **common)
    wall = time.perf_counter() - started

    def steps(model) -> float:
        """Data epochs trained (a budgeted run's history counts them in fractions)."""
        history = model.meta.get("train_state", {}).get("history") or [{}]
        return float(history[-1].get("epoch", 0))

    tagged = runs["tagged"]
    rows = []
    for tag, text in data.items():
        # each tag's own file, held out the way the tagged run does it (the last tenth)
        val = split(("\n" if tag != tagged.tags[0] else "") + text)[1]
        rows.append({
            "tag": tag,
            "tagged": tagged.with_tag(tag).evaluate(val)["nats_per_char"],
            "untagged": runs["untagged"].evaluate(val)["nats_per_char"],
            "separate": runs[tag].evaluate(val)["nats_per_char"],
        })
    judge = naive_bayes({t: split(x)[0] for t, x in data.items()})
    accuracy = {}
    for tag, text in data.items():
        val = split(text)[1]
        pieces = [val[i : i + 200] for i in range(0, len(val) - 200, 200)]
        accuracy[tag] = {
            "pieces": len(pieces),
            "classify": sum(tagged.classify(s).best == tag for s in pieces) / len(pieces),
            "naive_bayes": sum(judge(s) == tag for s in pieces) / len(pieces),
        }
    speed = {n: chars_per_second({"tagged": tagged.with_tag("novel"), "untagged": runs["untagged"]}, n)
             for n in (1, 16)}
    print(f"CPU: {cpu_name()} (machine shared with other sessions); {args.chars:,} chars per text, "
          f"{args.layers} x LSTM({args.units}); " + (
              f"{args.epochs} epochs each (equal steps in all)" if args.epochs else
              f"{format_duration(seconds)} for the tagged and for the untagged model, "
              f"{format_duration(seconds / len(data))} for each separate model") + f"; {wall:.0f} s of training")
    for name, model in runs.items():
        print(f"  {name}: {steps(model):.2f} data epochs")
    print("validation loss per tag (nats/char, NumPy runtime, stateful):")
    print("  tag     tagged  untagged  separate")
    for r in rows:
        print(f"  {r['tag']:<7} {r['tagged']:.4f}  {r['untagged']:.4f}    {r['separate']:.4f}")
    print("held-out text, 200-character pieces, classified as their tag:")
    for tag, a in accuracy.items():
        print(f"  {tag:<7} classify {a['classify']:.1%}  naive Bayes {a['naive_bayes']:.1%}  ({a['pieces']} pieces)")
    print("generation, chars/s (best of 5 alternating rounds, 2,000 chars, no repeat guard):")
    for n, s in speed.items():
        print(f"  {n:>2} rows: tagged {s['tagged']:,.0f}  untagged {s['untagged']:,.0f}  ratio "
              f"{s['tagged'] / s['untagged']:.3f}")
    print(json.dumps({"rows": rows, "accuracy": accuracy, "speed": speed,
                      "steps": {k: steps(m) for k, m in runs.items()}}))


if __name__ == "__main__":
    main()
