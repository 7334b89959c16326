"""`charlstm generate | evaluate | corpora`: the commands that read models and texts (NumPy only: no Keras)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from charlstm.cli.options import floats
from charlstm.errors import CharlstmError


def add_parsers(sub: Any) -> None:
    g = sub.add_parser("generate", help="generate text from a model file (no TensorFlow needed)")
    g.add_argument("model", help="a .keras file made by charlstm")
    g.add_argument(
        "--prime", help="text to start from (default: a random 40-character seed from the training text)"
    )
    g.add_argument("--length", type=int, default=400, help="characters to generate (default 400)")
    g.add_argument(
        "--temperature",
        type=floats,
        default=[1.0],
        help="sampling temperature, or a comma list for one sample each (0 = greedy; lower = safer)",
    )
    g.add_argument("--top-k", type=int, help="sample only among the k most likely characters")
    g.add_argument(
        "--top-p", type=float, help="sample only from the smallest set holding this probability mass"
    )
    g.add_argument("--seed", type=int, help="random seed: the same seed gives the same text")
    g.add_argument("--num-samples", type=int, default=1, help="generate N samples together as one batch")
    g.add_argument("--stop", help="stop once this string has been generated")
    g.add_argument("--tag", metavar="NAME[,NAME...]",
                   help="a tagged model's tag to generate in (several: a sample under each); default: its first")
    g.add_argument(
        "--unknown",
        choices=["error", "skip", "replace"],
        default="error",
        help="characters of the prime outside the vocabulary: error (default), skip, or replace",
    )
    g.add_argument(
        "--context",
        choices=["stateful", "window"],
        default="stateful",
        help="stateful (default): read the prime once; window: re-read the last 40 chars per step (lesson)",
    )
    g.add_argument(
        "--max-repeat",
        metavar="auto|N|none",
        help="never repeat a character more times in a row than the training text did (auto), than N, or no "
        "limit (none); default: auto for the default recipe's models, none for classic ones",
    )
    add_loop_options(g)
    add_shape_options(g)

    g.add_argument(
        "--check-copies", action="store_true",
        help="under each sample, its longest span also found in the training text and the share of it in spans "
        "of at least --min-span characters (the training text is found from the model file; see --against)",
    )
    g.add_argument(
        "--only-new", action="store_true",
        help="items models: only items that are not in the training list (generated until there are enough)",
    )
    g.add_argument("--min-span", type=int, default=20, help="shortest span --check-copies counts (default 20)")
    g.add_argument("--against", metavar="FILE|DIR", help="check copies against this text instead of the training text")

    e = sub.add_parser("evaluate", help="loss of a model on texts, in nats and bits per character")
    e.add_argument("model")
    e.add_argument("texts", nargs="+", help="files, folders, named corpora, or prepared corpora (their validation part)")
    e.add_argument("--unknown", choices=["error", "skip", "replace"], default="error")
    e.add_argument("--tag", help="a tagged model's tag to evaluate under (default: its first)")
    e.add_argument(
        "--context", choices=["stateful", "window"], help="default: window for classic models, else stateful"
    )
    e.add_argument("--encoding", default="utf-8", help="text encoding (default utf-8; e.g. latin-1, gbk)")
    e.add_argument(
        "--errors", choices=["strict", "replace", "ignore"], default="strict", help="undecodable bytes"
    )

    g.set_defaults(func=cmd_generate)
    e.set_defaults(func=cmd_evaluate)


def add_corpora_parser(sub: Any) -> None:
    sub.add_parser("corpora", help="list the named corpora and whether each is available offline").set_defaults(
        func=cmd_corpora
    )


def add_loop_options(g: argparse.ArgumentParser) -> None:
    """Phrase-loop control and the samplers built against it (the same settings as the API's)."""
    g.add_argument("--no-repeat-ngram", type=int, metavar="N",
                   help="never produce an N-character sequence already in the text (Hugging Face's "
                   "no_repeat_ngram_size, over characters; the prime counts); 0 = off; default: 20 for the "
                   "default recipe's models, 0 for classic ones")
    g.add_argument("--repetition-penalty", type=float, metavar="P",
                   help="the CTRL / Hugging Face repetition penalty on characters already in the text (1 = off)")
    g.add_argument("--min-p", type=float, metavar="P",
                   help="sample only characters at least P times as likely as the likeliest")
    g.add_argument("--typical-p", type=float, metavar="P", help="locally typical sampling with mass P")


def add_shape_options(g: argparse.ArgumentParser) -> None:
    """What a sample must be (a pattern, words, a start, an end, a length) and the likeliest-text searches."""
    g.add_argument("--regex", metavar="PATTERN",
                   help="the whole sample (an items model: each item) must match this regular expression "
                   "(Python syntax; masked at every step, so every sample matches within --length)")
    g.add_argument("--must-include", metavar="WORD[,WORD...]", help="every sample contains all these words")
    g.add_argument("--starts-with", metavar="TEXT", help="every sample (item) starts with TEXT")
    g.add_argument("--ends-with", metavar="TEXT", help="every sample (item) ends with TEXT")
    g.add_argument("--min-length", type=int, metavar="N", help="every sample (item) has at least N characters")
    g.add_argument("--max-length", type=int, metavar="N", help="every sample (item) has at most N characters")
    g.add_argument("--best-of", type=int, metavar="N",
                   help="sample N (>= --num-samples) in one batch and print the likeliest per character")
    g.add_argument("--beam", type=int, metavar="N",
                   help="beam search of width N instead of sampling: the likeliest text found (--num-samples "
                   "<= N of the beam's best); the n-gram ban and the pattern apply inside the beam")
    g.add_argument("--length-penalty", type=float, default=1.0, metavar="A",
                   help="beam search ranks texts by log-probability / length ** A (default 1: per character)")


def shape_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "regex": args.regex,
        "must_include": args.must_include or (),
        "starts_with": args.starts_with,
        "ends_with": args.ends_with,
        "min_length": args.min_length,
        "max_length": args.max_length,
    }


def search_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"best_of": args.best_of, "beam": args.beam, "length_penalty": args.length_penalty}


def loop_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "no_repeat_ngram": args.no_repeat_ngram,
        "repetition_penalty": args.repetition_penalty,
        "min_p": args.min_p,
        "typical_p": args.typical_p,
    }


class _Streamer:
    """Write pieces to stdout as they come, flushing at newlines and at least every 50 ms."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def write(self, piece: str) -> None:
        sys.stdout.write(piece)
        now = time.monotonic()
        if "\n" in piece or now - self.last > 0.05:
            sys.stdout.flush()
            self.last = now


def copy_lines(report: Any, limit: int = 5) -> str:
    """The copy check under a sample: its summary, then up to `limit` spans (positions in the sample)."""
    lines = [f"  [{report.summary()}]"]
    for span in report.spans[:limit]:
        lines.append(f"  [  chars {span.start}-{span.end} ({span.length}) = training text at {span.source:,}]")
    if len(report.spans) > limit:
        lines.append(f"  [  ... {len(report.spans) - limit} more]")
    return "\n".join(lines) + "\n"


def print_samples(
    model: Any, prime: str | None, temperatures: Sequence[float], length: int,
    check: Any = None, **kw: Any,
) -> None:
    """Print samples as they come, one per temperature; `check(text)`, if given, prints the copy report
    under each one. kw: the other `GenerationSettings` (all checked before the first sample)."""
    import numpy as np

    from charlstm.generation import generate
    from charlstm.generation.settings import GenerationSettings

    base = GenerationSettings(length=length, temperature=temperatures[0] if temperatures else 1.0, **kw)
    runs = [base.replace(temperature=t) for t in temperatures]
    if prime is None:
        prime = model.default_prime(np.random.default_rng(base.seed))
    shown = model.prepare(prime)
    out = _Streamer()
    for n, settings in enumerate(runs):
        if len(runs) > 1:
            out.write(f"{'' if n == 0 else chr(10)}----- temperature: {settings.temperature}\n")
        if generate.searching(settings):  # best-of / beam: whole texts, ranked, printed once found
            for b, found in enumerate(generate.search(model.network, settings, prime)):
                head = f"----- sample {b + 1} " if settings.num_samples > 1 else "----- "
                out.write(f"{head}({-found.per_char:.4f} nats/char under the model)\n{shown}{found.text}\n")
                if check is not None:
                    out.write(copy_lines(check(found.text)))
            continue
        stream: Iterable[Any] = generate.stream(model.network, settings, prime)
        if settings.num_samples > 1:
            pieces = list(stream)
            for b in range(settings.num_samples):
                text = "".join(p[b] for p in pieces)
                out.write(f"----- sample {b + 1}\n{shown}{text}\n")
                if check is not None:
                    out.write(copy_lines(check(text)))
        else:
            out.write(shown)
            got = []
            for piece in stream:
                out.write(piece)
                got.append(piece)
            out.write("\n")
            if check is not None:
                out.write(copy_lines(check("".join(got))))
    sys.stdout.flush()


def cmd_generate(args: argparse.Namespace) -> int:
    from charlstm.generation.model import load
    from charlstm.generation.tags import parse_tags

    if not args.temperature:  # `--temperature ,` would otherwise print nothing and succeed
        raise CharlstmError("--temperature needs at least one number (0 = greedy)")
    model = load(args.model)
    tags = parse_tags(args.tag)
    views = [model.with_tag(t) for t in tags]  # every tag checked before the first sample
    for n, (tag, view) in enumerate(zip(tags, views, strict=True)):
        if len(tags) > 1:
            print(f"{'' if n == 0 else chr(10)}===== tag: {tag}", flush=True)
        _generate(view, args)
    return 0


def _generate(model: Any, args: argparse.Namespace) -> int:
    """One model's (one tag's) samples, as `charlstm generate` prints them."""
    if model.is_items:
        if args.check_copies or args.against:
            raise CharlstmError(f"{args.model} is an items model: each item is marked new or seen already; "
                                "--check-copies is for free text")
        print_items(model, args)
        return 0
    if args.only_new:
        raise CharlstmError(f"--only-new is for items models (trained with --items); {args.model} is not one")
    check = None
    if args.check_copies:  # found (and its index opened or built) before the first sample, so errors come first
        model.copies("", against=args.against, min_span=args.min_span)

        def check(text: str) -> Any:
            return model.copies(text, against=args.against, min_span=args.min_span)
    elif args.against is not None:
        raise CharlstmError("--against goes with --check-copies")
    print_samples(
        model,
        args.prime,
        args.temperature,
        args.length,
        check=check,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        num_samples=args.num_samples,
        stop=args.stop,
        unknown=args.unknown,
        context=args.context,
        max_repeat=args.max_repeat,
        **loop_settings(args),
        **shape_settings(args),
        **search_settings(args),
    )
    return 0


def print_items(model: Any, args: argparse.Namespace) -> None:
    """An items model's samples: `--num-samples` whole items, one a line, each marked new or seen."""
    from charlstm.generation.sampling import check_options

    for t in args.temperature:
        check_options(t, args.top_k, args.top_p)
    for name in ("best_of", "beam"):
        if getattr(args, name) is not None:
            raise CharlstmError(f"--{name.replace('_', '-')} is for free text; an items model's items are sampled "
                                "(shape them with --regex, --starts-with, --ends-with, --min-length, --max-length)",
                                name)
    for n, temp in enumerate(args.temperature):
        if len(args.temperature) > 1:
            print(f"{'' if n == 0 else chr(10)}----- temperature: {temp}")
        items = model.items(args.num_samples, temp, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                            only_new=args.only_new, **shape_settings(args))
        width = max((len(i.text) for i in items if "\n" not in i.text), default=0)
        for item in items:
            if "\n" in item.text:  # items separated by blank lines: the item, then its mark
                print(f"{item.text}\n[{item.status}]\n")
            else:
                print(f"{item.text:<{width}}  [{item.status}]")
        new = sum(i.new for i in items)
        print(f"----- {new} of {len(items)} new", file=sys.stderr)
        if len(items) < args.num_samples:
            print(f"charlstm: only {len(items)} new items in {50} batches; the model mostly repeats its list",
                  file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from charlstm.data.corpus import load_corpus
    from charlstm.data.prepared import is_prepared, open_prepared
    from charlstm.generation.model import load

    model = load(args.model).with_tag(args.tag)
    for source in args.texts:
        if is_prepared(source):  # a prepared corpus: its validation part (all of it if it has none)
            corpus = open_prepared(source)
            text = corpus.vocab.decode(corpus.val_ids if len(corpus.val_ids) else corpus.ids)
        else:
            text = load_corpus(source, encoding=args.encoding, errors=args.errors, download=False).text
        r = model.evaluate(text, unknown=args.unknown, context=args.context)
        print(
            f"{source}: {r['nats_per_char']:.4f} nats/char  {r['bits_per_char']:.4f} bits/char  "
            f"({r['chars']:,} characters)"
        )
    return 0


def cmd_corpora(args: argparse.Namespace) -> int:
    from charlstm.data.corpus import NAMED_CORPORA, cached_path, is_available_offline

    for name, corpus in NAMED_CORPORA.items():
        path = cached_path(name)
        where = (
            "built in, no download"
            if path is None
            else (
                f"cached at {path}"
                if path.is_file()
                else f"not cached; downloads from {corpus.url} to {path}"
            )
        )
        mark = "offline ok" if is_available_offline(name) else "needs network"
        print(f"{name:18s} {mark:13s} {corpus.description}\n{'':18s} {where}")
    return 0

