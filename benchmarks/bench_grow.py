"""Fine-tuning that adds characters (issue 17): how to initialise the new rows. A base model learns a lowercased
text (no capitals); it is then fine-tuned on the same text with its capitals (new characters) for two epochs,
once with charlstm's rule (new input rows = the mean of the old rows; new output columns zero, bias at the
character's log-frequency) and once with Keras' own initialisers for the new entries (what a rebuilt layer
would hold: small random input rows, Glorot output columns, zero bias). Validation loss after each epoch.

    KERAS_BACKEND=tensorflow python benchmarks/bench_grow.py
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, cpu_name  # noqa: E402

SMALL = dict(layers=1, units=128, embedding_dim=32, seq_len=64, batch_size=32, lr=3e-3, dropout=0.0,
             sample_length=0, verbose=0)


def keras_rule(old_weights, new_shapes, old_size, mapping, freq):
    """New entries as freshly built layers hold them (Embedding uniform +-0.05, Dense Glorot uniform, bias 0)."""
    from charlstm.training import grow

    out = grow.grow_weights_charlstm(old_weights, new_shapes, old_size, mapping, freq)
    rng = np.random.default_rng(0)
    added = np.flatnonzero(mapping < 0)
    for w, shape, g in zip(old_weights, new_shapes, out, strict=True):
        if tuple(w.shape) == tuple(shape):
            continue
        if g.ndim == 1:
            g[added] = 0.0
        elif g.shape[0] == len(mapping):  # input rows
            g[added] = rng.uniform(-0.05, 0.05, (len(added), g.shape[1]))
        else:  # output columns
            limit = np.sqrt(6 / (g.shape[0] + g.shape[1]))
            g[:, added] = rng.uniform(-limit, limit, (g.shape[0], len(added)))
    return out


def main() -> None:
    import charlstm
    from charlstm.training import grow

    grow.grow_weights_charlstm = grow.grow_weights
    text = (DATA / "treasure_island.txt").read_text(encoding="utf-8")[:100_000]
    print(f"# {cpu_name()}")
    with tempfile.TemporaryDirectory(prefix="charlstm-bench-grow-") as tmp:
        root = Path(tmp)
        (root / "lower.txt").write_text(text.lower(), encoding="utf-8")
        (root / "cased.txt").write_text(text, encoding="utf-8")
        charlstm.train(str(root / "lower.txt"), out=root / "base", epochs=8, **SMALL)
        results = {}
        for name, rule in (("charlstm (mean rows, log-frequency bias)", grow.grow_weights_charlstm),
                           ("Keras initialisers for the new entries", keras_rule)):
            grow.grow_weights = rule
            out = root / name.split()[0]
            charlstm.train(str(root / "cased.txt"), out=out, init_from=str(root / "base" / "model.keras"),
                           epochs=2, **{k: v for k, v in SMALL.items() if k not in ("layers", "units", "embedding_dim")})
            rows = list(csv.DictReader((out / "metrics.csv").open()))
            results[name] = [round(float(r["val_loss"]), 4) for r in rows]
        grow.grow_weights = grow.grow_weights_charlstm
        base_rows = list(csv.DictReader((root / "base" / "metrics.csv").open()))
    added = sorted(set(text) - set(text.lower()))
    print(json.dumps({"base_val_loss_lowercase_text": round(float(base_rows[-1]["val_loss"]), 4),
                      "added_characters": len(added), "fine_tune_val_loss_per_epoch": results}))


if __name__ == "__main__":
    main()
