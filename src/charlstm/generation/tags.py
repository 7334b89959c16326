"""A tagged model in NumPy: the tag folded into layer 0's input table, and the tag a text is most likely in.

A tagged model's first recurrent layer reads [character embedding, tag embedding] (training/model.py), so
its input projection splits into the characters' share and the tag's: `table0[char] + tag_table0[tag]`,
where tag_table0 (K, gates) is the tag embedding projected through its rows of the kernel. Choosing a tag
for generation adds its row to the character table once (`tagged_table`): each step is then exactly the
untagged step, one row lookup, so a tag costs nothing per generated character. `classify` reads a text once
under every tag, K rows of one batch, and turns the K likelihoods into a posterior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError


def split_tables(
    layer: Any, input_table: np.ndarray | None, tag_table: np.ndarray, char_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """(table0 (V, G*u) with the input bias, tag_table0 (K, G*u)) from layer 0's fused kernel, whose first
    `char_rows` rows take the character's input (embedding or one-hot) and the rest the tag embedding."""
    kernel = layer.fused_kernel  # (char_rows + tag_dim, G*u), in the fused gate layout
    if kernel.shape[0] != char_rows + tag_table.shape[1]:
        raise CharlstmError(
            f"the first recurrent layer's kernel has {kernel.shape[0]} input rows, not {char_rows} + "
            f"{tag_table.shape[1]} (characters + tag embedding)"
        )
    chars = kernel[:char_rows] if input_table is None else input_table @ kernel[:char_rows]
    table0 = np.ascontiguousarray(chars + layer.fused_input_bias, dtype=np.float32)
    return table0, np.ascontiguousarray(tag_table @ kernel[char_rows:], dtype=np.float32)


def tag_index(tags: tuple[str, ...] | list[str], tag: str | None, where: str) -> int:
    """The id of `tag` (None: the first tag), or one line naming the tags the model knows."""
    if not tags:
        if tag is None:
            return -1
        raise _tag_error(f"{where} has no tags (trained without --tags); drop --tag")
    if tag is None:
        return 0
    if tag not in tags:
        shown = "empty" if not str(tag).strip() else repr(tag)
        raise _tag_error(f"{where}: unknown tag {shown}; the model knows {', '.join(tags)}")
    return list(tags).index(tag)


def _tag_error(message: str) -> CharlstmError:
    return CharlstmError(message, "tag")  # the server's 422 names the field (errors.py)


def parse_tags(value: str | None) -> list[str | None]:
    """`--tag a,b` -> ["a", "b"] (one sample each); None -> [None] (the model's default)."""
    if value is None:
        return [None]
    return [t.strip() for t in value.split(",")]


@dataclass
class Classified:
    """The posterior over a model's tags for one text, likeliest first, with each tag's log-likelihood."""

    tags: list[str]
    probs: np.ndarray  # (K,), summing to 1
    loglik: np.ndarray  # (K,) nats: the text's log-likelihood under each tag
    chars: int  # characters scored (all but the first)

    @property
    def best(self) -> str:
        return self.tags[int(np.argmax(self.probs))]

    def ranked(self) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs, kind="stable")
        return [(self.tags[i], float(self.probs[i])) for i in order]

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.best, "posterior": dict(self.ranked()), "chars": self.chars,
                "nats_per_char": {t: float(-ll / max(self.chars, 1)) for t, ll in zip(self.tags, self.loglik,
                                                                                       strict=True)}}


def posterior(loglik: np.ndarray) -> np.ndarray:
    z = loglik - loglik.max()
    p = np.exp(z)
    return p / p.sum()


def classify(model: Any, text: str, unknown: str = "skip") -> Classified:
    """The posterior over `model`'s tags (uniform prior) from the text's likelihood under each: the text read
    once, K rows (one per tag) of one batched pass from the zero state, every character after the first
    scored. A model without tags, or a text under 2 characters, is one clear line."""
    tags = list(getattr(model, "tags", ()) or ())
    if not tags:
        raise CharlstmError(f"{model.path or 'this model'} has no tags to classify into (trained without --tags)",
                            "tag")
    if model.meta.get("items"):  # an item is read as generation makes it: from its boundary to the next
        b = str(model.meta["items"]["boundary"])
        text = b + text.strip() + b
    ids = model.encode(text, unknown=unknown)
    if len(ids) < 2:
        raise CharlstmError("the text has fewer than 2 characters the model knows; nothing to classify")
    k = len(tags)
    rows = np.repeat(ids[None, :-1], k, axis=0)  # (K, T-1)
    logits, _ = model.forward(rows, tags=np.arange(k))  # (K, T-1, V)
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]  # (K, T-1)
    picked = logits[:, np.arange(len(ids) - 1), ids[1:]]  # (K, T-1)
    loglik = (picked - logz).sum(axis=1)
    return Classified(tags, posterior(loglik), loglik, len(ids) - 1)
