"""The best model a time budget buys: arms of `charlstm.train(CORPUS, time=BUDGET)` side by side (issue 23).

    python benchmarks/bench_carry.py --time 5m --arms before,carry --seeds 1,2,3
    python benchmarks/bench_carry.py --corpus treasure-island --time 1m,3m,5m --arms carry,carry-bf16 --seeds 1,2,3
    python benchmarks/bench_carry.py --table            # the rows recorded so far, as a Markdown table

Each run is its own process, one after the other (never two at once: they would share the cores). An arm is a
set of training settings on top of `time=`:

- `before`: the default recipe as it was before issue 23 (every 64-character row from a zero state, float32);
- `carry`: the training text as `batch` contiguous streams, the state carried from batch to batch (float32);
- `*-bf16`: the same with `mixed_precision="bf16"` (CPUs with AVX-512-BF16 or AMX);
- `default`: the default recipe as it stands (carried state, `carry_reset` 0.05, `mixed_precision="auto"`);
- `ARM+key=value+...`: an arm with settings changed (e.g. `carry+carry_reset=0.05`).

`BENCH_LABEL=main PYTHONPATH=../main-before/src python benchmarks/bench_carry.py --arms before` runs another
checkout's code (the rows say which); `BENCH_BACKEND` picks the Keras backend (default torch, the default
install's). Every run is scored two ways on the held-out last 10 %: in 64-character blocks from a fresh state (the run's own
`val_loss`, comparable with nanoGPT's figure) and read as one stream, as the model generates
(`CharModel.evaluate(context="stateful", streams=1)`, the NumPy runtime). Rows go to
`benchmarks/out/carry.jsonl` (one JSON object a run), so a long sweep can be run in pieces and tabulated after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import DATA, OUT, seed_keras_cache

ROWS = OUT / "carry.jsonl"
BACKEND = os.environ.get("BENCH_BACKEND", "torch")  # the default install's engine (the carry runs on it)
FILES = {"tiny-shakespeare": "tiny_shakespeare.txt", "treasure-island": "treasure_island.txt",
         "tangshi": "chinese_tangshi300.txt", "names": "names.txt"}
ARMS = {  # every setting pinned, so an arm means the same whatever the recipe's defaults are
    "before": {"carry_state": False, "carry_reset": 0.0, "mixed_precision": "none"},
    "carry": {"carry_state": True, "carry_reset": 0.0, "mixed_precision": "none"},
    "before-bf16": {"carry_state": False, "carry_reset": 0.0, "mixed_precision": "bf16"},
    "carry-bf16": {"carry_state": True, "carry_reset": 0.0, "mixed_precision": "bf16"},
    "default": {},  # the default recipe as it stands: carry, carry_reset 0.05, mixed_precision auto
}


def arm_settings(arm: str) -> dict:
    """An arm's settings: a name above, or `name+key=value+key=value` (e.g. carry+carry_reset=0.01)."""
    name, *extra = arm.split("+")
    settings = dict(ARMS[name])
    for item in extra:
        key, value = item.split("=", 1)
        try:
            settings[key] = json.loads(value)  # numbers, true/false
        except ValueError:
            settings[key] = value  # names: none, bf16, ...
    return settings


def one_run(corpus: str, budget: str, arm: str, seed: int) -> dict:
    """Train one arm in this process and score it; returns the row."""
    import shutil

    import charlstm
    from charlstm.training.recipes import SETTINGS

    seed_keras_cache()
    named = corpus in ("tiny-shakespeare", "treasure-island")  # Gutenberg's header stripped, as named
    source = corpus if named else str(DATA / FILES[corpus])
    out = run_dir(corpus, budget, arm, seed, os.environ.get("BENCH_LABEL", "this tree"))
    shutil.rmtree(out, ignore_errors=True)
    settings = arm_settings(arm)
    if "carry_state" not in SETTINGS:  # code from before issue 23 (BENCH_LABEL): float32 was its only CPU default
        settings = {k: v for k, v in settings.items() if k in SETTINGS and v != "none"}
    t0 = time.time()
    charlstm.train(source, out=out, verbose=0, sample_length=0, time=budget, seed=seed, backend=BACKEND, **settings)
    wall = time.time() - t0
    config = json.loads((out / "config.json").read_text())
    rows = [json.loads(json.dumps(r)) for r in _csv(out / "metrics.csv")]
    last = rows[-1]
    t1 = time.time()
    blocks, stream = score(out / "model.keras", corpus)
    sizing = config.get("budget", {}).get("sizing") or {}
    return {
        "corpus": corpus, "budget": budget, "arm": arm, "seed": seed,
        "network": f"{config['config']['layers']}x{config['config']['units']}",
        "dropout": config["config"]["dropout"], "batch": config["config"]["batch_size"],
        "seq_len": config["config"]["seq_len"],
        "val_blocks": blocks, "val_stream": stream,  # the whole held-out 10 %
        "run_val_loss": float(last["val_loss"]),  # the run's own: its bounded validation text (the first part)
        "run_val_stream": float(last["val_loss_stream"]) if last.get("val_loss_stream") else None,
        "epochs": float(last["epoch"]), "wall": round(wall, 1), "score_s": round(time.time() - t1, 1),
        "chars_per_s": (sizing.get("chars_per_second") or {}).get(f"{config['config']['layers']}x"
                                                                  f"{config['config']['units']}"),
        "carry": (config.get("trained_with") or {}).get("carry_state"),
        "backend": config["trained_with"]["backend"], "code": os.environ.get("BENCH_LABEL", "this tree"),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
    }


def run_dir(corpus: str, budget: str, arm: str, seed: int, code: str) -> Path:
    label = "" if code == "this tree" else f"-{code}"
    return OUT / f"carry-{corpus}-{budget}-{arm}{label}-{seed}"


def held_out(corpus: str) -> str:
    """The held-out last 10 % of a corpus, preprocessed as `charlstm train CORPUS` reads it."""
    from charlstm.data.corpus import preprocess

    named = corpus in ("tiny-shakespeare", "treasure-island")
    text = preprocess((DATA / FILES[corpus]).read_text(encoding="utf-8"),
                      strip_gutenberg_text=corpus == "treasure-island" and named, normalize="NFC")
    return text[int(round(len(text) * 0.9)):]


def score(model_path: Path, corpus: str) -> tuple[float, float]:
    """(64-character blocks, each from a zero state; one stream) nats/char over the whole held-out 10 %, with
    the NumPy runtime. A budgeted run validates on the first part only (its bound), so its own figures are
    not these."""
    import numpy as np

    import charlstm
    from charlstm.generation.evaluation import nll

    model = charlstm.load(model_path)
    text = held_out(corpus)
    ids = model.network.encode(text, unknown="skip").astype(np.int64)
    n = (len(ids) - 1) // 64 * 64
    x, y = ids[:n].reshape(-1, 64), ids[1 : n + 1].reshape(-1, 64)  # (N, 64)
    total = sum(float(nll(model.network.forward(x[i : i + 256])[0], y[i : i + 256]).sum())
                for i in range(0, len(x), 256))
    stream = model.evaluate(text, context="stateful", streams=1, unknown="skip")["nats_per_char"]
    return total / y.size, stream


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path) as fh:
        return list(csv.DictReader(fh))


def table(rows: list[dict]) -> str:
    """Mean (and each seed) per corpus, budget and arm."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        arm = r["arm"] if r.get("code", "this tree") == "this tree" else f"{r['arm']} ({r['code']})"
        groups.setdefault((r["corpus"], r["budget"], arm), []).append(r)
    out = ["| corpus | budget | arm | network | seeds | 64-char blocks (nats/char) | one stream | passes |",
           "|---|---|---|---|---:|---:|---:|---:|"]
    for (corpus, budget, arm), rs in sorted(groups.items()):
        blocks = [r["val_blocks"] for r in rs]
        stream = [r["val_stream"] for r in rs]
        nets = ",".join(sorted({r["network"] for r in rs}))
        out.append(f"| {corpus} | {budget} | {arm} | {nets} | {len(rs)} | {statistics.mean(blocks):.4f} "
                   f"({', '.join(f'{b:.4f}' for b in blocks)}) | {statistics.mean(stream):.4f} "
                   f"({', '.join(f'{s:.4f}' for s in stream)}) | {statistics.mean(r['epochs'] for r in rs):.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="tiny-shakespeare", help=", ".join(FILES))
    ap.add_argument("--time", default="5m", help="comma list of budgets, e.g. 1m,3m,5m")
    ap.add_argument("--arms", default="before,carry", help="comma list: " + ", ".join(ARMS) + " (+key=value)")
    ap.add_argument("--seeds", default="1", help="comma list")
    ap.add_argument("--table", action="store_true", help="print the recorded rows as a table and stop")
    ap.add_argument("--rescore", action="store_true", help="score the recorded rows' models again (in place)")
    ap.add_argument("--one", nargs=4, metavar=("CORPUS", "BUDGET", "ARM", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.table:
        print(table([json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]))
        return
    if args.rescore:
        rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]
        for r in rows:
            path = run_dir(r["corpus"], r["budget"], r["arm"], r["seed"], r.get("code", "this tree")) / "model.keras"
            r["val_blocks"], r["val_stream"] = score(path, r["corpus"])
        ROWS.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(table(rows))
        return
    if args.one:
        corpus, budget, arm, seed = args.one
        print("ROW " + json.dumps(one_run(corpus, budget, arm, int(seed))), flush=True)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for budget in args.time.split(","):
        for seed in args.seeds.split(","):
            for arm in args.arms.split(","):  # arms alternate within a seed: drifts in speed hit them alike
                proc = subprocess.run([sys.executable, __file__, "--one", args.corpus, budget, arm, seed],
                                      capture_output=True, text=True)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
                if proc.returncode or not line:
                    print(f"{args.corpus} {budget} {arm} {seed}: failed\n{proc.stderr[-3000:]}", flush=True)
                    continue
                row = json.loads(line[0][4:])
                with open(ROWS, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
