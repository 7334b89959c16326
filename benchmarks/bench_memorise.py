"""Memorisation against validation loss (issue 17): train on the first 100 KB of Treasure Island well past its
best validation loss and plot, per epoch, the validation loss beside the share of the epoch's samples (the
lesson's four temperatures, 400 characters each) that lies in spans of >= 20 characters copied from the
training text — the metrics.csv `copied` column every run now has.

    python benchmarks/bench_memorise.py --epochs 30      # writes benchmarks/memorisation.png
    python benchmarks/bench_memorise.py --resume --epochs 60   # the same run, 30 epochs more
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, OUT, cpu_name  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--kb", type=int, default=100)
    ap.add_argument("--resume", action="store_true",
                    help="continue the kept run in benchmarks/out/memorise up to --epochs, then plot")
    args = ap.parse_args()
    import charlstm

    text = OUT / "treasure_100k.txt"
    out = OUT / "memorise"  # kept: `charlstm generate benchmarks/out/memorise/model.keras --check-copies`
    started = time.time()
    if args.resume:
        charlstm.train(out=out, resume=True, epochs=args.epochs, verbose=0)
    else:
        OUT.mkdir(parents=True, exist_ok=True)
        text.write_text((DATA / "treasure_island.txt").read_text(encoding="utf-8")[: args.kb * 1000],
                        encoding="utf-8")
        if out.exists():
            import shutil

            shutil.rmtree(out)
        charlstm.train(str(text), out=out, epochs=args.epochs, layers=args.layers, units=args.units, dropout=0.0,
                       lr=3e-3, lr_schedule="constant", seq_len=128, batch_size=32, verbose=0)
    wall = time.time() - started
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    samples = (out / "samples.txt").read_text(encoding="utf-8")
    epochs = [int(r["epoch"]) for r in rows]
    val = [float(r["val_loss"]) for r in rows]
    copied = [float(r["copied"]) for r in rows]
    best = min(range(len(val)), key=val.__getitem__)
    print(f"# {cpu_name()}; {args.layers}x LSTM({args.units}), {args.kb} KB, {len(rows)} epochs "
          f"({wall:.0f} s in this call; time column: {rows[-1]['time']} s in all)")
    for e, v, c, r in zip(epochs, val, copied, rows, strict=True):
        print(json.dumps({"epoch": e, "loss": round(float(r["loss"]), 4), "val_loss": round(v, 4), "copied": c}))
    print(json.dumps({"best_epoch": epochs[best], "best_val_loss": round(val[best], 4),
                      "copied_at_best": copied[best], "copied_last": copied[-1], "val_loss_last": round(val[-1], 4)}))
    print(samples.strip().split("----- Epoch")[-1][:1200])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, val, "o-", color="tab:blue", label="validation loss (nats/char)")
    ax.plot(epochs, [float(r["loss"]) for r in rows], ".-", color="tab:blue", alpha=0.4, label="training loss")
    ax.axvline(epochs[best], color="grey", ls=":", label=f"best validation (epoch {epochs[best]})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats/char)")
    ax.legend(loc="upper center", fontsize=8)
    share = ax.twinx()
    share.plot(epochs, copied, "s--", color="tab:red", label="samples in copied spans >= 20 chars")
    share.set_ylim(0, 1)
    share.set_ylabel("share of sample characters copied", color="tab:red")
    share.legend(loc="upper right", fontsize=8)
    ax.set_title(f"Memorisation: first {args.kb} KB of Treasure Island, {args.layers}x LSTM({args.units})\n"
                 f"({cpu_name()}, shared machine)", fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "memorisation.png", dpi=100)


if __name__ == "__main__":
    main()
