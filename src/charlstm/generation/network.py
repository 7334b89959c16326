"""The network's one time step in NumPy: LSTM and GRU layers as Keras stores them, row by row.

Every row (sample) is computed as its own vector-matrix product, so a row's bits never depend on the rows
stacked with it: a request's text cannot depend on what else the server is running (`rowwise`). The first
layer's input projection is folded into a (V, gates) table by the model (model.py), so a step starts with a
row lookup, not a matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
    return (x[:, None, :] @ w)[:, 0, :]


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
            order = np.r_[0 : 2 * u, 3 * u : 4 * u, 2 * u : 3 * u]  # i, f, o, c
            scale = np.r_[np.full(3 * u, 0.5), np.ones(u)].astype(np.float32)
            bias_in, self._bias_rec = self.bias[order] * scale, None
        else:
            order = np.arange(3 * u)
            scale = np.r_[np.full(2 * u, 0.5), np.ones(u)].astype(np.float32)
            bias_in = self.bias[0] * scale
            self._bias_rec = np.ascontiguousarray(self.bias[1] * scale, dtype=np.float32)
        self._kernel = np.ascontiguousarray(self.kernel[:, order] * scale, dtype=np.float32)
        self._recurrent = np.ascontiguousarray(self.recurrent[:, order] * scale, dtype=np.float32)
        self._bias_in = np.ascontiguousarray(bias_in, dtype=np.float32)

    def input_bias(self) -> np.ndarray:
        return self.bias if self.cell == "lstm" else self.bias[0]

    def project(self, x: np.ndarray, by_row: bool = False) -> np.ndarray:
        """The input's share of every gate, in the fused layout `step` takes: x @ kernel + input bias."""
        return (rowwise(x, self._kernel) if by_row else x @ self._kernel) + self._bias_in

    def zero_state(self, batch: int) -> tuple[np.ndarray, ...]:
        h = np.zeros((batch, self.units), np.float32)
        return (h, h.copy()) if self.cell == "lstm" else (h,)

    def step(
        self, xproj: np.ndarray, state: tuple[np.ndarray, ...], by_row: bool = False
    ) -> tuple[np.ndarray, ...]:
        """Advance one time step given the projected input `project(x)` (B, G*u); returns the new state.
        by_row: every row's result independent of the other rows, bit for bit (see `rowwise`)."""
        mul = rowwise if by_row else np.matmul
        u = self.units
        if self.cell == "lstm":
            h, c = state
            z = mul(h, self._recurrent)
            z += xproj
            np.tanh(z, out=z)
            gates = z[:, : 3 * u]
            gates *= 0.5
            gates += 0.5  # i, f, o are now sigmoids; z[:, 3u:] is tanh of the candidate
            c = z[:, u : 2 * u] * c
            c += z[:, :u] * z[:, 3 * u :]
            return z[:, 2 * u : 3 * u] * np.tanh(c), c
        (h,) = state
        r_all = mul(h, self._recurrent)
        r_all += self._bias_rec
        zr = xproj[:, : 2 * u] + r_all[:, : 2 * u]
        np.tanh(zr, out=zr)
        zr *= 0.5
        zr += 0.5
        hh = zr[:, u:] * r_all[:, 2 * u :]
        hh += xproj[:, 2 * u :]
        np.tanh(hh, out=hh)
        h = h - hh
        h *= zr[:, :u]
        h += hh  # z * h + (1 - z) * hh
        return (h,)
