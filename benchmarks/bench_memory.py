"""Memory stays flat on a big corpus: prepare a text of --mb MB once, then train on it memory-mapped.

The text is the shared corpora repeated to the size asked for, written to a temporary folder at run time
(never committed). Each phase runs in a process of its own, so the peak RSS it reports is that phase's:

1. `charlstm.prepare(text, DIR)` (what `charlstm prepare` runs): wall time, MB/s, peak RSS;
2. `charlstm.train(DIR)` for --batches batches of the default recipe: peak RSS (which counts the pages of
   ids.bin the process has touched: page cache that the kernel can drop, not memory the process holds);
3. `charlstm.train(TEXT)` twice with an empty cache: the first run prepares the text into the cache and
   trains, the second finds it there and only checks the text's sha256.

With --zh-mb, the Chinese poems repeated to that size are prepared too (3-byte UTF-8 characters, a uint16
corpus), to show the speed on text that is not ASCII.

    python benchmarks/bench_memory.py --mb 1000 [--batches 200] [--zh-mb 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, seed_keras_cache

VAL_FRAC = 0.001  # validation after the last batch reads every validation sequence: keep it to ~1 MB


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_parts_mb() -> str:
    """This process's resident memory now: anonymous (its own) vs file-backed (mapped files, e.g. ids.bin)."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return f"at the end {fields.get('RssAnon', 0):,.0f} MB anonymous + {fields.get('RssFile', 0):,.0f} MB file-backed"


def make_text(path: Path, mb: int, names: list[str]) -> int:
    block = "\n".join((DATA / n).read_text(encoding="utf-8") for n in names).encode("utf-8")
    with open(path, "wb") as fh:
        written = 0
        while written < mb * 1_000_000:
            fh.write(block)
            written += len(block)
    return path.stat().st_size


def stop_after(batches: int):
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 >= batches:
                self.model.stop_training = True

    return StopAfter()


def phase(args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process."""
    import charlstm
    from charlstm.data.sources import TextOptions

    started = time.time()
    if args.phase == "prepare":
        corpus = charlstm.prepare(args.text, args.dir, TextOptions(val_frac=VAL_FRAC), verbose=False)
        seconds = time.time() - started
        size = Path(args.text).stat().st_size
        return {"seconds": seconds, "mb_per_s": size / 1e6 / seconds, "chars": len(corpus.ids),
                "vocab": corpus.vocab.size, "dtype": corpus.ids.dtype.name}
    import keras  # noqa: F401 (what importing Keras and TensorFlow costs, before any data)

    before = rss_mb()
    source = args.dir if args.phase == "train-dir" else args.text
    charlstm.train(source, out=args.run, epochs=1, verbose=0, sample_length=0, val_frac=VAL_FRAC,
                   callbacks=[stop_after(args.batches)])
    return {"seconds": time.time() - started, "rss_before_mb": before}


def run_phase(name: str, **kw: str) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, *[f"--{k}={v}" for k, v in kw.items()]]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    if out.returncode != 0:
        sys.exit(f"phase {name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["stdout"] = "\n".join(out.stdout.strip().splitlines()[:-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--zh-mb", type=int, default=0)
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--text", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        seed_keras_cache()
        result = phase(args)
        result["peak_rss_mb"] = rss_mb()
        result["rss_parts"] = rss_parts_mb()
        print(json.dumps(result))
        return

    tmp = Path(tempfile.mkdtemp(prefix="charlstm-bench-memory-"))
    os.environ["CHARLSTM_CACHE"] = str(tmp / "cache")
    try:
        text = tmp / "big.txt"
        size = make_text(text, args.mb, ["tiny_shakespeare.txt", "treasure_island.txt"])
        print(f"text: {size / 1e6:,.1f} MB (tiny Shakespeare + Treasure Island, repeated); "
              f"{os.cpu_count()} CPUs", flush=True)
        rows = []
        p = run_phase("prepare", text=str(text), dir=str(tmp / "prepared"))
        rows.append(("charlstm.prepare(text, DIR)", p["seconds"], p["peak_rss_mb"],
                     f"{p['mb_per_s']:.1f} MB/s; {p['chars']:,} chars, vocabulary {p['vocab']}, {p['dtype']}; "
                     f"{p['rss_parts']}"))
        t = run_phase("train-dir", dir=str(tmp / "prepared"), run=str(tmp / "run-dir"), batches=str(args.batches))
        rows.append((f"charlstm.train(DIR), {args.batches} batches", t["seconds"], t["peak_rss_mb"],
                     f"{t['rss_before_mb']:.0f} MB once Keras/TensorFlow are imported; {t['rss_parts']}"))
        for n, what in ((1, "prepares into the cache"), (2, "finds it in the cache")):
            r = run_phase("train-text", text=str(text), run=str(tmp / f"run-text{n}"), batches=str(args.batches))
            rows.append((f"charlstm.train(TEXT), run {n}: {what}", r["seconds"], r["peak_rss_mb"], r["rss_parts"]))
        if args.zh_mb:
            zh = tmp / "zh.txt"
            zsize = make_text(zh, args.zh_mb, ["chinese_quantangshi.txt"])
            z = run_phase("prepare", text=str(zh), dir=str(tmp / "zh-prepared"))
            rows.append((f"charlstm.prepare(Chinese {zsize / 1e6:,.0f} MB, DIR)", z["seconds"], z["peak_rss_mb"],
                         f"{z['mb_per_s']:.1f} MB/s; {z['chars']:,} chars, vocabulary {z['vocab']}, {z['dtype']}"))
        print("\n| phase | wall s | peak RSS MB | notes |\n|---|---:|---:|---|")
        for name, seconds, peak, note in rows:
            print(f"| {name} | {seconds:.1f} | {peak:,.0f} | {note} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
