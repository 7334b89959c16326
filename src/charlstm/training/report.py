"""What a run says about itself: the metadata of its files, its opening lines, and how it ended.

`run_metadata` is what config.json and every model file record (recipe, config, model, vocabulary,
preprocessing, corpus, seeds, longest runs, the machine); `announce` prints the run's first lines;
`report` turns how fit ended (a signal, a NaN, the end) into the model handed over or a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any

import numpy as np

from charlstm.data.vocab import longest_runs
from charlstm.errors import TrainingDiverged, TrainingInterrupted
from charlstm.generation.model import CharModel
from charlstm.training import budget as budgets
from charlstm.training.device import describe
from charlstm.training.notebook import show_plot
from charlstm.training.plan import Budget, Data, Plan, Text, seeds


# -- phase 6: what the run's files say -----------------------------------------------------------------------
def run_metadata(plan: Plan, text: Text, spec: Any) -> dict[str, Any]:
    """Everything a model file and config.json say about the run (the training state is added per save)."""
    from charlstm.data.batches import (
        span,  # reads a prepared corpus from its file, not through its memory map
    )

    config, corpus = plan.config, text.corpus
    strip = corpus.meta["preprocessing"]["strip_gutenberg"]
    return {
        "recipe": config.recipe,
        "config": config.to_json(),
        "model": spec.to_json(),
        "vocab": text.vocab.to_json(),
        "preprocessing": {
            "normalize": config.text.normalize,
            "lowercase": config.text.lowercase,
            "ascii_only": config.text.ascii_only,
            "strip_gutenberg": strip if isinstance(strip, bool) else any(strip),
        },
        "corpus": {
            "source": plan.source,
            "name": corpus.name,
            "sha256": corpus.sha256,  # of the ids: text, options and vocabulary together
            "prepared": str(corpus.path) if corpus.path is not None else None,
            "chars": corpus.meta["chars"]["text"],
            "train_chars": int(len(text.train_ids)),
            "val_chars": int(len(text.val_ids)),
            "files": corpus.files[:50],
            "file_count": len(corpus.files),
        },
        # a list's samples start where an item starts: at its boundary symbol
        "seeds": [text.items.record["boundary"]] if text.items is not None
        else seeds(text.train_ids, text.vocab, 16, plan.config.maxlen, plan.config.seed),
        # each character's longest run in the training text, by id: generation never goes past it (max_repeat)
        "longest_runs": longest_runs(text.train_ids, text.vocab.size, read=span).tolist(),
        "trained_with": describe(),
        **({"items": text.items.record} if text.items is not None else {}),
        **(tag_metadata(plan, text) if text.tag_names else {}),
    }


def tag_metadata(plan: Plan, text: Text) -> dict[str, Any]:
    """A tagged model's record: its tags in id order, and default primes cut from each tag's own text."""
    config = plan.config
    tag_seeds = {}
    for t, name in enumerate(text.tag_names or []):
        if text.items is not None:
            tag_seeds[name] = [text.items.record["boundary"]]
        else:
            mine = np.asarray(text.train_ids)[np.asarray(text.train_tags) == t]
            tag_seeds[name] = seeds(mine, text.vocab, 4, config.maxlen, config.seed) if len(mine) else []
    return {"tags": list(text.tag_names or []), "tag_seeds": tag_seeds}


# -- phase 8: report -----------------------------------------------------------------------------------------
def report(plan: Plan, session: Any, wall: float) -> CharModel:
    """How the run ended: interrupted (exit 130), diverged, or done; the model it hands over.

    `session` is trainer.Session: its checkpoints, history, stopper and (budgeted) clock."""
    run_dir, checkpoints, stopper = plan.run_dir, session.checkpoints, session.stopper
    if stopper.interrupted and session.clock is not None:
        left = session.clock.schedule.remaining(session.clock.clock())
        raise TrainingInterrupted(
            f"stopped by {stopper.signal_name} with {budgets.format_duration(left)} of the time budget left; saved "
            f"{run_dir / 'last.keras'}. {resume_hint(run_dir)}"
        )
    if stopper.interrupted:
        where = "during" if stopper.partial else "at the end of"
        epoch = int(plan.state.get("epoch", 0)) + checkpoints.epochs_done + int(stopper.partial)
        raise TrainingInterrupted(
            f"stopped by {stopper.signal_name} {where} epoch {epoch}; saved {run_dir / 'last.keras'}. "
            f"{resume_hint(run_dir)}"
        )
    if checkpoints.diverged_at is not None:
        raise TrainingDiverged(
            f"the loss became NaN/inf in epoch {checkpoints.diverged_at}; stopped. The last good checkpoint is "
            f"{run_dir / 'last.keras'} (try a lower --lr or --clipnorm)"
        )
    if plan.config.verbose:
        last = session.history.rows[-1] if session.history.rows else {}
        val = (
            f", validation {last['val_loss']:.4f} nats/char = {last['val_bpc']:.4f} bits/char"
            if last.get("val_loss") is not None
            else ""
        )
        done = (
            f"{session.clock.describe_end()} (+ {session.clock.startup:.1f} s start-up)"
            if session.clock is not None
            else f"{len(session.history.rows)} epochs in {wall:.1f} s"
        )
        print(
            f"charlstm: {done}; final loss {last.get('loss', math.nan):.4f}"
            f" nats/char{val}; model saved to {run_dir / 'model.keras'}",
            flush=True,
        )
        show_plot(run_dir / "loss.png")  # inline, in a notebook (the file stays in the run directory)
    from charlstm.generation.model import load

    return load((session.out_dir or run_dir) / "model.keras")


def resume_hint(run_dir: Path) -> str:
    """How to continue an interrupted run, from a shell and from Python (a notebook)."""
    return f"Resume with: charlstm train --resume {run_dir} (in Python: charlstm.train(out={str(run_dir)!r}, resume=True))"


def _replicas(meta: dict[str, Any]) -> str:
    dist = meta.get("distribute", {})
    if dist.get("kind", "none") == "none":
        return ""
    return (
        f" ({dist['kind']}: {dist['replicas']} replicas in {dist['processes']} process(es), "
        f"global batch {dist['global_batch_size']})"
    )


def announce(
    plan: Plan, text: Text, data: Data, meta: dict[str, Any], budget: Budget | None = None,
    clock: Callable[[], float] = monotonic,
) -> None:
    config, vocab = plan.config, text.vocab
    arch = f"{config.layers}x{config.cell.upper()}({config.units})"
    where = meta["trained_with"]
    length = (
        f"for {budgets.format_duration(budget.schedule.remaining(clock()))} ({config.lr_schedule} schedule)"
        if budget is not None
        else f"{data.steps} batches/epoch"
    )
    print(
        f"charlstm: training {arch} ({config.recipe} recipe) on {text.corpus.name}: {len(text.train_ids):,} train / "
        f"{len(text.val_ids):,} validation chars, vocabulary {vocab.size}, {length}, "
        f"{where['backend']} on {where['device']['kind']}{_replicas(meta)} -> {plan.run_dir}",
        flush=True,
    )
    if budget is not None and budget.sizing is not None:
        s = budget.sizing
        print(f"charlstm: sized for the budget: {s.layers} x {config.cell.upper()}({s.units}), dropout {s.dropout:g}: "
              f"{s.why}", flush=True)
    if vocab.has_unknown:
        print(
            f"charlstm: the vocabulary keeps {vocab.coverage:.2%} of the text's characters; the rarest "
            "become one unknown symbol (never generated)",
            flush=True,
        )


