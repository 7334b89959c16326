"""The network in NumPy: the weights of a `.keras` file and everything that runs its layers.

`Network` holds the vocabulary, the recurrent layers, the Dense head and the model file's metadata, and runs
them: `forward` over whole sequences (a prime, a text to score), `step` one character per row (generation).
Every other part of generation (state.py, scoring.py, evaluation.py, items.py) takes a `Network`;
`CharModel` (model.py) is the facade that loads a file and delegates to these functions.

Every row (sample) of a step is computed as its own vector-matrix product, so a row's bits never depend on the
rows stacked with it: a request's text cannot depend on what else the server is running (`rowwise`). The first
layer's input projection is folded into a (V, gates) table, so a step starts with a row lookup, not a matmul.
"""

from __future__ import annotations

import copy
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError
from charlstm.generation.modelfile import check_layers, read_weights
from charlstm.generation.tags import split_tables, tag_index

State = list[tuple[np.ndarray, ...]]  # per layer: (h, c) for LSTM, (h,) for GRU, each (B, units)
UNKNOWN_CHAR = "\ufffd"  # what the unknown symbol's id generates as

_BLAS = None  # threadpoolctl's controller, made once (inspecting the loaded libraries takes milliseconds)


class OneBlasThread:
    """Inside `with`: BLAS on one thread (threadpoolctl), restored on exit.

    A batched step multiplies small matrices (64 x 128 by 128 x 512); OpenBLAS splits those over threads that
    then wait for each other, which on a busy machine is 10-30x slower than one thread. Batch 1 (a vector
    times a matrix) is left alone. The limit is held per step, never across a `yield`, so the caller's own
    NumPy work between generated characters keeps its threads.
    """

    def __init__(self, active: bool) -> None:
        self.active = active
        self.limiter: Any = None

    def __enter__(self) -> None:
        global _BLAS
        if self.active:
            if _BLAS is None:
                from threadpoolctl import ThreadpoolController

                _BLAS = ThreadpoolController()
            self.limiter = _BLAS.limit(limits=1, user_api="blas")  # applies at once

    def __exit__(self, *exc: object) -> None:
        if self.limiter is not None:
            self.limiter.restore_original_limits()
            self.limiter = None


ALL_BLAS_THREADS = OneBlasThread(False)  # a no-op, shared: batch 1 keeps BLAS' own threading


def rowwise(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w for x (B, K), computed row by row (one vector-matrix product per row, in one C loop).

    A matrix-matrix product picks its BLAS kernel by the number of rows and a row's place among them, and the
    kernels round differently (by ~1e-7): a row's logits would depend on which other rows it was stacked with.
    Row by row, each row's result is bit for bit what it is alone — so a request's text does not depend on
    the other requests stepped with it. No grouping of rows into matrix products kept that on this machine's
    OpenBLAS (measured: a row's bits follow its place in the kernel's tiles and the number of rows), so the
    price is paid: 64 rows of 128 x 512 take about 2x one 64-row matrix product, and 64 samples as one batch
    generate about a third fewer characters a second than with matrix products (benchmarks/README.md).
    Batch 1 is the same vector-matrix product either way.
    """
    if len(x) == 1:  # the same vector-matrix product (gemv), without the stacked loop's overhead
        return x @ w
    return (x[:, None, :] @ w)[:, 0, :]  # (B, 1, K) @ (K, N) -> (B, 1, N) -> (B, N)


@dataclass
class RecurrentLayer:
    """One LSTM or GRU layer in Keras' layout (gate order i, f, c, o for LSTM; z, r, h for GRU).

    For stepping, the weights are also kept in a fused layout: LSTM gates reordered to i, f, o, c, and every
    sigmoid gate's columns halved, so one tanh over all gates gives sigmoid(x) = 0.5 * tanh(x / 2) + 0.5 for
    the gates and tanh for the candidate. Halving is exact in floating point, so results are unchanged.
    """

    cell: str
    units: int
    kernel: np.ndarray  # (in, G*u)
    recurrent: np.ndarray  # (u, G*u)
    bias: np.ndarray  # LSTM: (4u,); GRU (reset_after): (2, 3u) = input bias, recurrent bias

    def __post_init__(self) -> None:
        u = self.units
        if self.cell == "lstm":
            order = np.r_[0 : 2 * u, 3 * u : 4 * u, 2 * u : 3 * u]  # (4u,): columns i, f, o, c
            scale = np.r_[np.full(3 * u, 0.5), np.ones(u)].astype(np.float32)  # (4u,)
            bias_in, self._bias_rec = self.bias[order] * scale, None  # (4u,)
        else:
            order = np.arange(3 * u)  # (3u,): columns z, r, h as Keras has them
            scale = np.r_[np.full(2 * u, 0.5), np.ones(u)].astype(np.float32)  # (3u,)
            bias_in = self.bias[0] * scale  # (3u,)
            self._bias_rec = np.ascontiguousarray(self.bias[1] * scale, dtype=np.float32)  # (3u,)
        self._kernel = np.ascontiguousarray(self.kernel[:, order] * scale, dtype=np.float32)  # (in, G*u)
        self._recurrent = np.ascontiguousarray(self.recurrent[:, order] * scale, dtype=np.float32)  # (u, G*u)
        self._bias_in = np.ascontiguousarray(bias_in, dtype=np.float32)  # (G*u,)

    @property
    def fused_kernel(self) -> np.ndarray:
        """The input kernel (in, G*u) in the fused gate layout `step` takes, for code that folds part of the
        input into a table of its own (a tagged model's tag rows: generation/tags.py)."""
        return self._kernel

    @property
    def fused_input_bias(self) -> np.ndarray:
        """The input bias (G*u,) in the fused gate layout (see `fused_kernel`)."""
        return self._bias_in

    def input_table(self, embedding: np.ndarray | None) -> np.ndarray:
        """The projected input (V, G*u) of every character id: `project(embedding)`, or, for one-hot input
        (no embedding), the fused kernel's rows plus the input bias."""
        table = self.project(embedding) if embedding is not None else self._kernel + self._bias_in
        return np.ascontiguousarray(table, dtype=np.float32)

    def project(self, x: np.ndarray, by_row: bool = False) -> np.ndarray:
        """The input's share of every gate, in the fused layout `step` takes: x @ kernel + input bias."""
        return (rowwise(x, self._kernel) if by_row else x @ self._kernel) + self._bias_in  # (..., in) -> (..., G*u)

    def zero_state(self, batch: int) -> tuple[np.ndarray, ...]:
        h = np.zeros((batch, self.units), np.float32)  # (B, u)
        return (h, h.copy()) if self.cell == "lstm" else (h,)

    def step(
        self, xproj: np.ndarray, state: tuple[np.ndarray, ...], by_row: bool = False
    ) -> tuple[np.ndarray, ...]:
        """Advance one time step given the projected input `project(x)` (B, G*u); returns the new state.
        by_row: every row's result independent of the other rows, bit for bit (see `rowwise`)."""
        mul = rowwise if by_row else np.matmul
        u = self.units
        if self.cell == "lstm":
            h, c = state  # (B, u) each
            z = mul(h, self._recurrent)  # (B, 4u): i, f, o, c
            z += xproj
            np.tanh(z, out=z)
            gates = z[:, : 3 * u]  # (B, 3u), a view
            gates *= 0.5
            gates += 0.5  # i, f, o are now sigmoids; z[:, 3u:] is tanh of the candidate
            c = z[:, u : 2 * u] * c  # (B, u): f * c
            c += z[:, :u] * z[:, 3 * u :]  # + i * candidate
            return z[:, 2 * u : 3 * u] * np.tanh(c), c  # h = o * tanh(c), (B, u)
        (h,) = state  # (B, u)
        r_all = mul(h, self._recurrent)  # (B, 3u): z, r, h
        r_all += self._bias_rec
        zr = xproj[:, : 2 * u] + r_all[:, : 2 * u]  # (B, 2u)
        np.tanh(zr, out=zr)
        zr *= 0.5
        zr += 0.5  # (B, 2u): the z and r sigmoids
        hh = zr[:, u:] * r_all[:, 2 * u :]  # (B, u): r * (h @ U_h + b_h), reset after
        hh += xproj[:, 2 * u :]
        np.tanh(hh, out=hh)  # (B, u): the candidate
        h = h - hh  # (B, u)
        h *= zr[:, :u]
        h += hh  # z * h + (1 - z) * hh
        return (h,)


class Network:
    """The weights and the step: a character model's layers, run in NumPy.

    Args:
        vocab: the model's vocabulary (id i is `vocab.chars[i]`; the unknown symbol, if any, is the last id).
        input_table: the Embedding's (V, E) table, or None for one-hot input.
        layers: the recurrent layers, first to last.
        dense_kernel, dense_bias: the head, (units, V) and (V,).
        meta: the model file's charlstm record (vocabulary, preprocessing, recipe, seeds, runs ...).
        window: the input window of a classic (lesson) model, None for the default recipe's.
        path: where it was loaded from (named in error messages), if anywhere.

    Attributes: `chars` (id -> character as generated, "\ufffd" for the unknown symbol) and `sampling_bias`
    (the head's bias with the unknown symbol at -inf: it is never generated), besides the arguments.
    """

    def __init__(
        self,
        *,
        vocab: Vocabulary,
        input_table: np.ndarray | None,
        layers: list[RecurrentLayer],
        dense_kernel: np.ndarray,
        dense_bias: np.ndarray,
        meta: dict[str, Any],
        window: int | None = None,
        path: str | None = None,
        tag_table: np.ndarray | None = None,
    ) -> None:
        self.vocab = vocab
        self.layers = layers
        self.dense_kernel = dense_kernel  # (units, V)
        self.dense_bias = dense_bias  # (V,)
        self.meta = meta
        self.window = window
        self.path = path
        self.chars: tuple[str, ...] = (*vocab.chars, UNKNOWN_CHAR)
        self.tags: tuple[str, ...] = tuple(meta.get("tags") or ())  # a tagged model's tags, in id order
        self.tag: str | None = None  # the tag this network generates in (`with_tag`; None: untagged)
        self.tag_table0: np.ndarray | None = None  # (K, G*u): each tag's share of layer 0's input (tags.py)
        if tag_table is not None:
            rows = input_table.shape[1] if input_table is not None else vocab.size
            self.base_table0, self.tag_table0 = split_tables(layers[0], input_table, tag_table, rows)
            self.tag = self.tags[0]  # the first tag until `with_tag` picks one
            self.table0 = self.base_table0 + self.tag_table0[0]
        else:
            self.table0 = layers[0].input_table(input_table)  # (V, G*u): layer 0's projected input per id
        self.sampling_bias = dense_bias.copy()  # (V,)
        if vocab.unknown_id is not None:
            self.sampling_bias[vocab.unknown_id] = -np.inf

    @property
    def recipe(self) -> str:
        return str(self.meta.get("recipe", "default"))

    @property
    def name(self) -> str:
        """How error messages name this model."""
        return self.path or "this model"

    # -- text <-> ids ---------------------------------------------------------------------------------------
    def prepare(self, text: str) -> str:
        """Apply the model's preprocessing (Unicode form, case, ASCII) to user text such as a prime."""
        pre = self.meta.get("preprocessing", {})
        form = pre.get("normalize", "none")
        if form and form != "none":
            text = unicodedata.normalize(form, text)
        if pre.get("lowercase"):
            text = text.lower()
        if pre.get("ascii_only"):
            text = text.encode("ascii", errors="ignore").decode("ascii")
        return text

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """The ids of `text` after `prepare`; unknown: error, skip or replace characters outside the vocabulary."""
        return self.vocab.encode(self.prepare(text), unknown=unknown)

    def with_tag(self, tag: str | None) -> Network:
        """This network in `tag` (a tagged model; None: as it is): a view sharing the weights whose layer-0
        table has the tag's row added, so a step costs what an untagged one does (generation/tags.py). An
        unknown tag, or a tag for an untagged model, is one line naming the tags it knows (field "tag")."""
        if tag is None:
            return self
        k = tag_index(self.tags, tag, self.name)
        if self.tags[k] == self.tag:
            return self
        view = copy.copy(self)
        view.tag = self.tags[k]
        view.table0 = np.ascontiguousarray(self.base_table0 + self.tag_table0[k], dtype=np.float32)  # (V, G*u)
        return view

    # -- running the layers ---------------------------------------------------------------------------------
    def initial_state(self, batch: int = 1) -> State:
        """The zero state for `batch` rows."""
        return [layer.zero_state(batch) for layer in self.layers]

    def forward(
        self, ids: np.ndarray, state: State | None = None, tags: np.ndarray | None = None
    ) -> tuple[np.ndarray, State]:
        """Logits (B, T, V) for ids (B, T), continuing from `state` (zero if None); returns the new state.
        tags (B,): a tagged model's tag id for each row (`tags.classify`), instead of this view's tag.

        Layer by layer over the whole sequence, so inputs above the first layer are projected with one
        matmul per layer rather than one per step. Always on one BLAS thread: a matrix product split over
        threads rounds differently from one on a single thread, and a prime read here must leave the same state
        whatever the machine's thread count or another thread's limit (the server's batchers) at that moment.
        """
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None, :]  # (1, T)
        batch, steps = ids.shape
        state = list(state) if state is not None else self.initial_state(batch)
        with OneBlasThread(True):
            xproj = self.table0[ids]  # (B, T, G*u)
            if tags is not None:  # each row in its own tag
                xproj = self.base_table0[ids] + self.tag_table0[np.asarray(tags)][:, None, :]
            hidden = None
            for n, layer in enumerate(self.layers):
                if n > 0:
                    xproj = layer.project(hidden)  # (B, T, units below) -> (B, T, G*u)
                outs = np.empty((batch, steps, layer.units), np.float32)  # (B, T, u)
                st = state[n]
                for t in range(steps):
                    st = layer.step(xproj[:, t], st)
                    outs[:, t] = st[0]
                state[n] = st
                hidden = outs
            return hidden @ self.dense_kernel + self.dense_bias, state  # (B, T, V)

    def logits(self, text_or_ids: str | np.ndarray) -> np.ndarray:
        """Logits (T, V) of one sequence read from the zero state: the next-character scores after each."""
        ids = self.encode(text_or_ids) if isinstance(text_or_ids, str) else np.asarray(text_or_ids)
        return self.forward(ids[None, :])[0][0]

    def step(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One time step for a batch of rows: feed `ids` (B,) after `state`; returns the logits for the next
        character (B, V; the unknown symbol masked to -inf) and the new state. What generation runs per
        character, for one request's rows or for the rows of many requests stacked together: every row is
        computed independently of the others, bit for bit (`rowwise`), so stacking never changes a text."""
        state = list(state)
        with self.blas_for(len(ids)):
            xproj = self.table0[ids]  # (B, G*u)
            for n, layer in enumerate(self.layers):
                if n > 0:
                    xproj = layer.project(state[n - 1][0], by_row=True)  # (B, u below) -> (B, G*u)
                state[n] = layer.step(xproj, state[n], by_row=True)
            return rowwise(state[-1][0], self.dense_kernel) + self.sampling_bias, state  # (B, V)

    @staticmethod
    def blas_for(rows: int) -> OneBlasThread:
        """`with network.blas_for(rows):` one BLAS thread when stepping several rows (see `OneBlasThread`)."""
        return OneBlasThread(True) if rows > 1 else ALL_BLAS_THREADS


def network_from_parts(
    config: dict[str, Any],
    meta: dict[str, Any],
    weights: list[list[np.ndarray]] | bytes,
    path: str | None = None,
) -> Network:
    """Assemble a `Network` from a Keras model config and per-layer weights (or the h5 bytes)."""
    layer_cfgs = config["config"]["layers"]
    classes = [lc["class_name"] for lc in layer_cfgs]
    check_layers(layer_cfgs, path)
    per_layer = read_weights(weights, classes) if isinstance(weights, bytes) else weights
    vocab = Vocabulary.from_json(meta["vocab"])
    input_table = tag_table = None
    rnn: list[RecurrentLayer] = []
    dense = None
    window = None
    for lc, w in zip(layer_cfgs, per_layer, strict=False):
        cls, cfg = lc["class_name"], lc["config"]
        if cls == "InputLayer":
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            if shape and len(shape) > 1 and shape[1] is not None:
                window = int(shape[1])
        elif cls == "Embedding" and cfg.get("name") == "tag_embedding":  # a tagged model's (training/model.py)
            tag_table = w[0]
        elif cls == "Embedding":
            input_table = w[0]
        elif cls in ("LSTM", "GRU"):
            rnn.append(RecurrentLayer(cls.lower(), int(cfg["units"]), w[0], w[1], w[2]))
        elif cls == "Dense":
            dense = (w[0], w[1])
    if not rnn or dense is None:
        raise CharlstmError(f"{path or 'model'}: expected recurrent layers and a Dense head")
    if tag_table is not None and len(meta.get("tags") or ()) != len(tag_table):
        raise CharlstmError(f"{path or 'model'}: a tag embedding of {len(tag_table)} rows, but charlstm.json lists "
                            f"{len(meta.get('tags') or ())} tags")
    return Network(
        vocab=vocab, input_table=input_table, layers=rnn, dense_kernel=dense[0], dense_bias=dense[1], meta=meta,
        window=window, path=path, tag_table=tag_table,
    )
