"""What the server serves, read once at start: models, and for run directories their metrics and samples.

A run directory contributes `model.keras`, `metrics.csv` (one row per epoch) and `samples.txt` (the per-epoch
samples at the lesson's temperatures); a model file contributes itself. Nothing here is read again on request,
so the server never opens a file a request names.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlstm.errors import CharlstmError
from charlstm.generation.model import CharModel, load


@dataclass
class Entry:
    """One served model: its name in the API, the runtime model, a description, and its run (if any)."""

    name: str
    model: CharModel
    path: str
    metrics: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    is_run: bool = False
    copies: Any = None  # text -> CopyReport, when the training text was found at start (generation/copies.py)

    def info(self) -> dict[str, Any]:
        """What `GET /api/models` says about this model."""
        m = self.model
        meta = m.meta
        corpus = meta.get("corpus") or {}
        return {
            "name": self.name,
            "vocab_size": m.vocab.size,
            "architecture": architecture(m),
            "layers": [{"cell": layer.cell, "units": layer.units} for layer in m.layers],
            "recipe": m.recipe,
            "corpus": corpus.get("name"),
            "best_val_bpc": best_val_bpc(meta, self.metrics),
            "window": m.window,
            "run": self.is_run,
            "preprocessing": m.preprocessing,
            "copy_check": self.copies is not None,
            "items": m.is_items,
            "tags": list(getattr(m, "tags", ()) or ()),  # a tagged model: generate with one of these
        }


def architecture(model: CharModel) -> str:
    """e.g. "2×LSTM(128)", or "LSTM(128)+GRU(64)" for mixed stacks."""
    names = [f"{layer.cell.upper()}({layer.units})" for layer in model.layers]
    if len(set(names)) == 1 and len(names) > 1:
        return f"{len(names)}×{names[0]}"
    return "+".join(names)


def best_val_bpc(meta: dict[str, Any], metrics: list[dict[str, Any]]) -> float | None:
    """The lowest validation bits/char of the run's epochs (metrics.csv, else the model file's history)."""
    rows = metrics or (meta.get("train_state") or {}).get("history") or []
    values = [r.get("val_bpc") for r in rows if isinstance(r, dict)]
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return min(values) if values else None


def _number(value: str) -> Any:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def read_metrics(text: str) -> list[dict[str, Any]]:
    """metrics.csv rows as dicts of numbers (empty cells -> None; unknown columns kept as they are)."""
    return [{k: _number(v) for k, v in row.items() if k} for row in csv.DictReader(io.StringIO(text))]


_MARK = re.compile(
    r"^----- (?:Epoch (\d+): generating with seed: (.*)|temperature: (\S+)(?: \((.*)\))?)$", re.MULTILINE
)


def read_samples(text: str) -> list[dict[str, Any]]:
    """samples.txt blocks -> [{"epoch", "prime", "samples": [{"temperature", "text"}]}] (text includes the
    prime, as printed during training)."""
    epochs: list[dict[str, Any]] = []
    marks = list(_MARK.finditer(text))
    for n, mark in enumerate(marks):
        body_end = marks[n + 1].start() if n + 1 < len(marks) else len(text)
        body = text[mark.end() + 1 : body_end]
        if mark.group(1) is not None:
            prime = mark.group(2)
            with contextlib.suppress(ValueError, SyntaxError):
                prime = ast.literal_eval(prime)
            epochs.append({"epoch": int(mark.group(1)), "prime": prime, "samples": []})
        elif epochs:
            body = body[:-2] if body.endswith("\n\n") else body.rstrip("\n")
            try:
                temperature: Any = float(mark.group(3))
            except ValueError:
                temperature = mark.group(3)
            sample = {"temperature": temperature, "text": body}
            if mark.group(4):  # the copy check's note: "longest copied span N chars; P% in spans >= K"
                sample["copies"] = mark.group(4)
            epochs[-1]["samples"].append(sample)
    return epochs


def load_entries(paths: list[str]) -> list[Entry]:
    """Load every model file or run directory given to `charlstm serve` (names made unique)."""
    if not paths:
        raise CharlstmError("give at least one model file or run directory to serve")
    entries: list[Entry] = []
    names: set[str] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            model_path = p / "model.keras"
            if not model_path.is_file():
                raise CharlstmError(f"{p}: a run directory needs a model.keras (train one with `charlstm train`)")
            name = p.resolve().name
            metrics_path, samples_path = p / "metrics.csv", p / "samples.txt"
            metrics = read_metrics(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else []
            samples = read_samples(samples_path.read_text(encoding="utf-8")) if samples_path.is_file() else []
            is_run = True
        else:
            model_path = p
            name = file_name(p)
            metrics, samples, is_run = [], [], False
        model = load(model_path)
        base, n = name, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.add(name)
        entries.append(Entry(name, model, str(model_path), metrics, samples, is_run, _copy_check(model, name)))
    return entries


RUN_FILES = ("model", "best", "last")  # what a run directory holds (training/trainer.py)


def file_name(path: Path) -> str:
    """A model file's name in the API: its stem, but a run's model.keras (best.keras, last.keras) is named
    after its run folder ("shakespeare-20260101-120000", "...-best"), so two runs do not serve as "model" and
    "model-2"."""
    parent = path.resolve().parent
    if path.stem in RUN_FILES and ((parent / "config.json").is_file() or (parent / "metrics.csv").is_file()):
        return parent.name if path.stem == "model" else f"{parent.name}-{path.stem}"
    return path.stem


def _copy_check(model: CharModel, name: str) -> Any:
    """The copy check against the model's training text, if the text is found (its index is opened or built
    now, not on request); else None, said in one line."""
    import sys

    from charlstm.generation.copies import COPY_CHECK_MAX_CHARS, checker_for_model

    chars = (model.meta.get("corpus") or {}).get("train_chars") or 0
    if chars > COPY_CHECK_MAX_CHARS:
        print(f"charlstm: {name}: no copy check (a training text of {chars:,} characters; the server checks up "
              f"to {COPY_CHECK_MAX_CHARS:,})", file=sys.stderr)
        return None
    try:
        checker = checker_for_model(model.meta, None, model.path, log=None)
    except CharlstmError as exc:
        print(f"charlstm: {name}: no copy check ({exc})", file=sys.stderr)
        return None
    return checker.check
