"""`charlstm export MODEL --onnx OUT.onnx | --web DIR [--quantize int8]`: the model for other runtimes."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    e = sub.add_parser(
        "export",
        help="the model as an ONNX step graph (--onnx) or a web page that generates in the browser (--web)",
    )
    e.add_argument("model", help="a .keras file made by charlstm (or saved with save_keras_model)")
    where = e.add_mutually_exclusive_group(required=True)
    where.add_argument("--onnx", metavar="OUT.onnx", help="write the step graph (ids + states -> logits + states)")
    where.add_argument("--web", metavar="DIR", help="write a folder (index.html, script, weights) for any static server")
    e.add_argument("--tag", help="a tagged model: export it in this tag (default: its first; one export per tag)")
    e.add_argument("--quantize", choices=["int8"], default=None,
                   help="8-bit weights with per-row scales (about a quarter of the size); prints the loss it costs")
    e.add_argument("--text", metavar="FILE", default=None,
                   help="with --quantize: measure the loss on this text (default: the model's validation text)")
    e.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from charlstm.errors import CharlstmError
    from charlstm.generation.model import load

    text = None
    if args.text is not None:
        if args.quantize is None:
            raise CharlstmError("--text is for --quantize: it is the text the 8-bit weights' loss is measured on")
        try:
            text = Path(args.text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CharlstmError(f"--text {args.text}: cannot read it ({exc})") from None
    model = load(args.model).with_tag(getattr(args, "tag", None))  # a tag is folded into layer 0's table
    if args.onnx:
        from charlstm.export.onnx import export_onnx

        report = export_onnx(model, args.onnx, quantize_mode=args.quantize, text=text)
        print(f"wrote {report['path']}: {report['bytes']:,} bytes, {report['parameters']:,} weights "
              f"({report['seconds']:.2f} s)")
        return 0
    from charlstm.export.web import export_web

    report = export_web(model, args.web, quantize_mode=args.quantize, text=text)
    print(f"wrote {report['path']}/: {', '.join(f'{n} {b:,} B' for n, b in report['files'].items())} "
          f"({report['seconds']:.2f} s)")
    print(f"serve it with: cd {report['path']} && python -m http.server  (then open http://localhost:8000)")
    return 0
