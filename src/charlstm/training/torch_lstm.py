"""Keras' LSTM on torch's fused CPU kernel (oneDNN), behind one small, reversible hook.

Why: `keras.layers.LSTM.inner_loop` first asks the backend for a fused implementation,
`keras.src.backend.lstm(...)`, and falls back to a generic loop on `NotImplementedError`. Keras' torch backend
answers with cuDNN on CUDA only; on a CPU it runs one Python step of matmuls per time step, 3x slower than
`torch.nn.LSTM`, which calls oneDNN's fused LSTM (`torch._VF.lstm`). This module replaces that one function
(`keras.src.backend.lstm`, the name `LSTM.inner_loop` looks up; `keras.src.backend.torch.rnn.lstm` is
star-imported into it, so patching the torch module would have no effect) with one that calls
`torch._VF.lstm` on a CPU, with the weights laid out by Keras' own `prepare_lstm_params`. Every case the
kernel cannot take (a mask, `unroll`, `go_backwards`, activations other than tanh/sigmoid, no bias, a
device other than a CPU or CUDA GPU, a trace) goes to the stock function unchanged. On CUDA the same call is
cuDNN's fused LSTM (as Keras' own torch path also calls it there); a dtype cuDNN refuses goes to Keras' path. The layers, the variables and the saved file
stay Keras' own: only the arithmetic of the forward and backward pass changes, within float32 round-off.

`GRU` has no oneDNN kernel in PyTorch (on a CPU `torch._VF.gru` is a C++ loop of cells, and Keras' GRU orders
its gates otherwise), so `--cell gru` trains on Keras' stock torch path (a Python loop of time steps).

Use `install()` / `uninstall()` (or `with fused():`) only in a process whose Keras backend is torch;
`calls` counts the kernel's uses, so tests can prove that Keras still calls the hook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

DEVICES = ("cpu", "cuda")  # where torch._VF.lstm is one fused kernel: oneDNN on a CPU, cuDNN on an NVIDIA GPU
calls = 0  # how often the fused kernel ran (tests: fails loudly if a Keras release stops calling the hook)
_stock: Any = None  # the function replaced, while installed


def _plain(activation: Any, name: str) -> bool:
    import torch
    from keras import activations, ops

    wanted = {
        "tanh": (activations.tanh, torch.tanh, ops.tanh),
        "sigmoid": (activations.sigmoid, torch.sigmoid, ops.sigmoid),
    }
    return activation in wanted[name]


def fused_lstm(
    inputs: Any,
    initial_state_h: Any,
    initial_state_c: Any,
    mask: Any,
    kernel: Any,
    recurrent_kernel: Any,
    bias: Any,
    activation: Any,
    recurrent_activation: Any,
    return_sequences: bool = False,
    go_backwards: bool = False,
    unroll: bool = False,
    batch_first: bool = True,
) -> Any:
    """`keras.src.backend.lstm` with torch's fused kernel (oneDNN on a CPU, cuDNN on CUDA); the stock function
    for everything else.

    Returns what the stock function returns: (last_output, outputs, [h, c]), outputs (batch, time, units)
    with return_sequences, else (batch, 1, units).
    """
    import torch
    from keras.src.backend.torch.core import convert_to_tensor

    args = (inputs, initial_state_h, initial_state_c, mask, kernel, recurrent_kernel, bias, activation,
            recurrent_activation)
    kwargs = dict(return_sequences=return_sequences, go_backwards=go_backwards, unroll=unroll,
                  batch_first=batch_first)
    if (mask is not None or unroll or go_backwards or bias is None or not batch_first
            or not _plain(activation, "tanh") or not _plain(recurrent_activation, "sigmoid")
            or torch.jit.is_tracing() or torch.compiler.is_compiling()):
        return _stock(*args, **kwargs)
    kernel = convert_to_tensor(kernel)
    if kernel.device.type not in DEVICES:
        return _stock(*args, **kwargs)
    dtype = kernel.dtype  # the layer's compute dtype (bfloat16 under a mixed policy: Keras casts the variable)
    x = convert_to_tensor(inputs).to(dtype)
    h0 = convert_to_tensor(initial_state_h).to(dtype).unsqueeze(0)
    c0 = convert_to_tensor(initial_state_c).to(dtype).unsqueeze(0)
    try:
        outputs, h, c = run(x, h0, c0, kernel, convert_to_tensor(recurrent_kernel), convert_to_tensor(bias))
    except RuntimeError:  # e.g. a cuDNN without this dtype: Keras' own path (its cuDNN call, or its loop)
        if kernel.device.type == "cpu":
            raise
        return _stock(*args, **kwargs)
    h, c = h.squeeze(0), c.squeeze(0)
    last = outputs[:, -1]
    return last, outputs if return_sequences else last.unsqueeze(1), [h, c]


def run(x: Any, h0: Any, c0: Any, kernel: Any, recurrent_kernel: Any, bias: Any) -> Any:
    """One LSTM layer on torch's fused kernel: x (batch, time, in), h0/c0 (1, batch, units), Keras' weights
    (kernel (in, 4u), recurrent (u, 4u), bias (4u), gates i, f, c, o as torch's); returns (outputs, h, c)."""
    global calls
    import torch
    from keras.src.backend.torch.rnn import prepare_lstm_params

    params = prepare_lstm_params(kernel, recurrent_kernel, bias, x.device)
    params[3] = params[3].to(kernel.dtype)
    result = torch._VF.lstm(x, (h0, c0), params, True, 1, 0.0, torch.is_grad_enabled(), False, True)
    calls += 1
    return result


def installed() -> bool:
    return _stock is not None


def install() -> None:
    """Route Keras' LSTM layers through `fused_lstm` (torch backend only; idempotent)."""
    global _stock
    import keras
    import keras.src.backend as keras_backend

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"the fused LSTM hook is for Keras' torch backend, not {keras.backend.backend()}")
    if _stock is None:
        _stock = keras_backend.lstm
        keras_backend.lstm = fused_lstm


def uninstall() -> None:
    """Give Keras its own function back."""
    global _stock
    import keras.src.backend as keras_backend

    if _stock is not None:
        keras_backend.lstm = _stock
        _stock = None


@contextlib.contextmanager
def fused() -> Iterator[None]:
    """`with fused():` the hook installed inside, Keras' own function outside."""
    was = installed()
    install()
    try:
        yield
    finally:
        if not was:
            uninstall()
