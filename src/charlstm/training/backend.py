"""Which Keras backend trains (TensorFlow, JAX or PyTorch), chosen before Keras is imported.

Keras reads `KERAS_BACKEND` once, at its first import, so the choice must be made before anything imports
Keras: `train()` calls `select()` first thing. The trainer, model and callbacks are backend-neutral Keras; the
`.keras` file is the same whichever backend trained it, and the NumPy runtime needs none of them.
PyTorch is an extra (`charlstm[torch]`); on it, `torch_engine` adds the fused CPU LSTM and a lean step.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from charlstm.errors import CharlstmError

BACKENDS = ("tensorflow", "jax", "torch")
NEEDS = {"jax": "jax", "torch": "torch"}  # backend -> the extra that installs it


def default_backend(network: dict[str, Any] | None = None, quiet: bool = False) -> str:
    """The backend used when neither `backend=` nor KERAS_BACKEND names one: the one that trains `network`
    (probe.NETWORK_KEYS of a TrainConfig; None: the default recipe's) faster on this machine, measured once
    and remembered (`charlstm.training.probe`; a GPU goes to TensorFlow), or TensorFlow when JAX is not installed.
    No fixed choice is right on every CPU and network: benchmarks/README.md, "Choosing the backend".
    A process that has already imported TensorFlow or JAX (but not Keras) keeps that one. `quiet`: the
    measurement says nothing (`charlstm train --quiet`).
    """
    engines = [b for b in BACKENDS if b in sys.modules and b != "torch"]  # many libraries import torch
    if len(engines) == 1:  # a program that has set up one engine already (e.g. TensorFlow's devices) keeps it
        return engines[0]
    from charlstm.training import probe

    return probe.choose(network, say=(lambda line: None) if quiet else None)


def _loaded_backend() -> str | None:
    """The backend of an already imported Keras, or None if Keras is not imported yet."""
    if "keras" not in sys.modules:
        return None
    import keras

    return keras.backend.backend()


def select(name: str | None = None, network: dict[str, Any] | None = None, quiet: bool = False) -> str:
    """Make `name` (or KERAS_BACKEND, or the default for `network`) the Keras backend of this process;
    return it.

    Once Keras is imported its backend is fixed for the life of the process: asking for another one then is
    an error that says how to get it, not a silent switch to a different engine.
    """
    loaded = _loaded_backend()
    wanted = name or (loaded if loaded is not None else os.environ.get("KERAS_BACKEND") or default_backend(network, quiet))
    if wanted not in BACKENDS:
        raise CharlstmError(f"--backend must be one of {', '.join(BACKENDS)}, got {wanted!r}")
    if wanted in NEEDS:
        import importlib.util

        if importlib.util.find_spec(wanted) is None:
            raise CharlstmError(
                f'the {wanted} backend needs {wanted}: pip install "charlstm[{NEEDS[wanted]}]" (or pip install {wanted})'
            )
    if loaded is not None and loaded != wanted:
        raise CharlstmError(
            f"Keras is already imported with the {loaded} backend in this process; the backend is fixed at "
            f"Keras' first import: call charlstm.train(backend={wanted!r}) before importing keras, or set "
            f"KERAS_BACKEND={wanted}"
        )
    os.environ["KERAS_BACKEND"] = wanted
    return wanted


def set_learning_rate(model: Any, value: float) -> None:
    """Set the optimizer's learning rate mid-`fit`, so that the very next step uses it, on either backend.

    TensorFlow's compiled step reads the learning-rate variable at every call. JAX's `fit` instead carries the
    variables as a state snapshot between steps and writes them back only at the epoch's end: a plain
    `assign` would be lost then, and not seen before. `jax_state_sync()` writes the snapshot back to the
    variables and marks it stale, so the next step re-reads every variable, the new learning rate included.
    """
    import keras

    if keras.backend.backend() == "jax":
        model.jax_state_sync()
    model.optimizer.learning_rate.assign(value)
