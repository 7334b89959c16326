"""bf16 against float32 on the torch backend: validation loss after the same number of steps (issue 15).

`--mixed-precision bf16` may become charlstm's default on CPUs that compute bfloat16 (AVX-512-BF16, AMX) only
if it learns as well as float32: validation loss after the same steps within 0.01 nats/char, on two corpora.
This trains the default recipe's network (or `--units`) on the first `--chars` characters of each corpus, both
ways, from the same seed and data order, in one torch process, and prints the gap with both run's speed.

    python benchmarks/bench_bf16.py [--chars 200000] [--epochs 3] [--units 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["KERAS_BACKEND"] = "torch"

from common import DATA, cpu_name  # noqa: E402

CORPORA = ("treasure_island.txt", "tiny_shakespeare.txt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=200_000, help="characters of each corpus (default 200000)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--units", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    import torch

    from charlstm.training import torch_engine

    if args.threads:
        torch.set_num_threads(args.threads)
    if not torch_engine.bf16_supported():
        raise SystemExit("this CPU has neither AVX-512-BF16 nor AMX: bf16 is not used on it")
    import charlstm
    from charlstm.data.batches import sequence_layout

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; PyTorch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s); {args.epochs} epochs of 2 x LSTM({args.units}) on the first {args.chars:,} characters")
    print("| corpus | steps | fp32 val nats/char | bf16 val nats/char | bf16 - fp32 | fp32 s | bf16 s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in CORPORA:
            src = Path(tmp) / name
            src.write_text((DATA / name).read_text(encoding="utf-8")[: args.chars], encoding="utf-8")
            result = {}
            for precision in (None, "bf16"):
                out = Path(tmp) / f"{name}-{precision or 'fp32'}"
                t0 = time.perf_counter()
                charlstm.train(src, out=out, backend="torch", epochs=args.epochs, units=args.units,
                               mixed_precision=precision, sample_length=0, verbose=0)
                seconds = time.perf_counter() - t0
                with open(out / "metrics.csv") as fh:
                    rows = list(csv.DictReader(fh))
                result[precision] = (float(rows[-1]["val_loss"]), seconds)
            meta = json.loads((out / "config.json").read_text())
            count, _ = sequence_layout(meta["corpus"]["train_chars"], meta["config"]["seq_len"])
            config_steps = args.epochs * math.ceil(count / meta["config"]["batch_size"])
            (fp32, fp32_s), (bf16, bf16_s) = result[None], result["bf16"]
            worst = max(worst, bf16 - fp32)
            print(f"| {name} | {config_steps} | {fp32:.4f} | {bf16:.4f} | {bf16 - fp32:+.4f} | {fp32_s:.0f} | "
                  f"{bf16_s:.0f} |", flush=True)
    verdict = "within" if worst <= 0.01 else "NOT within"
    print(f"largest bf16 - fp32 gap {worst:+.4f} nats/char: {verdict} 0.01")


if __name__ == "__main__":
    main()
