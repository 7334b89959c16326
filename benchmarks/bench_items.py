"""Items mode on a list of names (issue 17): `charlstm train names.txt --items --time 2m` (and 5m), then the
held-out loss per character with the end symbol counted (makemore's measure: its default 200K-parameter
transformer reports about 1.92 nats/char), the share of 1,000 generated names that are new, and samples.

    python benchmarks/bench_items.py --time 2m 5m

The held-out loss is computed exactly here with the NumPy runtime: every validation item read from a zero
state after the boundary symbol, predicting each of its characters and then the boundary (len + 1 targets);
the training run's own val_loss (rows starting at items, cut at seq_len) is printed beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, cpu_name  # noqa: E402


def held_out_loss(model) -> tuple[float, int]:
    """Mean nats per target over the validation items (the split recomputed with the run's seed and fraction)."""
    from charlstm.data.items import split_items

    cfg = model.meta["config"]
    text = (DATA / "names.txt").read_text(encoding="utf-8")
    items = split_items(text, cfg["item_sep"], val_frac=cfg["val_frac"], seed=cfg["seed"], vocab=model.vocab)
    b = items.boundary
    val = items.val
    bounds = np.flatnonzero(val == b)
    total, count = 0.0, 0
    for a, e in zip(bounds[:-1], bounds[1:], strict=True):
        ids = val[a : e + 1].astype(np.int64)  # B item B
        logits = model.logits(ids[:-1])
        m = logits.max(-1, keepdims=True)
        lse = (np.log(np.exp(logits - m).sum(-1)) + m[:, 0]).astype(np.float64)
        total += float((lse - logits[np.arange(len(ids) - 1), ids[1:]]).sum())
        count += len(ids) - 1
    return total / count, count


def one(budget: str, out: Path) -> dict:
    import charlstm
    from charlstm.generation.model import load

    started = time.time()
    charlstm.train(str(DATA / "names.txt"), out=out, items=True, time=budget, verbose=0)
    wall = time.time() - started
    model = load(out / "model.keras")
    loss, targets = held_out_loss(model)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    items = model.items(1000, 1.0, seed=0)
    new = sum(i.new for i in items)
    sizing = json.loads((out / "config.json").read_text()).get("budget", {}).get("sizing")
    return {
        "time": budget, "wall_s": round(wall, 1), "network": sizing,
        "held_out_nats_per_char": round(loss, 4), "held_out_bits_per_char": round(loss / math.log(2), 4),
        "held_out_targets": targets, "run_val_loss_last_row": float(rows[-1]["val_loss"]),
        "generated": len(items), "new": new, "new_share": round(new / len(items), 4),
        "in_training_set": sum(i.status == "in training set" for i in items),
        "in_validation_set": sum(i.status == "in validation set" for i in items),
        "samples": [f"{i.text} [{i.status}]" for i in items[:12]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time", nargs="+", default=["2m"])
    args = ap.parse_args()
    print(f"# {cpu_name()}")
    for budget in args.time:
        with tempfile.TemporaryDirectory(prefix="charlstm-bench-items-") as tmp:
            print(json.dumps(one(budget, Path(tmp) / "run"), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
