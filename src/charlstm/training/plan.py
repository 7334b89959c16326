"""The first phases of train(): settings -> text -> data (docs/architecture.md's one path, up to the batches).

`plan_run` turns a recipe and overrides (or a resumed run's saved config) into a `Plan`; `read_text` reads
the source as ids through data's prepared-corpus path (memory-mapped or in memory) and picks the vocabulary
(new, resumed or inherited from a fine-tuned model); `make_data` lays out the recipe's batches. Each phase
is one call with plain values, so the trainer reads as a list of them.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from charlstm.data.corpus import Corpus, preprocess
from charlstm.data.prepared import PreparedCorpus
from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError
from charlstm.training import budget as budgets
from charlstm.training import strategy as strategies
from charlstm.training.recipes import TrainConfig, make_config

# settings a fine-tuned model must share with the model it starts from
ARCHITECTURE_KEYS = (
    "mode", "maxlen", "input", "embedding_dim", "cell", "layers", "units", "normalize", "lowercase", "ascii_only",
)


@dataclass
class Plan:
    """What the settings phase decides: the full config, the source, the run directory, and what the run
    continues from (a resumed run's saved metadata, or the model a fine-tuning starts from)."""

    config: TrainConfig
    source: str
    run_dir: Path | None
    resumed: dict[str, Any] | None = None  # last.keras metadata when resuming
    init_from: str | None = None
    init_meta: dict[str, Any] | None = None
    explicit: dict[str, Any] = field(default_factory=dict)  # settings given (not recipe defaults; they beat any rule)
    added_time: float | None = None  # seconds this call adds (a fresh budgeted run: all of them)
    grow: dict[str, Any] | None = None  # fine-tuning that adds characters: old and new vocabulary, counts (grow.py)
    tag_grow: dict[str, Any] | None = None  # fine-tuning that adds tags: old and new tag lists (grow.py)
    entered: float = field(default_factory=time.monotonic)  # when train() began (start-up is measured from here)

    @property
    def state(self) -> dict[str, Any]:
        return (self.resumed or {}).get("train_state", {})


@dataclass
class Text:
    """The text phase's result: the encoded corpus (data.cache: memory-mapped, or in memory for small
    texts), the model's vocabulary, and the split in that vocabulary's ids."""

    corpus: PreparedCorpus
    vocab: Vocabulary
    train_ids: np.ndarray  # or batches.RemappedIds when a fine-tuned model's vocabulary numbers differently
    val_ids: np.ndarray
    items: Any = None  # data.items.ItemText of a list (--items): the ids above are its B item B ... streams
    tag_names: list[str] | None = None  # a tagged text (data/tags.py): the tags, and the tag id at every position
    train_tags: np.ndarray | None = None
    val_tags: np.ndarray | None = None


@dataclass
class Data:
    train: Any  # batches.EpochBatches
    val: Any | None
    steps: int  # batches per epoch
    tag_val: list[tuple[str, Any]] = field(default_factory=list)  # a tagged run: (tag, its validation batches)
    carry: Any = None  # carry.CarriedState when `train` is a streams layout whose state the step carries
    carry_off: str | None = None  # why the state is not carried (None: it is)


@dataclass
class Budget:
    """A time-budgeted run's plan: its schedule, where the data stream starts, the checkpoint interval."""

    schedule: budgets.BudgetSchedule
    position: tuple[int, int]  # (data epoch, batch) to start from
    interval: int  # optimizer steps per checkpoint interval (one Keras epoch)
    sizing: budgets.Sizing | None = None
    val_chars: int | None = None  # validation is bounded to this many characters
    startup: float = 0.0  # seconds from train() to the clock's start (reading the text, loading Keras)



# -- helpers used by more than one phase (and by benchmarks) -------------------------------------------
def _prepare_text(corpus: Corpus, config: TrainConfig) -> str:
    opts = config.text
    strip = opts.strip_gutenberg if opts.strip_gutenberg is not None else corpus.gutenberg
    return preprocess(
        corpus.text,
        strip_gutenberg_text=strip,
        normalize=opts.normalize,
        lowercase=opts.lowercase,
        ascii_only=opts.ascii_only,
    )


def seeds(ids: Any, vocab: Vocabulary, count: int, length: int, seed: int, clean: bool = True) -> list[str]:
    """Random `length`-character snippets of the training text (ids): default primes, as the lesson picks them.

    With a `vocab` that maps rare characters to the unknown symbol, only snippets made entirely of kept
    characters qualify (failing enough of those, snippets with their rare characters dropped), so a default
    prime encodes under `--unknown error` too. Only the snippets are decoded, so a memory-mapped gigabyte
    costs nothing here.
    """
    if len(ids) <= length:
        return [vocab.decode(ids[:])]
    rng = np.random.default_rng([seed, 99])
    picks = [np.asarray(ids[i : i + length]) for i in rng.integers(0, len(ids) - length, size=count)]
    if not clean or not vocab.has_unknown:
        return [vocab.decode(p) for p in picks]
    unk = vocab.unknown_id
    good = [vocab.decode(p) for p in picks if unk not in p]
    for i in rng.integers(0, len(ids) - length, size=50 * count):
        if len(good) >= count:
            break
        snippet = np.asarray(ids[i : i + length])
        if unk not in snippet:
            good.append(vocab.decode(snippet))
    dropped = [vocab.decode(p[p != unk]) for p in picks if unk in p]
    return good + [s for s in dropped if s][: count - len(good)]


def default_run_dir(corpus_name: str) -> Path:
    return Path("runs") / f"{corpus_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# -- phase 1: settings -------------------------------------------------------------------------------------
def plan_run(
    source: str | os.PathLike[str] | None,
    recipe: str,
    out: str | os.PathLike[str] | None,
    resume: bool,
    init_from: str | os.PathLike[str] | None,
    settings: dict[str, Any],
) -> Plan:
    """The whole config: a recipe plus overrides, or a resumed run's own config (epochs may grow)."""
    from charlstm.training.saving import read_meta

    if resume:
        if out is None:
            raise CharlstmError("--resume needs the run directory")
        run_dir = Path(out)
        last = run_dir / "last.keras"
        if not last.is_file():
            raise CharlstmError(f"{run_dir}: no last.keras to resume from (is this a charlstm run directory?)")
        saved = read_meta(last)
        config = TrainConfig.from_json(saved["config"])
        added = budgets.parse_duration(settings["time"]) if settings.get("time") is not None else None
        if settings.get("epochs"):
            if config.time_budget or added:
                raise CharlstmError(f"{run_dir} trains for a time budget; add time with --time (e.g. --time 5m)")
            config.epochs = int(settings["epochs"])
        if added:
            config.time_budget = (config.time_budget or 0.0) + added
            if config.lr_schedule == "step":
                config.lr_schedule = "cosine"
        if settings.get("verbose") is not None:
            config.verbose = settings["verbose"]
        config.validate()
        return Plan(config, saved["corpus"]["source"], run_dir, resumed=saved, added_time=added)
    if source is None:
        raise CharlstmError("give a text source: a file, a folder or a named corpus")
    injected: set[str] = set()  # settings the budget sets, which the user did not give
    seconds = budgets.parse_duration(settings.pop("time")) if settings.get("time") is not None else None
    if seconds is not None:
        if settings.get("epochs") is not None:
            raise CharlstmError("give --time or --epochs, not both (a time budget sets the length of the run)")
        settings["time_budget"] = seconds
        injected.add("time_budget")
        if settings.get("lr_schedule") is None and recipe == "default":
            settings["lr_schedule"] = budgets.DEFAULT_SHAPE
            injected.add("lr_schedule")
    settings.pop("time", None)
    init_meta = None
    if init_from is not None:
        init_meta = read_meta(init_from)
        base = init_meta["config"]
        arch = {k: base[k] for k in ARCHITECTURE_KEYS}
        if base.get("tag_dim") is not None and base.get("tags"):  # a tagged model's tag embedding too
            arch["tag_dim"] = base["tag_dim"]
        settings = {**arch, **{k: v for k, v in settings.items() if k not in arch}}
        recipe = base.get("recipe", recipe)
    config = make_config(recipe, **settings)
    run_dir = Path(out) if out is not None else None
    if run_dir is not None and (run_dir / "last.keras").exists():
        raise CharlstmError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise CharlstmError("--tensorboard needs the tensorboard package: pip install tensorboard")
    if init_from is not None:  # the inherited vocabulary decides which characters are rare, not these
        config.text = replace(config.text, max_vocab=None, min_count=1)
    return Plan(
        config, str(source), run_dir, init_from=str(init_from) if init_from else None, init_meta=init_meta,
        explicit={k: v for k, v in settings.items() if v is not None and k not in injected}, added_time=seconds,
    )


# -- phase 2: text and vocabulary ----------------------------------------------------------------------------
def read_text(plan: Plan) -> Text:
    """The corpus as ids (data.cache: a prepared DIR memory-mapped, a big text prepared once into the cache,
    a small one in memory: one path), the vocabulary (new, resumed or inherited) and the split."""
    from charlstm.data.batches import RemappedIds
    from charlstm.data.cache import corpus_for_training

    config = plan.config
    explicit = {} if plan.resumed is not None else plan.explicit
    corpus = corpus_for_training(plan.source, config.text, explicit=explicit, verbose=bool(config.verbose),
                                 tags=config.tags if config.tags in ("folder", "file") else None)
    config.text = corpus.options  # a prepared DIR brings its own text options: config.json tells what was used
    if plan.resumed is not None:
        if corpus.sha256 != plan.resumed["corpus"]["sha256"]:
            raise CharlstmError(
                f"{plan.source}: the text changed since the run in {plan.run_dir} started (sha256 differs); "
                "resuming would train on different data: restore the text or start a new run"
            )
        vocab = Vocabulary.from_json(plan.resumed["vocab"])
    elif plan.init_meta is not None:
        vocab = _grown(plan, corpus, Vocabulary.from_json(plan.init_meta["vocab"]))
    else:
        vocab = corpus.vocab
    if config.items:
        return _item_text(plan, corpus, vocab if vocab is not corpus.vocab else None)
    table = _id_map(corpus.vocab, vocab, plan.init_from or plan.source)
    if "tags" in corpus.meta:  # every tag's text split on its own (data/tags.py), in memory
        from charlstm.data.tags import split_by_tag

        config.tags = config.tags or "folder"
        ids = RemappedIds(corpus.ids, table) if table is not None else corpus.ids  # the split is per tag
        split = split_by_tag(ids, corpus.meta["tags"], config.text.val_frac, plan.source)
        names, train_tags, val_tags = _tag_names(plan, split.names, split.train_tags, split.val_tags)
        return Text(corpus, vocab, split.train_ids, split.val_ids, tag_names=names, train_tags=train_tags,
                    val_tags=val_tags)
    if model_tags(plan.resumed) or model_tags(plan.init_meta):
        raise CharlstmError(f"{plan.init_from or plan.source}: the model is tagged; give the text's tags "
                            "(--tags folder|file)")
    train_ids, val_ids = corpus.train_ids, corpus.val_ids
    if table is not None:
        train_ids, val_ids = RemappedIds(train_ids, table), RemappedIds(val_ids, table)
    return Text(corpus, vocab, train_ids, val_ids)


def model_tags(meta: dict[str, Any] | None) -> list[str]:
    """The tags a model (its charlstm.json metadata) was trained with; [] for an untagged one."""
    return list((meta or {}).get("tags") or [])


def _tag_names(plan: Plan, names: list[str], *tags: np.ndarray) -> tuple[Any, ...]:
    """The model's tags: the text's (new), the run's (resumed) or the fine-tuned model's plus the new text's
    new ones (appended: the old ids keep their meaning); each tag array renumbered into them."""
    from charlstm.data.tags import tag_dtype

    base = model_tags(plan.resumed) or model_tags(plan.init_meta)
    if (plan.resumed is not None or plan.init_meta is not None) and not base:
        raise CharlstmError(f"{plan.init_from or plan.run_dir}: the model has no tags; train a tagged model "
                            "from scratch (fine-tuning cannot add the tag input)")
    if not base:
        return (names, *tags)
    want = base + [n for n in names if n not in base]
    if plan.init_meta is not None and len(want) > len(base):
        plan.tag_grow = {"old": base, "new": want}
        if plan.config.verbose:
            print(f"charlstm: new tags added to the model: {', '.join(want[len(base):])}", flush=True)
    table = np.array([want.index(n) for n in names], dtype=np.int64)
    dtype = tag_dtype(len(want))
    return (want, *(table[np.asarray(t, dtype=np.int64)].astype(dtype) for t in tags))


def _grown(plan: Plan, corpus: Any, old: Vocabulary) -> Vocabulary:
    """The fine-tuned model's vocabulary: the old one, plus the new text's characters it lacks (grow.py)."""
    from charlstm.data.items import boundary_for
    from charlstm.training.grow import describe, grown_vocab

    chars = tuple(corpus.vocab.chars)
    counts = dict(zip(corpus.vocab.chars, corpus.meta["vocab"]["counts"], strict=False))
    if plan.config.items:
        b = boundary_for(plan.config.item_sep)
        chars += (b,)
        counts.setdefault(b, counts.get("\n", 1))
    vocab, added = grown_vocab(old, chars)
    if added:
        plan.grow = {"old": old, "new": vocab, "added": added, "counts": counts}
        if plan.config.verbose:
            print(describe(added, plan.init_from or "the model"), flush=True)
    return vocab


def _item_text(plan: Plan, corpus: Any, vocab: Vocabulary | None) -> Text:
    """A list's items (data/items.py): the whole text cut into items, a random sample held out (or the
    --val-file's items), in the items' vocabulary (a resumed or fine-tuned model's own, if given)."""
    from charlstm.data.batches import span
    from charlstm.data.items import ITEMS_MAX_CHARS, split_items

    config = plan.config
    if len(corpus.ids) > ITEMS_MAX_CHARS:
        raise CharlstmError(f"{plan.source}: --items reads the list into memory, up to {ITEMS_MAX_CHARS:,} "
                            f"characters; this one has {len(corpus.ids):,}")
    decode = corpus.vocab.decode
    if corpus.meta.get("val_file"):
        text, val_text = decode(span(corpus.train_ids, 0, len(corpus.train_ids))), decode(
            span(corpus.val_ids, 0, len(corpus.val_ids)))
    else:
        text, val_text = decode(span(corpus.ids, 0, len(corpus.ids))), None
    opts = config.text
    items = split_items(text, config.item_sep, val_frac=opts.val_frac, seed=config.seed, val_text=val_text,
                        vocab=vocab, max_vocab=opts.max_vocab, min_count=opts.min_count, source=plan.source,
                        tag_field=config.tag_field, field_sep=config.item_field_sep)
    if items.tag_names is None:
        if model_tags(plan.resumed) or model_tags(plan.init_meta):
            raise CharlstmError(f"{plan.source}: the model is tagged; give --tag-field N for the items' tags")
        return Text(corpus, items.vocab, items.train, items.val, items=items)
    names, train_tags, val_tags = _tag_names(plan, items.tag_names, items.train_tags, items.val_tags)
    return Text(corpus, items.vocab, items.train, items.val, items=items, tag_names=names, train_tags=train_tags,
                val_tags=val_tags)


def _id_map(have: Vocabulary, want: Vocabulary, model: str) -> np.ndarray | None:
    """corpus id -> model id, when a fine-tuned (or resumed fine-tuning) model numbers characters otherwise."""
    if have.chars == want.chars and have.has_unknown == want.has_unknown:
        return None
    ids = want.encode("".join(have.chars), unknown="replace" if want.has_unknown else "skip")
    missing = [c for c in have.chars if c not in want] if not want.has_unknown else []
    if missing or (have.has_unknown and not want.has_unknown):
        shown = ", ".join(repr(c) for c in missing[:20]) or "its rare-character symbol"
        raise CharlstmError(
            f"{model}: its vocabulary lacks {len(missing)} character(s) of the new text: {shown}; "
            "fine-tuning needs the same vocabulary (clean the text, or train from scratch)"
        )
    return np.append(ids, want.unknown_id or 0).astype(np.int32)  # the last entry: the corpus' own unknown


# -- phase 3: data -------------------------------------------------------------------------------------------
def make_data(config: TrainConfig, text: Text, dist: strategies.Distributed | None = None) -> Data:
    """Training and validation batches in the recipe's layout (the lesson's windows, or sequences); when
    distributed, global batches of batch_size x replicas rows, of which this process feeds its share."""
    from charlstm.data.batches import StreamBatches, make_sequence_batches, make_window_batches
    from charlstm.training import carry

    dist = dist or strategies.Distributed()
    batch = config.batch_size * dist.replicas
    state = None  # the carried state, when the streams layout applies (training/carry.py)
    carry_off = carry.why_not(config, backend=os.environ.get("KERAS_BACKEND", ""), tagged=bool(text.tag_names),
                              items=text.items is not None, replicas=dist.replicas * dist.num_processes,
                              chars=len(text.train_ids), batch=batch)
    if text.items is not None:
        from charlstm.data.item_batches import ItemBatches

        b = text.items.boundary
        train = ItemBatches(text.train_ids, b, config.seq_len, batch, config.seed, tags=text.train_tags)
        val = ItemBatches(text.val_ids, b, config.seq_len, batch, config.seed, shuffle=False,
                          tags=text.val_tags) if len(text.val_ids) >= 2 else None
    elif config.mode == "windows":
        train = make_window_batches(text.train_ids, config.maxlen, config.step, batch, config.seed)
        val = (
            make_window_batches(text.val_ids, config.maxlen, config.step, batch, config.seed, shuffle=False)
            if len(text.val_ids) > config.maxlen
            else None
        )
    else:
        if carry_off is None:
            train = StreamBatches(text.train_ids, config.seq_len, batch, config.seed, config.carry_reset)
            state = carry.CarriedState()
        else:
            train = make_sequence_batches(text.train_ids, config.seq_len, batch, config.seed, tags=text.train_tags,
                                          balance=config.tag_balance == "equal")
        val = (
            make_sequence_batches(text.val_ids, config.seq_len, batch, config.seed, shuffle=False,
                                  tags=text.val_tags)
            if len(text.val_ids) >= 2
            else None
        )
    for batches in (train, val):
        if batches is not None:
            batches.distribute(dist.replicas, dist.process_id, dist.num_processes)
    if val is not None and len(val) == 0:  # fewer validation rows than replicas
        val = None
    return Data(train, val, len(train), tag_validation(config, text, batch) if val is not None else [],
                carry=state, carry_off=carry_off)


def without_carry(config: TrainConfig, text: Text, data: Data, why: str) -> Data:
    """The same data in the sequences layout, when the model turns out unable to carry its state."""
    from charlstm.data.batches import make_sequence_batches

    train = make_sequence_batches(text.train_ids, config.seq_len, data.train.batch_size, config.seed)
    train.distribute(data.train.replicas, *data.train.shard)
    return replace(data, train=train, steps=len(train), carry=None, carry_off=why)


def tag_validation(config: TrainConfig, text: Text, batch: int) -> list[tuple[str, Any]]:
    """Each tag's own validation batches (its held-out text alone): the loss per tag in metrics.csv."""
    from charlstm.data.batches import make_sequence_batches
    from charlstm.data.item_batches import ItemBatches

    if not text.tag_names or text.val_tags is None:
        return []
    out = []
    val_ids, val_tags = np.asarray(text.val_ids), np.asarray(text.val_tags)
    for t, name in enumerate(text.tag_names):
        mine = val_tags == t
        if text.items is not None:  # whole items: from a boundary on, each stream closed by one
            ids = val_ids[mine]
            ids = ids if len(ids) and ids[-1] == text.items.boundary else np.append(ids, text.items.boundary)
            if mine.sum() >= 2:
                out.append((name, ItemBatches(ids, text.items.boundary, config.seq_len, batch, config.seed,
                                              shuffle=False, tags=np.full(len(ids), t))))
        elif mine.sum() >= 2:
            out.append((name, make_sequence_batches(val_ids[mine], config.seq_len, batch, config.seed,
                                                    shuffle=False, tags=val_tags[mine])))
    return out

