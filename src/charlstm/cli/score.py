"""`charlstm score MODEL FILE`: how likely a text is under a model, and where it surprises the model most."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "score",
        help="per-character log-probabilities of a text in one stateful pass: the total, and the least likely spans",
    )
    s.add_argument("model", help="a .keras file made by charlstm")
    s.add_argument("file", help="the text to score (a file, folder or named corpus, as for evaluate)")
    s.add_argument("--show", type=int, default=0, metavar="N", help="also print the N least likely spans")
    s.add_argument("--width", type=int, default=20, help="characters per span for --show (default 20)")
    s.add_argument("--unknown", choices=["error", "skip", "replace"], default="error",
                   help="characters outside the vocabulary: error (default), skip, or replace")
    s.add_argument("--encoding", default="utf-8", help="text encoding (default utf-8)")
    s.add_argument("--tag", help="a tagged model's tag to score under (default: its first)")
    s.add_argument("--errors", choices=["strict", "replace", "ignore"], default="strict", help="undecodable bytes")
    s.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    from charlstm.data.corpus import load_corpus
    from charlstm.errors import CharlstmError
    from charlstm.generation.model import load

    if args.show < 0 or args.width < 1:
        raise CharlstmError("--show must be >= 0 and --width >= 1")
    model = load(args.model).with_tag(args.tag)
    text = load_corpus(args.file, encoding=args.encoding, errors=args.errors, download=False).text
    scored = model.score(text, unknown=args.unknown)
    print(
        f"{args.file}: {scored.nats_per_char:.4f} nats/char  {scored.bits_per_char:.4f} bits/char  "
        f"({scored.chars:,} characters, {scored.nats / 0.6931471805599453:,.0f} bits in all)"
    )
    spans = scored.least_likely(args.show, args.width) if args.show else []
    if spans:
        print(f"least likely spans of {args.width} characters:")
    for start, end, bits in spans:
        print(f"  {bits:6.2f} bits/char  at {start:,}: {scored.text[start:end]!r}")
    return 0
