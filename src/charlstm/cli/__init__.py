"""`charlstm train | prepare | generate | evaluate | score | classify | serve | export | corpora | demo`: a thin shell over the Python API.

Errors the user can fix print as one line `charlstm: error: ...` with exit status 2; an interrupted training
run exits 130 after saving a resumable checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from charlstm.cli import classify, export, generate, score, serve, train
from charlstm.cli.options import Parser
from charlstm.errors import CharlstmError, TrainingDiverged, TrainingInterrupted


def build_parser() -> Parser:
    """The whole command line: each command group (train.py, generate.py, serve.py) adds its own parsers,
    each with its command function as `func`."""
    parser = Parser(prog="charlstm", description="Character-level LSTM text generation: train, generate, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train.add_parsers(sub)
    generate.add_parsers(sub)
    score.add_parsers(sub)
    classify.add_parsers(sub)
    serve.add_parsers(sub)
    export.add_parsers(sub)
    generate.add_corpora_parser(sub)
    train.add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
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
