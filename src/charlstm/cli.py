"""`charlstm train | prepare | generate | evaluate | corpora | demo`: a thin shell over the Python API.

Errors the user can fix print as one line `charlstm: error: ...` with exit status 2; an interrupted training
run exits 130 after saving a resumable checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from charlstm.errors import CharlstmError, TrainingDiverged, TrainingInterrupted


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback-like noise
        raise CharlstmError(f"{message} (see `{self.prog} --help`)")


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_text_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("text")
    g.add_argument("--glob", help="for a folder: only files matching this pattern (e.g. '*.py'), recursively")
    g.add_argument("--encoding", help="text encoding (default utf-8; e.g. latin-1, gbk)")
    g.add_argument(
        "--errors", choices=["strict", "replace", "ignore"], help="what to do with undecodable bytes"
    )
    g.add_argument(
        "--lowercase", action=argparse.BooleanOptionalAction, default=None, help="lowercase the text"
    )
    g.add_argument(
        "--ascii-only",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="drop characters above 127 (the lesson does)",
    )
    g.add_argument(
        "--strip-gutenberg",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="drop a Project Gutenberg header/license (default: on for named Gutenberg books, off in classic)",
    )
    g.add_argument(
        "--normalize",
        choices=["NFC", "NFKC", "NFD", "NFKD", "none"],
        help="Unicode normalisation (default NFC)",
    )
    g.add_argument(
        "--max-vocab", type=int, help="keep at most N symbols; rarer characters become one unknown symbol"
    )
    g.add_argument(
        "--min-count", type=int, help="characters seen fewer than K times become the unknown symbol"
    )
    g.add_argument("--max-chars", type=int, help="train on the first N characters of the text only")


def _add_distribute_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distributed (--batch-size is then per replica)")
    g.add_argument(
        "--distribute",
        choices=["none", "mirrored", "multihost"],
        help="mirrored: all GPUs of this machine (TensorFlow); multihost: N processes/machines (JAX, "
        "one command per process)",
    )
    g.add_argument("--coordinator", metavar="HOST:PORT", help="multihost: process 0's address, the same everywhere")
    g.add_argument("--num-processes", type=int, metavar="N", help="multihost: processes in the job")
    g.add_argument("--process-id", type=int, metavar="I", help="multihost: this process, 0 to N-1 (0 writes)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="charlstm", description="Character-level LSTM text generation: train, generate, evaluate."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
        choices=["tensorflow", "jax"],
        help="Keras backend that trains (default: $KERAS_BACKEND, else the faster one on this machine, "
        "measured once and remembered; TensorFlow on GPUs)",
    )
    _add_distribute_options(t)
    _add_text_options(t)
    m = t.add_argument_group("model")
    m.add_argument("--layers", type=int)
    m.add_argument("--units", type=int)
    m.add_argument("--cell", choices=["lstm", "gru"])
    m.add_argument("--embedding-dim", type=int)
    m.add_argument("--dropout", type=float)
    m.add_argument(
        "--mixed-precision",
        choices=["bf16", "fp16"],
        help="16-bit math with float32 weights and logits (GPUs; fp16 adds loss scaling)",
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
    r = t.add_argument_group("reporting")
    r.add_argument(
        "--sample-temperatures", type=_floats, help="per-epoch sample temperatures (default 0.2,0.5,1.0,1.2)"
    )
    r.add_argument("--sample-length", type=int, help="characters per epoch sample (default 400)")
    r.add_argument("--tensorboard", action="store_true", default=None, help="also write TensorBoard logs")
    r.add_argument("--quiet", action="store_true", help="no progress bar or samples")

    pp = sub.add_parser(
        "prepare", help="encode texts once into a memory-mapped corpus (ids.bin + corpus.json) to train on"
    )
    pp.add_argument("sources", nargs="+", help="files, folders or named corpora (joined with one newline)")
    pp.add_argument("--out", required=True, help="directory to create (then: charlstm train DIR)")
    _add_text_options(pp)
    pp.add_argument("--val-frac", type=float, help="hold out the last fraction of the text (default 0.1)")
    pp.add_argument("--val-file", help="validate on this file instead")
    pp.add_argument("--quiet", action="store_true", help="no progress bars")

    g = sub.add_parser("generate", help="generate text from a model file (no TensorFlow needed)")
    g.add_argument("model", help="a .keras file made by charlstm")
    g.add_argument(
        "--prime", help="text to start from (default: a random 40-character seed from the training text)"
    )
    g.add_argument("--length", type=int, default=400, help="characters to generate (default 400)")
    g.add_argument(
        "--temperature",
        type=_floats,
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

    e = sub.add_parser("evaluate", help="loss of a model on texts, in nats and bits per character")
    e.add_argument("model")
    e.add_argument("texts", nargs="+", help="files, folders, named corpora, or prepared corpora (their validation part)")
    e.add_argument("--unknown", choices=["error", "skip", "replace"], default="error")
    e.add_argument(
        "--context", choices=["stateful", "window"], help="default: window for classic models, else stateful"
    )
    e.add_argument("--encoding", default="utf-8", help="text encoding (default utf-8; e.g. latin-1, gbk)")
    e.add_argument(
        "--errors", choices=["strict", "replace", "ignore"], default="strict", help="undecodable bytes"
    )

    _add_serve_parser(sub)

    sub.add_parser("corpora", help="list the named corpora and whether each is available offline")

    d = sub.add_parser("demo", help="90 seconds of training on Treasure Island, then samples")
    d.add_argument(
        "--out", default="runs/demo", help="run directory (default runs/demo; replaced if present)"
    )
    d.add_argument("--time", default=None, help="training time (default 90s, on any machine)")
    return parser


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


def _train_settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = [
        "glob",
        "encoding",
        "errors",
        "lowercase",
        "ascii_only",
        "strip_gutenberg",
        "normalize",
        "max_vocab",
        "min_count",
        "max_chars",
        "layers",
        "units",
        "cell",
        "embedding_dim",
        "dropout",
        "mixed_precision",
        "epochs",
        "seq_len",
        "batch_size",
        "lr",
        "clipnorm",
        "lr_schedule",
        "early_stopping",
        "seed",
        "val_frac",
        "val_file",
        "sample_temperatures",
        "sample_length",
        "tensorboard",
    ]
    settings = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if args.quiet:
        settings["verbose"] = 0
    return settings


def cmd_train(args: argparse.Namespace) -> int:
    from charlstm.trainer import train

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
    from charlstm.prepared import TextOptions, prepare

    keys = [f for f in TextOptions.__dataclass_fields__ if getattr(args, f, None) is not None]
    opts = TextOptions(**{k: getattr(args, k) for k in keys})
    started = time.time()
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


def _print_samples(
    model: Any, prime: str | None, temperatures: Sequence[float], length: int, **kw: Any
) -> None:
    import numpy as np

    from charlstm.sampling import check_options

    for t in temperatures:
        check_options(t, kw.get("top_k"), kw.get("top_p"))
    if prime is None:
        prime = model.default_prime(np.random.default_rng(kw.get("seed")))
    shown = model.prepare(prime)
    out = _Streamer()
    for n, temp in enumerate(temperatures):
        if len(temperatures) > 1:
            out.write(f"{'' if n == 0 else chr(10)}----- temperature: {temp}\n")
        stream: Iterable[Any] = model.stream(prime, length, temp, **kw)
        if kw.get("num_samples", 1) > 1:
            pieces = list(stream)
            for b in range(kw["num_samples"]):
                out.write(f"----- sample {b + 1}\n{shown}{''.join(p[b] for p in pieces)}\n")
        else:
            out.write(shown)
            for piece in stream:
                out.write(piece)
            out.write("\n")
    sys.stdout.flush()


def cmd_generate(args: argparse.Namespace) -> int:
    from charlstm.runtime import load

    if not args.temperature:  # `--temperature ,` would otherwise print nothing and succeed
        raise CharlstmError("--temperature needs at least one number (0 = greedy)")
    model = load(args.model)
    _print_samples(
        model,
        args.prime,
        args.temperature,
        args.length,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        num_samples=args.num_samples,
        stop=args.stop,
        unknown=args.unknown,
        context=args.context,
        max_repeat=args.max_repeat,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from charlstm.corpus import load_corpus
    from charlstm.prepared import is_prepared, open_prepared
    from charlstm.runtime import load

    model = load(args.model)
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
    from charlstm.corpus import NAMED_CORPORA, cached_path, is_available_offline

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


DEMO_SETTINGS = {"time": "90s", "max_chars": 400_000}


def cmd_demo(args: argparse.Namespace) -> int:
    """Train briefly on Treasure Island (or, offline and uncached, on Python's standard library) and sample."""
    import shutil

    from charlstm.corpus import load_named
    from charlstm.trainer import train

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
    model = train(source, out=out, sample_temperatures=[0.5], sample_length=200, **settings)
    print("\n===== samples from the trained model at the lesson's four temperatures =====")
    _print_samples(model, None, [0.2, 0.5, 1.0, 1.2], 400, seed=0)
    print(
        f"\nmodel file: {out / 'model.keras'}  (try: charlstm generate {out / 'model.keras'} --temperature 0.5)"
    )
    return 0


def _add_serve_parser(sub: Any) -> None:
    from charlstm.server.limits import Limits

    d = Limits()
    s = sub.add_parser(
        "serve", help="web playground + HTTP API (charlstm's and OpenAI-compatible) for models (no TensorFlow)"
    )
    s.add_argument("models", nargs="+", metavar="MODEL_OR_RUN_DIR", help=".keras files or run directories")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument(
        "--token",
        default=os.environ.get("CHARLSTM_TOKEN"),
        help="require `Authorization: Bearer TOKEN` on every API call (default: $CHARLSTM_TOKEN); "
        "needed off loopback unless --no-auth",
    )
    s.add_argument("--no-auth", action="store_true", help="serve off loopback without a token, to anyone")
    s.add_argument("--max-length", type=int, default=d.max_length, help=f"characters per sample ({d.max_length})")
    s.add_argument("--max-samples", type=int, default=d.max_samples, help=f"samples per request ({d.max_samples})")
    s.add_argument("--max-prime", type=int, default=d.max_prime, help=f"characters of prime ({d.max_prime})")
    s.add_argument("--max-body", type=int, default=d.max_body, help=f"request body bytes ({d.max_body})")
    s.add_argument(
        "--max-streams", type=int, default=d.max_streams,
        help=f"generations running at once; more get 429 + Retry-After ({d.max_streams})",
    )
    s.add_argument("--time-limit", type=float, default=d.time_limit, help=f"seconds per request ({d.time_limit:g})")
    s.add_argument("--access-log", action="store_true", help="log every request")


def cmd_serve(args: argparse.Namespace) -> int:
    from charlstm.server.limits import Limits
    from charlstm.server.run import serve

    limits = Limits(
        max_length=args.max_length, max_samples=args.max_samples, max_prime=args.max_prime,
        max_body=args.max_body, max_streams=args.max_streams, time_limit=args.time_limit,
    )
    for name in ("max_length", "max_samples", "max_prime", "max_body", "max_streams", "time_limit"):
        if getattr(limits, name) <= 0:
            raise CharlstmError(f"--{name.replace('_', '-')} must be > 0, got {getattr(limits, name)}")
    serve(args.models, args.host, args.port, args.token, args.no_auth, limits, access_log=args.access_log)
    return 0


COMMANDS = {
    "train": cmd_train,
    "prepare": cmd_prepare,
    "generate": cmd_generate,
    "evaluate": cmd_evaluate,
    "corpora": cmd_corpora,
    "demo": cmd_demo,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    try:
        args = _build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except TrainingInterrupted as exc:
        print(f"charlstm: {exc}", file=sys.stderr)
        return 130
    except TrainingDiverged as exc:
        print(f"charlstm: error: {exc}", file=sys.stderr)
        return 1
    except CharlstmError as exc:
        print(f"charlstm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("charlstm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
