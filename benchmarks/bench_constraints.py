"""What constraints, required words, best-of-n and beam search cost, and how much they bend the model (issue 26).

    python benchmarks/bench_constraints.py [MODEL] [--time 90s] [--length 400] [--rows 64] [--repeats 3]

Without MODEL it trains one on Treasure Island for `--time` (everything else at its default) into
benchmarks/out/constraints_model. Then, on that model, with its default processors (repeat guard, 20-gram ban):
1. regex masking: chars/s of plain sampling against the same sampling under each pattern, one sample and
   `--rows` samples in one batch (the median of `--repeats` runs, interleaved); the target is <= 1.5x plain;
2. the two ways of computing a mask: interegular's automaton (one table lookup per row and step) against the
   `regex` module's partial matching (one partial match of the row's text + c for every character c of the
   vocabulary): chars/s of one sample of 100 characters each way, and what each compiles per pattern;
3. must-include: the share of `--trials` trials of 200 characters that give a text with every word, and the
   time, for the automaton (the words required by the mask; one sample), rejection sampling (k plain samples
   drawn as one batch, a success when one has the words) and the automaton with best-of-5 (5 masked samples,
   the likeliest kept); costs in units of one plain sample of the same length drawn alone, interleaved;
4. beam search: seconds for 200 characters at widths 1-16 against one plain sample, and the log-probability
   per character of the result;
5. likelihood: the nats per character (under the model, untempered) of plain and of constrained samples at
   T = 1.0 and 0.5: how far a constraint bends the model.
Rows go to benchmarks/out/constraints.jsonl and a table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from common import DATA, OUT, cpu_name, seed_keras_cache

PATTERNS = {
    "ends in a full stop": r"[\s\S]*\.",
    "class, 100-300 chars": r"[a-z ,]{100,300}",
    "alternatives": r"(The|He|I) [\s\S]*(captain|doctor|squire)[\s\S]*",
    "must-include treasure,island": None,
}


def per_char(model, prime: str, texts: list[str]) -> float:
    """Mean nats per generated character under the model (untempered), over the texts."""
    total = chars = 0.0
    for t in texts:
        if not t:
            continue
        lp = model.score(prime + t).logprobs[len(prime) :]
        total -= float(lp.sum())
        chars += len(lp)
    return total / chars


def count(out) -> int:
    """Characters generated: a str or a list of them."""
    return len(out) if isinstance(out, str) else sum(map(len, out))


def timed(fn, repeats: int) -> tuple[float, object]:
    out = None
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def regex_partial_generate(model, prime: str, pattern: str, length: int, seed: int) -> str:
    """One sample masked by the `regex` module's partial matching: for each step, every character c of the
    vocabulary is kept iff text + c can still be extended to a full match (`fullmatch(..., partial=True)`)."""
    import regex

    rx = regex.compile(pattern)
    chars = model.network.chars[: model.vocab.size]

    class Partial:
        def __init__(self) -> None:
            self.text = ""

        def __call__(self, logits, history):
            if history.ids.shape[1] > history.prime_len + len(self.text):
                self.text += chars[int(history.last[0])]
            ok = np.array([rx.fullmatch(self.text + c, partial=True) is not None for c in chars])
            return np.where(ok[None, :], logits, -np.inf)

    proc = Partial()
    proc.needs_ids = True
    return model.generate(prime, length, 1.0, seed=seed, processors=[proc])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--time", default="90s")
    ap.add_argument("--length", type=int, default=400)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=100, help="must-include trials (default 100)")
    ap.add_argument("--parts", default="12345", help="which parts to run (default all: 12345)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    import charlstm
    from charlstm.generation.constraints import compile_constraint
    from charlstm.generation.model import load

    path = args.model
    if path is None:
        run = OUT / "constraints_model"
        if not (run / "model.keras").exists():
            seed_keras_cache()
            charlstm.train(str(DATA / "treasure_island.txt"), out=run, time=args.time, verbose=0)
        path = run / "model.keras"
    model = load(path)
    prime = "The captain "
    rows_out: list[dict] = []
    print(f"model {path}: {model}; CPU {cpu_name()}, load average {os.getloadavg()[0]:.1f}")

    parts = set(args.parts)
    # 1. masking cost ------------------------------------------------------------------------------------
    if "1" in parts:
        print(f"\n1. chars/s, length {args.length} (median of {args.repeats}; 1 sample | {args.rows} samples)")
        plain = {}
        for rows in (1, args.rows):
            t, _ = timed(lambda r=rows: model.generate(prime, args.length, 1.0, seed=1, num_samples=r), args.repeats)
            plain[rows] = rows * args.length / t
        print(f"  {'plain':32s} {plain[1]:10,.0f} {plain[args.rows]:12,.0f}")
        for name, pattern in PATTERNS.items():
            kw = {"must_include": "treasure,island"} if pattern is None else {"regex": pattern}
            speeds = {}
            for rows in (1, args.rows):
                # each repeat times a plain run and a constrained one back to back, so that both see the same
                # load; the cost is the median of the per-pair ratios of time per character
                ratios, rates = [], []
                for _ in range(args.repeats):
                    tp, _ = timed(lambda r=rows: model.generate(prime, args.length, 1.0, seed=1, num_samples=r), 1)
                    tc, out = timed(
                        lambda r=rows, kw=kw: model.generate(prime, args.length, 1.0, seed=1, num_samples=r, **kw), 1)
                    # per character: a pattern may end rows early (the 100-300 class)
                    ratios.append((tc / count(out)) / (tp / (rows * args.length)))
                    rates.append(count(out) / tc)
                speeds[rows] = (statistics.median(rates), statistics.median(ratios))
            print(f"  {name:32s} {speeds[1][0]:10,.0f} ({speeds[1][1]:.2f}x) {speeds[args.rows][0]:12,.0f} "
                  f"({speeds[args.rows][1]:.2f}x)")
            rows_out.append({"part": "mask", "pattern": name, "chars_per_s_1": speeds[1][0],
                             "cost_1": speeds[1][1], f"chars_per_s_{args.rows}": speeds[args.rows][0],
                             f"cost_{args.rows}": speeds[args.rows][1]})

    # 2. interegular against regex partial matching -----------------------------------------------------------
    if "2" in parts:
        print("\n2. computing the mask: interegular tables vs regex partial matching (1 sample, 100 chars)")
        pattern = PATTERNS["alternatives"]
        t0 = time.perf_counter()
        # compiled once here (what the first request pays; later ones find it cached)
        compile_constraint([("regex", pattern)], model.network.chars[: model.vocab.size])
        compile_s = time.perf_counter() - t0
        model.generate(prime, 100, 1.0, seed=2, regex=pattern)  # warm: the first call pays one-time costs
        ti, _ = timed(lambda: model.generate(prime, 100, 1.0, seed=2, regex=pattern), 1)
        try:
            tr, _ = timed(lambda: regex_partial_generate(model, prime, pattern, 100, 2), 1)
        except ImportError:
            tr = float("nan")
        print(f"  whole generation: interegular {100 / ti:,.0f} chars/s (compile {compile_s * 1000:.0f} ms); "
              f"regex partial {100 / tr:,.0f} chars/s -> {tr / ti:.1f}x the time")
        # the mask alone, step by step along one matching text of 400 characters
        chars = model.network.chars[: model.vocab.size]
        text = model.generate(prime, 400, 1.0, seed=2, regex=pattern)
        ids = [chars.index(c) for c in text]
        c = compile_constraint([("regex", pattern)], chars)
        logits = np.zeros((1, len(chars)), np.float32)
        t0 = time.perf_counter()
        st = c.begin(1, len(ids))
        for i in ids:
            st.mask(logits)
            st.advance(np.array([i]))
        t_tab = (time.perf_counter() - t0) / len(ids)
        t_rx = float("nan")
        try:
            import regex

            rx = regex.compile(pattern)
            t0 = time.perf_counter()
            for k in range(len(ids)):
                [rx.fullmatch(text[:k] + ch, partial=True) is not None for ch in chars]
            t_rx = (time.perf_counter() - t0) / len(ids)
        except ImportError:
            pass
        print(f"  the mask alone, per step over 400 chars: tables {t_tab * 1e6:,.1f} us, regex partial "
              f"{t_rx * 1e6:,.1f} us ({t_rx / t_tab:,.0f}x); regex cannot give the distance to a match")
        rows_out.append({"part": "engines", "interegular_chars_per_s": 100 / ti, "regex_chars_per_s": 100 / tr,
                         "compile_ms": compile_s * 1000, "mask_us_tables": t_tab * 1e6, "mask_us_regex": t_rx * 1e6})

    # 3. must-include ------------------------------------------------------------------------------------
    if "3" in parts:
        n, length = args.trials, 200
        for words in (["captain"], ["treasure", "island"]):
            print(f"\n3. must-include {','.join(words)}: {n} trials of {length} chars; cost in one plain sample's time")

            def has(t: str, words=words) -> bool:
                return all(w in t for w in words)

            ways = {"automaton": lambda i, w=words: [model.generate(prime, length, 1.0, seed=i, must_include=w)]}
            for k in (1, 5, 20):
                ways[f"rejection of {k} plain"] = lambda i, k=k: model.generate(
                    prime, length, 1.0, seed=i, num_samples=k) if k > 1 else [model.generate(prime, length, 1.0, seed=i)]
            ways["automaton, best of 5"] = lambda i, w=words: [
                model.search(prime, length, 1.0, best_of=5, seed=i, must_include=w)[0].text]
            spent = dict.fromkeys(ways, 0.0)
            hits = dict.fromkeys(ways, 0)
            picked: dict[str, list[str]] = {w: [] for w in ways}
            plain_s = 0.0
            for i in range(n):  # interleaved, so that every way sees the same load
                t = time.perf_counter()
                model.generate(prime, length, 1.0, seed=10_000 + i)
                plain_s += time.perf_counter() - t
                for name, fn in ways.items():
                    t = time.perf_counter()
                    texts = fn(i)
                    spent[name] += time.perf_counter() - t
                    good = [x for x in texts if has(x)]
                    hits[name] += bool(good)
                    picked[name].append(good[0] if good else texts[0])
            for name in ways:
                nll = per_char(model, prime, picked[name])
                print(f"  {name:24s} {hits[name] / n:6.1%} success, {spent[name] / plain_s:5.2f}x, "
                      f"{nll:.3f} nats/char of the text returned")
                rows_out.append({"part": "must_include", "words": words, "way": name, "success": hits[name] / n,
                                 "cost": spent[name] / plain_s, "nats_per_char": nll})

    # 4. beam search ---------------------------------------------------------------------------------------
    if "4" in parts:
        print("\n4. beam search, 200 chars (seconds; x one plain sample; nats/char of the best)")
        t1, _ = timed(lambda: model.generate(prime, 200, 1.0, seed=5), args.repeats)
        tg, greedy = timed(lambda: model.generate(prime, 200, 0), 1)
        print(f"  greedy: {tg:.3f} s, {per_char(model, prime, [greedy]):.3f} nats/char")
        for width in (1, 2, 4, 8, 16):
            t, best = timed(lambda w=width: model.search(prime, 200, beam=w), 1)
            nll = -best[0].per_char
            print(f"  width {width:2d}: {t:6.3f} s ({t / t1:5.1f}x), {nll:.3f} nats/char")
            rows_out.append({"part": "beam", "width": width, "seconds": t, "cost": t / t1, "nats_per_char": nll})

    # 5. likelihood --------------------------------------------------------------------------------------
    if "5" in parts:
        print("\n5. nats/char under the model (untempered) of 64 samples of 200 chars")
        for temperature in (1.0, 0.5):
            base = per_char(model, prime, model.generate(prime, 200, temperature, seed=6, num_samples=64))
            line = f"  T={temperature}: plain {base:.3f}"
            row = {"part": "likelihood", "temperature": temperature, "plain": base}
            for name, pattern in PATTERNS.items():
                kw = {"must_include": "treasure,island"} if pattern is None else {"regex": pattern}
                texts = model.generate(prime, 200, temperature, seed=6, num_samples=64, **kw)
                value = per_char(model, prime, texts)
                line += f" | {name} {value:.3f}"
                row[name] = value
            print(line)
            rows_out.append(row)

    with open(OUT / "constraints.jsonl", "a", encoding="utf-8") as fh:
        for r in rows_out:
            fh.write(json.dumps({"model": str(Path(path)), "cpu": cpu_name(), **r}) + "\n")
    print(f"\nload average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
