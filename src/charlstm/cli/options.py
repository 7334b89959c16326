"""What the command groups share: the one-line-error parser and the option groups several commands take."""

from __future__ import annotations

import argparse

from charlstm.errors import CharlstmError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback-like noise
        raise CharlstmError(f"{message} (see `{self.prog} --help`)")


def floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_text_options(p: argparse.ArgumentParser) -> None:
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


def add_distribute_options(p: argparse.ArgumentParser) -> None:
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

