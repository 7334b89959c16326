"""The weights of one time step, as every export writes them, and the model's description for other runtimes.

`step_weights(model)` takes the loaded model (what `charlstm.load` returns, or its `Network`) and gives plain float32 arrays in
Keras' gate order (LSTM i, f, c, o; GRU z, r, h with the recurrent bias apart, reset_after):

    table      (V, G*u)   layer 0's input projection for every character id, input bias included: the
                          embedding (or one-hot) times the kernel, as the runtime folds it
    layers[n]  kernel (in, G*u) and input bias (G*u,) for n > 0, recurrent (u, G*u), GRU's recurrent bias (3u,)
    head       dense kernel (u, V), and the output bias with the unknown id at -inf (never generated)

`step(weights, ids, state)` is that step in NumPy, written the way the exports run it (used to measure what
8-bit weights cost: both sides through the same code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.generation.network import Network, OneBlasThread
from charlstm.generation.processors import DEFAULT_NO_REPEAT_NGRAM

FORMAT = "charlstm-step"
FORMAT_VERSION = 1


@dataclass
class Layer:
    cell: str  # "lstm" | "gru"
    units: int
    recurrent: np.ndarray  # (u, G*u)
    kernel: np.ndarray | None = None  # (in, G*u); None for layer 0 (its input comes from the table)
    input_bias: np.ndarray | None = None  # (G*u,); None for layer 0 (in the table)
    recurrent_bias: np.ndarray | None = None  # GRU (3u,)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("h", "c") if self.cell == "lstm" else ("h",)


@dataclass
class StepWeights:
    table: np.ndarray  # (V, G*u0)
    layers: list[Layer]
    dense_kernel: np.ndarray  # (u_last, V)
    output_bias: np.ndarray  # (V,), unknown id -inf

    def matrices(self) -> dict[str, np.ndarray]:
        """Every weight by its name in the exports, matrices and biases, in a fixed order."""
        out: dict[str, np.ndarray] = {"table": self.table}
        for n, layer in enumerate(self.layers):
            if layer.kernel is not None:
                out[f"layer{n}.kernel"] = layer.kernel
                out[f"layer{n}.input_bias"] = layer.input_bias  # type: ignore[assignment]
            out[f"layer{n}.recurrent"] = layer.recurrent
            if layer.recurrent_bias is not None:
                out[f"layer{n}.recurrent_bias"] = layer.recurrent_bias
        out["dense.kernel"] = self.dense_kernel
        out["dense.bias"] = self.output_bias
        return out

    @property
    def vocab_size(self) -> int:
        return int(self.table.shape[0])

    def parameters(self) -> int:
        return sum(int(a.size) for a in self.matrices().values())


def _unfuse(fused: np.ndarray, cell: str, units: int) -> np.ndarray:
    """The runtime's fused columns (LSTM i, f, o, c; sigmoid gates halved) back in Keras' order and scale.
    Halving and doubling are exact in floating point, so these are the runtime's own numbers."""
    u = units
    if cell == "lstm":
        order = np.r_[0 : 2 * u, 3 * u : 4 * u, 2 * u : 3 * u]
        scale = np.r_[np.full(3 * u, 0.5), np.ones(u)].astype(np.float32)
    else:
        order = np.arange(3 * u)
        scale = np.r_[np.full(2 * u, 0.5), np.ones(u)].astype(np.float32)
    out = np.empty_like(fused, dtype=np.float32)
    out[..., order] = fused / scale
    return out


def _runtime(model: Any) -> Network:
    """The `Network` (generation/network.py) that runs the layers: a CharModel's, or the network itself."""
    return getattr(model, "network", model)


def step_weights(model: Any) -> StepWeights:
    """The step's weights from a loaded model (see the module docstring)."""
    net = _runtime(model)
    layers = list(net.layers)
    if not layers:
        raise CharlstmError("this model has no recurrent layers to export")
    out_layers: list[Layer] = []
    for n, layer in enumerate(layers):
        if layer.cell not in ("lstm", "gru"):
            raise CharlstmError(f"layer {n}: {layer.cell!r} cannot be exported (LSTM and GRU can)")
        bias = np.asarray(layer.bias, np.float32)
        out_layers.append(Layer(
            cell=layer.cell,
            units=int(layer.units),
            recurrent=np.ascontiguousarray(layer.recurrent, np.float32),
            kernel=None if n == 0 else np.ascontiguousarray(layer.kernel, np.float32),
            input_bias=None if n == 0 else np.ascontiguousarray(bias if layer.cell == "lstm" else bias[0]),
            recurrent_bias=None if layer.cell == "lstm" else np.ascontiguousarray(bias[1]),
        ))
    table = _unfuse(np.asarray(net.table0, np.float32), layers[0].cell, int(layers[0].units))
    return StepWeights(
        table=np.ascontiguousarray(table),
        layers=out_layers,
        dense_kernel=np.ascontiguousarray(net.dense_kernel, np.float32),
        output_bias=np.ascontiguousarray(net.sampling_bias, np.float32),
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def initial_state(weights: StepWeights, batch: int = 1) -> list[np.ndarray]:
    """Zero states, flat: h0, c0, h1, ... in the order the exports take them."""
    return [np.zeros((batch, layer.units), np.float32) for layer in weights.layers for _ in layer.state_names]


def step(weights: StepWeights, ids: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One time step over a batch: ids (B,), flat state -> logits (B, V), new flat state."""
    x = weights.table[np.asarray(ids)]  # (B, G*u0)
    new: list[np.ndarray] = []
    at = 0
    h = None
    for n, layer in enumerate(weights.layers):
        u = layer.units
        if n > 0:
            x = h @ layer.kernel + layer.input_bias
        if layer.cell == "lstm":
            h_prev, c_prev = state[at], state[at + 1]
            z = x + h_prev @ layer.recurrent  # (B, 4u)
            i, f, g, o = _sigmoid(z[:, :u]), _sigmoid(z[:, u : 2 * u]), np.tanh(z[:, 2 * u : 3 * u]), _sigmoid(z[:, 3 * u :])
            c = f * c_prev + i * g
            h = o * np.tanh(c)
            new += [h, c]
            at += 2
        else:
            h_prev = state[at]
            r_all = h_prev @ layer.recurrent + layer.recurrent_bias  # (B, 3u)
            zg = _sigmoid(x[:, :u] + r_all[:, :u])
            rg = _sigmoid(x[:, u : 2 * u] + r_all[:, u : 2 * u])
            hh = np.tanh(x[:, 2 * u :] + rg * r_all[:, 2 * u :])
            h = zg * h_prev + (1 - zg) * hh
            new.append(h)
            at += 1
    return h @ weights.dense_kernel + weights.output_bias, new


def mean_loss(weights: StepWeights, ids: np.ndarray, streams: int = 32) -> float:
    """Mean next-character loss (nats/char) of `ids` read as `streams` contiguous pieces, each from a zero
    state (as `CharModel.evaluate` reads a text). The unknown id is never a target's only option: its logit
    is -inf here, so targets that are the unknown symbol are left out."""
    ids = np.asarray(ids, np.int64)
    streams = max(1, min(streams, (len(ids) - 1) // 2 or 1))
    per = (len(ids) - 1) // streams
    if per < 1:
        raise CharlstmError("the text to measure the loss on needs at least two characters")
    rows = np.stack([ids[s * per : s * per + per + 1] for s in range(streams)])  # (S, per + 1)
    state = initial_state(weights, streams)
    total, count = 0.0, 0
    # small matrix products: one BLAS thread (threads that wait for each other are many times slower)
    with OneBlasThread(True):
        for t in range(per):
            logits, state = step(weights, rows[:, t], state)
            z = logits.astype(np.float64)
            m = z.max(axis=-1, keepdims=True)
            logp = z - (np.log(np.exp(z - m).sum(axis=-1, keepdims=True)) + m)
            got = logp[np.arange(streams), rows[:, t + 1]]
            ok = np.isfinite(got)
            total -= float(got[ok].sum())
            count += int(ok.sum())
    return total / max(count, 1)


# -- the description other runtimes need ------------------------------------------------------------------
def describe(model: Any, weights: StepWeights) -> dict[str, Any]:
    """Everything a runtime other than charlstm needs to generate as `charlstm generate` does: vocabulary
    (a list of single characters: code points, so Chinese and emoji round-trip), preprocessing, special
    symbols, the recipe's sampling defaults and the step's inputs and outputs."""
    from charlstm.generation.generate import repeat_limits

    net = _runtime(model)
    meta = dict(net.meta or {})
    vocab = net.vocab
    recipe = net.recipe
    limits = repeat_limits(net, None)  # the model's default: "auto" (the training text's runs) or none
    items = meta.get("items") or None
    window = net.window
    state_inputs = [f"{name}{n}" for n, layer in enumerate(weights.layers) for name in layer.state_names]
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "vocabulary": list(vocab.chars),
        "vocab_size": int(vocab.size),
        "unknown_id": vocab.unknown_id,  # its logit is -inf in the step's output: it is never generated
        "preprocessing": {
            "normalize": str((meta.get("preprocessing") or {}).get("normalize", "none") or "none"),
            "lowercase": bool((meta.get("preprocessing") or {}).get("lowercase", False)),
            "ascii_only": bool((meta.get("preprocessing") or {}).get("ascii_only", False)),
        },
        "recipe": recipe,
        "sampling": {
            "temperature": 1.0,
            # the default recipe bans repeating any 20-character span; classic and Keras models sample as the
            # lesson did (generation/processors.py DEFAULT_NO_REPEAT_NGRAM)
            "no_repeat_ngram": _default_ngram(recipe),
            # the longest run of each character id that generation allows (None: no limit)
            "max_repeat": None if limits is None else [int(v) for v in limits],
        },
        "items": None if not items else {
            "boundary": str(items["boundary"]),
            "max_len": int(items.get("max_len", 100)),
        },
        "seeds": [str(s) for s in (meta.get("seeds") or [])][:20],
        "window": window,
        "layers": [{"cell": layer.cell, "units": layer.units} for layer in weights.layers],
        "inputs": ["ids", *state_inputs],
        "outputs": ["logits", *[f"{name}_out" for name in state_inputs]],
        "architecture": _architecture(weights),
    }


def _default_ngram(recipe: str) -> int:
    return DEFAULT_NO_REPEAT_NGRAM if recipe == "default" else 0


def _architecture(weights: StepWeights) -> str:
    names = [f"{layer.cell.upper()}({layer.units})" for layer in weights.layers]
    return f"{len(names)}x{names[0]}" if len(set(names)) == 1 and len(names) > 1 else "+".join(names)


def validation_ids(model: Any, limit: int = 50_000) -> tuple[np.ndarray, str] | None:
    """The model's validation text as its ids (at most `limit`), found from what the file records, with a
    description; None when the file does not say where its text is or it cannot be read."""
    from charlstm.data.cache import corpus_for_training
    from charlstm.data.sources import TextOptions

    net = _runtime(model)
    source = (net.meta.get("corpus") or {}).get("source")
    if not source:
        return None
    try:
        corpus = corpus_for_training(source, TextOptions.from_settings(dict(net.meta.get("config") or {})),
                                     verbose=False, download=False)
        val = np.asarray(corpus.val_ids[:limit])
        if len(val) < 2:
            return None
        text = corpus.vocab.decode(val)
    except (CharlstmError, OSError, KeyError, ValueError):
        return None
    return net.vocab.encode(text, unknown="skip"), f"the validation text of {source} ({len(val):,} characters)"


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)
