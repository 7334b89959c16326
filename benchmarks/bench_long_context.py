"""Does generation stay good far beyond the training sequence length?

Reads 20,000 held-out characters in one continuous stateful pass (as generation does) and reports the mean
loss per bucket of 1,000 positions. A model that only learned to use short contexts from a zero state would
get worse bucket after bucket.

    python benchmarks/bench_long_context.py MODEL.keras TEXT [--chars 20000]
(TEXT: the text whose last 10% is the model's validation split, e.g. the corpus it was trained on.)
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--bucket", type=int, default=1000)
    args = ap.parse_args()
    from common import seed_keras_cache

    seed_keras_cache()
    import charlstm
    from charlstm.data.batches import split_ids
    from charlstm.data.corpus import load_corpus
    from charlstm.training.plan import _prepare_text
    from charlstm.training.recipes import TrainConfig

    model = charlstm.load(args.model)
    config = TrainConfig.from_json(model.meta["config"])
    corpus = load_corpus(args.text)
    ids = model.vocab.encode(_prepare_text(corpus, config), unknown="replace" if model.vocab.has_unknown else "skip")
    _, val = split_ids(ids, config.text.val_frac or 0.1)
    val = val[: args.chars + 1].astype(np.int64)
    logits, _ = model.forward(val[None, :-1])
    z = logits[0].astype(np.float64)
    m = z.max(-1, keepdims=True)
    nll = np.log(np.exp(z - m).sum(-1)) + m[:, 0] - z[np.arange(len(z)), val[1:]]
    # the same positions read as the training saw text: chunks of seq_len from a zero state
    L = config.seq_len
    n = (len(val) - 1) // L * L
    chunk_logits, _ = model.forward(val[:n].reshape(-1, L))
    zc = chunk_logits.reshape(n, -1).astype(np.float64)
    mc = zc.max(-1, keepdims=True)
    nll_chunk = np.log(np.exp(zc - mc).sum(-1)) + mc[:, 0] - zc[np.arange(n), val[1 : n + 1]]
    print(f"model {args.model}: trained on sequences of {L}; {len(nll):,} positions in one pass")
    print(f"positions        one stateful pass   chunks of {L} from zero state   (mean loss, nats/char)")
    for start in range(0, len(nll), args.bucket):
        end = start + args.bucket
        print(f"{start:>6}-{end:<6}   {nll[start:end].mean():.4f}             {nll_chunk[start:end].mean():.4f}")
    first, rest = nll[: args.bucket].mean(), nll[args.bucket :].mean()
    print(f"first bucket {first:.4f}; all later buckets {rest:.4f}; whole pass {nll.mean():.4f} "
          f"(chunked: {nll_chunk.mean():.4f})")


if __name__ == "__main__":
    main()
