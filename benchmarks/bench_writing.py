"""The cost of writing with a model: scoring speed, and what `logprobs` adds to a completion.

    python benchmarks/bench_writing.py MODEL [--mb 1] [--chars 20000] [--repeats 3]

- score: characters per second of `model.score(text)` on `--mb` MB of Treasure Island (repeated as needed;
  characters outside the vocabulary skipped), beside generation's single-stream characters per second
  (`generate`, T = 1, no repeat guard) on the same model: one stateful pass each, so the target is within 1.5x.
- logprobs: characters per second of one `/v1/completions` request of `--chars` characters (in process,
  FastAPI's TestClient, so the JSON of the answer counts too) without logprobs and with `logprobs: 5`.
  Target: logprobs: 5 costs at most 20 %.
Best of `--repeats` runs each (the machine is shared). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import time

from common import DATA, cpu_name

import charlstm


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--chars", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = charlstm.load(args.model)
    book = (DATA / "treasure_island.txt").read_text(encoding="utf-8")
    size = int(args.mb * 1_000_000)
    text = (book * (size // len(book) + 1))[:size]
    print(f"CPU: {cpu_name()} (shared); model {args.model}: {model!r}")

    runs = []

    def score() -> None:
        runs.append(model.score(text, unknown="skip"))

    s = best(score, args.repeats)
    scored = runs[-1]
    score_rate = scored.chars / s
    g = best(lambda: model.generate("The ", args.chars, 1.0, seed=0, max_repeat="none"), args.repeats)
    gen_rate = args.chars / g
    print(f"score: {score_rate:,.0f} chars/s on {scored.chars:,} characters ({s:.1f} s); generate: "
          f"{gen_rate:,.0f} chars/s single stream; score / generate: {score_rate / gen_rate:.2f}")

    from fastapi.testclient import TestClient

    from charlstm.server import Limits, create_app, load_entries

    app = create_app(load_entries([args.model]), Limits(max_length=max(10_000, args.chars), time_limit=600))
    name = next(iter(app.state.service.entries))
    body = {"model": name, "prompt": "The ", "max_tokens": args.chars, "temperature": 1.0, "seed": 0}
    with TestClient(app) as client:
        def post(**extra):
            r = client.post("/v1/completions", json={**body, **extra})
            r.raise_for_status()

        http_plain = http_lp = float("inf")
        for _ in range(args.repeats):  # interleaved, so that a busy moment on the shared machine hits both
            http_plain = min(http_plain, best(post, 1))
            http_lp = min(http_lp, best(lambda: post(logprobs=5), 1))
    print(f"/v1/completions: {args.chars / http_plain:,.0f} chars/s plain, {args.chars / http_lp:,.0f} with "
          f"logprobs: 5 (cost {http_lp / http_plain - 1:+.1%})")


if __name__ == "__main__":
    main()
