"""Fine-tuning on a text with characters the model lacks (`--init-from MODEL`): the vocabulary grows, and with
it the model's two vocabulary-sized layers, while every other weight is kept.

The old characters keep their ids (the new ones are appended, before the unknown symbol if the model has
one), so the grown model computes exactly the old logits for the old characters until training moves it:
- input rows of a new character (the Embedding, or the first recurrent kernel of a one-hot model): the mean
  of the old rows — a "typical character" the first steps refine (measured against random rows in
  benchmarks/README.md);
- output column of a new character: zeros, and its bias the log of its frequency in the new text, offset as
  the old biases sit relative to the old characters' frequencies, so the model starts by predicting it about
  as often as it occurs, independent of context.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from charlstm.data.vocab import Vocabulary


def grown_vocab(old: Vocabulary, text_chars: tuple[str, ...]) -> tuple[Vocabulary, tuple[str, ...]]:
    """The old vocabulary plus the characters of the new text it lacks (in code-point order), and those."""
    if old.has_unknown:  # rare characters already have a symbol: they map to it, as before
        return old, ()
    added = tuple(sorted(c for c in set(text_chars) if c not in old))
    if not added:
        return old, ()
    return Vocabulary((*old.chars, *added), coverage=old.coverage, max_vocab=old.max_vocab,
                      min_count=old.min_count), added


def id_mapping(old: Vocabulary, new: Vocabulary) -> np.ndarray:
    """For each new id, the old id it continues (-1 for an added character)."""
    index = {c: i for i, c in enumerate(old.chars)}
    out = np.array([index.get(c, -1) for c in new.chars] + ([old.unknown_id] if new.has_unknown else []))
    return out


def output_bias(old_bias: np.ndarray, mapping: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """The grown output bias: old entries kept; new ones at log-frequency + the old biases' mean offset."""
    kept = mapping >= 0
    seen = kept & (freq > 0)
    offset = float(np.mean(old_bias[mapping[seen]] - np.log(freq[seen]))) if seen.any() else 0.0
    out = np.empty(len(mapping), dtype=old_bias.dtype)
    out[kept] = old_bias[mapping[kept]]
    out[~kept] = np.log(np.maximum(freq[~kept], 1e-9)) + offset
    return out


def grow_weights(old_weights: list[np.ndarray], new_shapes: list[tuple[int, ...]], old_size: int,
                 mapping: np.ndarray, freq: np.ndarray) -> list[np.ndarray]:
    """The old model's weights in the grown model's shapes: along every axis that grew from the old
    vocabulary's size to the new one, old entries are moved to their ids and new ones filled by the rules
    above (a 1-D weight that grew is the output bias; a 2-D one grown along its last axis, the output kernel)."""
    out = []
    new_size = len(mapping)
    kept = mapping >= 0
    for w, shape in zip(old_weights, new_shapes, strict=True):
        if tuple(w.shape) == tuple(shape):
            out.append(w)
            continue
        axes = [a for a, (o, n) in enumerate(zip(w.shape, shape, strict=True)) if o != n]
        assert all(w.shape[a] == old_size and shape[a] == new_size for a in axes), (w.shape, shape)
        if w.ndim == 1:
            out.append(output_bias(w, mapping, freq))
            continue
        g = w
        added = np.flatnonzero(~kept)
        for a in axes:
            grown = np.take(g, np.maximum(mapping, 0), axis=a)  # old entries at their ids (new ones: placeholders)
            idx: list[Any] = [slice(None)] * g.ndim
            idx[a] = added
            if a == g.ndim - 1:  # the output kernel's columns: zero (the bias alone sets a new character's odds)
                grown[tuple(idx)] = 0.0
            else:  # input rows (Embedding, or a one-hot model's first kernel): the mean of the old rows
                grown[tuple(idx)] = g.mean(axis=a, keepdims=True)
            g = grown
        out.append(g.astype(w.dtype))
    return out


def describe(added: tuple[str, ...], model: str) -> str:
    shown = ", ".join(repr(c) for c in added[:20]) + (" ..." if len(added) > 20 else "")
    return (f"charlstm: fine-tuning {model} adds {len(added)} character{'s' if len(added) != 1 else ''} it lacked: "
            f"{shown} (input rows: the mean of the others; output: bias at log-frequency)")


def frequencies(vocab: Vocabulary, counts: dict[str, int]) -> np.ndarray:
    total = sum(counts.values()) or 1
    freq = [counts.get(c, 0) / total for c in vocab.chars]
    if vocab.has_unknown:
        freq.append(0.0)
    return np.array(freq, dtype=np.float64)


def grow_model(model: Any, old_model: Any, old: Vocabulary, new: Vocabulary, counts: dict[str, int]) -> None:
    """Set the grown (new, built) Keras model's weights from the old one's."""
    mapping = id_mapping(old, new)
    weights = grow_weights([np.asarray(w) for w in old_model.get_weights()],
                           [tuple(w.shape) for w in model.get_weights()], old.size, mapping,
                           frequencies(new, counts))
    model.set_weights(weights)



def grow_tags(model: Any, old_model: Any, grow: dict[str, Any] | None) -> None:
    """Set a (new, built) tagged Keras model's weights from the old tagged one's, layer by layer: the tag
    embedding gains a row per new tag (the mean of the old tags' rows; the old rows, and so the old tags'
    outputs, unchanged), and `grow` (the vocabulary's, if it grew too) applies to the vocabulary-sized layers."""
    for layer in model.layers:
        new = layer.get_weights()
        if not new:
            continue
        old = [np.asarray(w) for w in old_model.get_layer(layer.name).get_weights()]
        if layer.name == "tag_embedding" and old[0].shape != new[0].shape:
            extra = np.repeat(old[0].mean(axis=0, keepdims=True), new[0].shape[0] - old[0].shape[0], axis=0)
            old = [np.concatenate([old[0], extra]).astype(old[0].dtype)]
        elif grow is not None and [w.shape for w in old] != [w.shape for w in new]:
            old = grow_weights(old, [tuple(w.shape) for w in new], grow["old"].size,
                               id_mapping(grow["old"], grow["new"]), frequencies(grow["new"], grow["counts"]))
        layer.set_weights(old)
