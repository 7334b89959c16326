"""Copy index (issue 17): build time, size and peak memory for texts of a given size, and the time to check one
1,000-character sample against it (target: under 20 ms on 100 MB).

    python benchmarks/bench_copies.py --mb 1 100          # each size in a fresh process (its own peak RSS)
    python benchmarks/bench_copies.py --mb 1000           # a 1 GB text: eight chunks

The text is word salad drawn from the shared corpora (treasure_island.txt, tiny_shakespeare.txt) by word
frequency, a line every 12 words: prose-like statistics at any size, without repeating one book over and
over (which would make every sample a long copy). Samples: 25 of fresh word salad (new text) and 25 with a
200-character passage of the text spliced in; query time is the median over the 50.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, cpu_name  # noqa: E402


def word_salad(n_chars: int, seed: int) -> str:
    words = []
    for name in ("treasure_island.txt", "tiny_shakespeare.txt"):
        words += (DATA / name).read_text(encoding="utf-8").split()
    vocab, counts = np.unique(np.array(words, dtype=object), return_counts=True)
    rng = np.random.default_rng(seed)
    mean = sum(len(w) + 1 for w in words) / len(words)
    picks = rng.choice(len(vocab), size=int(n_chars / mean) + 100, p=counts / counts.sum())
    chosen = vocab[picks]
    lines = [" ".join(chosen[i : i + 12]) for i in range(0, len(chosen), 12)]
    return "\n".join(lines)[:n_chars]


def one(mb: float, workdir: Path) -> dict:
    from charlstm.data.copyindex import build_index, open_index
    from charlstm.data.prepare import prepare
    from charlstm.data.prepared import open_prepared
    from charlstm.generation.copies import check_copies

    n = int(mb * 1_000_000)
    src = workdir / f"salad-{mb:g}mb.txt"
    with open(src, "w", encoding="utf-8") as fh:  # in 10 MB pieces: memory stays small at 1 GB
        for k in range(0, n, 10_000_000):
            fh.write(word_salad(min(10_000_000, n - k), seed=k))
    prep = workdir / f"salad-{mb:g}mb"
    prepare([src], prep, val_frac=0.0, verbose=False)
    corpus = open_prepared(prep, verify=False)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    build_index(corpus)
    build_s = time.perf_counter() - t
    rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(p.stat().st_size for p in prep.glob("copies.*"))
    t = time.perf_counter()
    index = open_index(corpus)
    open_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    times, shares = [], []
    for k in range(50):
        sample = word_salad(1000, seed=10_000 + k)
        if k % 2:
            a = int(rng.integers(0, len(corpus.ids) - 200))
            passage = corpus.vocab.decode(np.asarray(corpus.ids[a : a + 200]))
            sample = sample[:400] + passage + sample[600:]
        t = time.perf_counter()
        report = check_copies(index, corpus.vocab, sample)
        times.append(time.perf_counter() - t)
        shares.append(report.share)
    return {
        "mb": mb, "chars": len(corpus.ids), "chunks": len(index.chunks), "build_s": round(build_s, 2),
        "index_mb": round(size / 1e6, 1), "open_ms": round(open_s * 1000, 2),
        "peak_rss_mb_before_build": round(rss0), "peak_rss_mb_after_build": round(rss_build),
        "query_ms_median": round(1000 * float(np.median(times)), 2),
        "query_ms_max": round(1000 * float(np.max(times)), 2),
        "copied_share_new": round(float(np.mean(shares[0::2])), 4),
        "copied_share_spliced": round(float(np.mean(shares[1::2])), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, nargs="+", default=[1, 100])
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory(prefix="charlstm-bench-copies-") as tmp:
            print(json.dumps(one(args.mb[0], Path(tmp))))
        return
    print(f"# {cpu_name()}")
    for mb in args.mb:
        out = subprocess.run([sys.executable, __file__, "--one", "--mb", str(mb)], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"failed ({out.returncode})")
            continue
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
