"""`charlstm train | prepare | demo`: the commands that train (they import Keras only when they run)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from charlstm.cli.generate import print_samples
from charlstm.cli.options import add_distribute_options, add_text_options, floats
from charlstm.errors import CharlstmError


def add_parsers(sub: Any) -> None:
    t = sub.add_parser("train", help="train a model on a file, a folder or a named corpus")
    t.add_argument("source", nargs="?", help="file, folder, or named corpus (see `charlstm corpora`)")
    t.add_argument(
        "--recipe", default="default", help="default (fast, all-position) or classic (the lesson, exactly)"
    )
    t.add_argument("--out", help="run directory (default runs/<corpus>-<time>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.keras")
    t.add_argument("--init-from", metavar="MODEL", help="start from this model's weights (fine-tuning)")
    t.add_argument(
        "--backend",
        choices=["tensorflow", "jax", "torch"],
        help="Keras backend that trains (default: $KERAS_BACKEND, else the fastest one on this machine, "
        "measured once and remembered; TensorFlow on GPUs). torch needs charlstm[torch]",
    )
    add_distribute_options(t)
    add_text_options(t)
    m = t.add_argument_group("model")
    m.add_argument("--layers", type=int)
    m.add_argument("--units", type=int)
    m.add_argument("--cell", choices=["lstm", "gru"])
    m.add_argument("--embedding-dim", type=int)
    m.add_argument("--dropout", type=float)
    m.add_argument(
        "--mixed-precision",
        choices=["bf16", "fp16", "auto", "none"],
        help="16-bit math with float32 weights and logits (GPUs; fp16 adds loss scaling; on a CPU: bf16 on "
        "the torch backend, where the CPU has AVX-512-BF16 or AMX); auto: bf16 where the torch engine trains "
        "on such a CPU (the default recipe's default); none: float32",
    )
    o = t.add_argument_group("optimisation")
    o.add_argument(
        "--time",
        metavar="DURATION",
        help="train for a time budget (90s, 10m, 1h30m) instead of epochs: the network's size (unless given) "
        "and the learning-rate schedule are fitted to it; with --resume, adds time to the run",
    )
    o.add_argument("--epochs", type=int)
    o.add_argument("--seq-len", type=int, help="characters per training sequence (default recipe)")
    o.add_argument("--batch-size", type=int)
    o.add_argument(
        "--carry-state", action=argparse.BooleanOptionalAction, default=None,
        help="read the text as --batch-size contiguous streams and carry the LSTM state from one batch to the "
        "next (default recipe: on; torch engine, untagged plain text); --no-carry-state: every row from zeros",
    )
    o.add_argument("--carry-reset", type=float, metavar="P",
                   help="with --carry-state, the chance that a row starts from a zero state anyway (default 0.05)")
    o.add_argument("--lr", type=float, help="learning rate")
    o.add_argument("--clipnorm", type=float, help="gradient clipping norm (0 = off)")
    o.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine", "step", "wsd"],
        help="cosine (default for epochs), step, constant, or wsd (warmup-stable-decay: default with --time)",
    )
    o.add_argument(
        "--early-stopping",
        type=int,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without improvement",
    )
    o.add_argument("--seed", type=int, help="same seed: same data order and initial weights")
    o.add_argument("--val-frac", type=float, help="hold out the last fraction of the text (default 0.1)")
    o.add_argument("--val-file", help="validate on this file instead")
    it = t.add_argument_group("lists of items (names, titles, recipes)")
    it.add_argument(
        "--items", action="store_true", default=None,
        help="the text is a list, one item a line: items shuffled every epoch, whole items held out for "
        "validation, and generation gives whole items marked new or seen",
    )
    it.add_argument(
        "--item-sep", metavar="line|blank|SEP",
        help="what separates items (implies --items): line (default), blank (a blank line: poems, recipes) "
        "or a literal string such as '%%%%' (\\n for a newline)",
    )
    tg = t.add_argument_group("tags: one model, many styles (generate --tag NAME)")
    tg.add_argument(
        "--tags", choices=("folder", "file"),
        help="each file's tag: its parent folder's name (folder) or its own name without the suffix (file)",
    )
    tg.add_argument("--tag-field", type=int, metavar="N", help="items: the tag is field N (from 1) of each item")
    tg.add_argument(
        "--item-field-sep", metavar="SEP", help="what separates an item's fields (default a tab; \\t for a tab)",
    )
    tg.add_argument(
        "--tag-balance", choices=("none", "equal"),
        help="none (default): tags as often as the text has them; equal: every tag as many rows an epoch",
    )
    r = t.add_argument_group("reporting")
    r.add_argument(
        "--sample-temperatures", type=floats, help="per-epoch sample temperatures (default 0.2,0.5,1.0,1.2)"
    )
    r.add_argument("--sample-length", type=int, help="characters per epoch sample (default 400)")
    r.add_argument("--tensorboard", action="store_true", default=None, help="also write TensorBoard logs")
    r.add_argument("--quiet", action="store_true", help="no progress bar or samples")
    r.add_argument(
        "-v", "--verbose", action="store_true", help="also show TensorFlow's/JAX's own log lines (hidden by default)"
    )

    pp = sub.add_parser(
        "prepare", help="encode texts once into a memory-mapped corpus (ids.bin + corpus.json) to train on"
    )
    pp.add_argument("sources", nargs="+", help="files, folders or named corpora (joined with one newline)")
    pp.add_argument("--out", required=True, help="directory to create (then: charlstm train DIR)")
    add_text_options(pp)
    pp.add_argument("--val-frac", type=float, help="hold out the last fraction of the text (default 0.1)")
    pp.add_argument("--val-file", help="validate on this file instead")
    pp.add_argument("--tags", choices=("folder", "file"),
                    help="a tagged corpus: each file's tag is its parent folder's name or its own (train --tags)")
    pp.add_argument("--quiet", action="store_true", help="no progress bars")

    t.set_defaults(func=cmd_train)
    pp.set_defaults(func=cmd_prepare)


def add_demo_parser(sub: Any) -> None:
    d = sub.add_parser("demo", help="90 seconds of training on Treasure Island, then samples")
    d.add_argument(
        "--out", default="runs/demo", help="run directory (default runs/demo; replaced if present)"
    )
    d.add_argument("--time", default=None, help="training time (default 90s, on any machine)")
    d.add_argument(
        "-v", "--verbose", action="store_true", help="also show TensorFlow's/JAX's own log lines (hidden by default)"
    )
    d.set_defaults(func=cmd_demo)


def _train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The train()/make_config() settings the command line gave: every TrainConfig and TextOptions field
    that has an option of the same name and was given (`recipe` and `verbose` are set apart)."""
    from charlstm.training.recipes import SETTINGS

    keys = [k for k in SETTINGS if k not in ("recipe", "verbose")]
    settings = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if settings.get("item_sep") is not None:
        settings["items"] = True
    if settings.get("item_field_sep") is not None:
        settings["item_field_sep"] = settings["item_field_sep"].encode("utf-8").decode("unicode_escape")
    if args.quiet:
        settings["verbose"] = 0
    if getattr(args, "verbose", False):
        settings["verbose"] = 2  # progress and samples, plus the engines' own lines (training/engines.py)
    return settings


def cmd_train(args: argparse.Namespace) -> int:
    from charlstm.training.trainer import train

    cluster = {k: getattr(args, k) for k in ("distribute", "coordinator", "num_processes", "process_id")}
    if args.resume:
        train(out=args.resume, resume=True, backend=args.backend, time=args.time, **cluster, **_train_settings(args))
    else:
        if not args.source:
            raise CharlstmError("give a text source (file, folder or named corpus), or --resume DIR")
        train(
            args.source,
            recipe=args.recipe,
            out=args.out,
            init_from=args.init_from,
            backend=args.backend,
            **cluster,
            time=args.time,
            **_train_settings(args),
        )
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from charlstm.data.prepare import prepare
    from charlstm.data.sources import TextOptions

    fields = [f.name for f in dataclasses.fields(TextOptions)]
    opts = TextOptions(**{k: getattr(args, k) for k in fields if getattr(args, k, None) is not None})
    started = time.time()
    if getattr(args, "tags", None):  # one folder, one source per tag (data/tags.py)
        from charlstm.data.corpus import resolve_source
        from charlstm.data.tags import tagged_sources

        if len(args.sources) != 1:
            raise CharlstmError("--tags reads one folder (a folder or a file per tag)")
        if opts.val_file:
            raise CharlstmError("--tags holds out the end of every tag's text; drop --val-file")
        found, tags = tagged_sources(resolve_source(args.sources[0], glob=opts.glob), args.tags)
        corpus = prepare(args.sources * len(found), args.out, opts, verbose=not args.quiet, resolved=found, tags=tags)
    else:
        corpus = prepare(args.sources, args.out, opts, verbose=not args.quiet)
    seconds = time.time() - started
    mb = corpus.meta["bytes_read"] / 1e6
    split = corpus.meta["split"]
    print(
        f"charlstm: prepared {corpus.name} ({mb:,.1f} MB read, {len(corpus.ids):,} characters: "
        f"{split['train'][1] - split['train'][0]:,} train / {split['validation'][1] - split['validation'][0]:,} "
        f"validation; vocabulary {corpus.vocab.size}, {corpus.ids.dtype.name}) in {seconds:.1f} s "
        f"({mb / max(seconds, 1e-9):,.1f} MB/s) -> {args.out}; train with: charlstm train {args.out}"
    )
    return 0


DEMO_SETTINGS = {"time": "90s", "max_chars": 400_000}


def cmd_demo(args: argparse.Namespace) -> int:
    """Train briefly on Treasure Island (or, offline and uncached, on Python's standard library) and sample."""
    import shutil

    from charlstm.data.corpus import load_named
    from charlstm.training.trainer import train

    source = "treasure-island"
    try:
        load_named(source)
    except CharlstmError as exc:
        print(
            f"charlstm: {exc}\ncharlstm: training the demo on python-stdlib (this Python's own source) instead",
            file=sys.stderr,
            flush=True,
        )
        source = "python-stdlib"
    out = Path(args.out)
    if (out / "last.keras").exists():
        shutil.rmtree(out)
    settings = dict(DEMO_SETTINGS)
    if args.time:
        settings["time"] = args.time
    if args.verbose:
        settings["verbose"] = 2
    model = train(source, out=out, sample_temperatures=[0.5], sample_length=200, **settings)
    print("\n===== samples from the trained model at the lesson's four temperatures =====")
    print_samples(model, None, [0.2, 0.5, 1.0, 1.2], 400, seed=0)
    print(
        f"\nmodel file: {out / 'model.keras'}  (try: charlstm generate {out / 'model.keras'} --temperature 0.5)"
    )
    return 0

