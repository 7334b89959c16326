"""`charlstm classify MODEL FILE`: which of a tagged model's tags a text is in (the posterior over its tags)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "classify",
        help="which tag a text is in: the posterior over a tagged model's tags from its likelihood under each",
    )
    c.add_argument("model", help="a .keras file trained with --tags or --tag-field")
    c.add_argument("file", help="the text (a file); with --lines, one text a line")
    c.add_argument("--lines", action="store_true", help="classify every non-empty line on its own (items, say)")
    c.add_argument("--json", action="store_true", help="one JSON object per text: tag, posterior, nats/char")
    c.add_argument("--encoding", default="utf-8", help="text encoding (default utf-8)")
    c.set_defaults(func=cmd_classify)


def cmd_classify(args: argparse.Namespace) -> int:
    from charlstm.data.corpus import read_text_file
    from charlstm.generation.model import load

    model = load(args.model)
    if not model.tags:
        from charlstm.errors import CharlstmError

        raise CharlstmError(f"{args.model} has no tags to classify into (trained without --tags)")
    text = read_text_file(Path(args.file), encoding=args.encoding)
    texts = [line for line in text.split("\n") if line.strip()] if args.lines else [text]
    for t in texts:
        result = model.classify(t)
        if args.json:
            print(json.dumps({**({"text": t} if args.lines else {}), **result.to_json()}, ensure_ascii=False))
            continue
        shown = "  ".join(f"{tag} {p:.3f}" for tag, p in result.ranked())
        where = f"{t[:40]!r}" if args.lines else args.file
        print(f"{where}: {result.best}  ({shown}; {result.chars:,} characters)")
    return 0
