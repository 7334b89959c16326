"""Which Keras backend trains (PyTorch, TensorFlow or JAX), chosen before Keras is imported.

Keras reads `KERAS_BACKEND` once, at its first import, so the choice must be made before anything imports
Keras: `train()` calls `select()` first thing. The trainer, model and callbacks are backend-neutral Keras; the
`.keras` file is the same whichever backend trained it, and the NumPy runtime needs none of them.
The default install has PyTorch only (`torch_engine`: the fused LSTM and a lean step); TensorFlow and JAX are
extras (`charlstm[tensorflow]`, `charlstm[jax]`), each named in the error a user gets when asking for it.

`import charlstm` calls `preset()`: with Keras not imported yet and KERAS_BACKEND unset, it names torch, so a
notebook's later `import keras` gets the fast engine too; `train()` still measures which installed backend
is fastest, as the preset is marked as charlstm's (CHARLSTM_PRESET_BACKEND), not the user's. A process that
imported Keras with another backend first is told so once (`stuck_warning`), in charlstm's words.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from charlstm.errors import CharlstmError

BACKENDS = ("tensorflow", "jax", "torch")
NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
FAST = "torch"  # the fastest engine on every CPU measured (benchmarks/README.md), and the default install's
PRESET_ENV = "CHARLSTM_PRESET_BACKEND"  # KERAS_BACKEND was set by charlstm (preset/select), not by the user
_warned: set[str] = set()


def available(name: str) -> bool:
    """Whether the framework `name` (tensorflow, jax, torch) can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # an import hook that refuses it, or a half-removed module
        return False


def install_hint(name: str) -> str:
    """How to add a backend's framework to a charlstm install (the extra of the same name)."""
    return f'pip install "charlstm[{name}]" -c constraints.txt'


def require(name: str, asked: str) -> None:
    """Raise the one-line error for `asked` (an option) when its framework `name` is not installed."""
    if not available(name):
        raise CharlstmError(
            f"{asked} needs {NAMES[name]}, which this install does not have (the default install has PyTorch "
            f"only): {install_hint(name)} (from the charlstm folder; elsewhere pip install \"charlstm[{name}]\")"
        )


def preset() -> None:
    """At `import charlstm`: make torch Keras' backend for a later `import keras` in this process, unless Keras
    is imported already, KERAS_BACKEND is set, or torch is not installed."""
    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND") or not available(FAST):
        return
    os.environ["KERAS_BACKEND"] = os.environ[PRESET_ENV] = FAST


def torch_threads_wait_passively(env: dict[str, str] | None = None) -> None:
    """OMP_WAIT_POLICY=PASSIVE (unless set) for a torch process, before torch is imported: torch's OpenMP
    threads otherwise spin at every barrier, and on a CPU shared with other work (more runnable threads than
    cores) a spinning thread holds the core its partner needs. Measured here (benchmarks/README.md, issue 21):
    one step of the default network with two threads, load average 11 on 2 cores, 3,489 ms spinning against
    199 ms waiting passively (one thread: 359 and 232 ms)."""
    (os.environ if env is None else env).setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _user_backend() -> str | None:
    """KERAS_BACKEND as the user set it (None when unset or set by charlstm's preset)."""
    env = os.environ.get("KERAS_BACKEND") or None
    return None if env is not None and env == os.environ.get(PRESET_ENV) else env


def default_backend(network: dict[str, Any] | None = None, quiet: bool = False) -> str:
    """The backend used when neither `backend=` nor KERAS_BACKEND names one: the one that trains `network`
    (probe.NETWORK_KEYS of a TrainConfig; None: the default recipe's) faster on this machine, measured once
    and remembered (`charlstm.training.probe`; a GPU goes to the first backend that sees it).
    No fixed choice is right on every CPU and network: benchmarks/README.md, "Choosing the backend".
    A process that has already imported TensorFlow or JAX (but not Keras) keeps that one. `quiet`: the
    measurement says nothing (`charlstm train --quiet`). With one backend installed (the default install:
    torch) that one, unmeasured.
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


def stuck_message(loaded: str, network: dict[str, Any] | None = None) -> str | None:
    """What to tell a process whose Keras was imported with `loaded` before charlstm chose: which backend it is
    stuck with, what the fast one measured here (the probe's remembered figures, when there are some) and how
    to get it; None when `loaded` is the fast one or no faster one is installed."""
    from charlstm.training import probe

    known = probe.remembered(network)
    fast = known["backend"] if known else (FAST if available(FAST) else None)
    if fast is None or fast == loaded:
        return None
    figures = (known or {}).get("figures", {})
    if fast in figures:
        shown = ", ".join(f"{b} {f['chars_per_s']:,.0f}" for b, f in figures.items())
        why = f"{fast} trains this network faster here (measured: {shown} target chars/s)"
    else:
        why = f"{fast} is the fastest engine on every CPU measured (charlstm's benchmarks/README.md)"
    return (
        f"charlstm: warning: Keras was imported with the {loaded} backend before charlstm chose one, so this "
        f"process trains on {loaded} (Keras fixes its backend at its first import); {why}. To train on {fast}: "
        f"`import charlstm` before `import keras`, or start Python with KERAS_BACKEND={fast}"
    )


def select(name: str | None = None, network: dict[str, Any] | None = None, quiet: bool = False) -> str:
    """Make `name` (or KERAS_BACKEND, or the default for `network`) the Keras backend of this process;
    return it.

    Once Keras is imported its backend is fixed for the life of the process: asking for another one then is
    an error that says how to get it, not a silent switch to a different engine; asking for none when Keras
    came up with a slower one than this machine has is a warning, once per process.
    """
    loaded = _loaded_backend()
    user = _user_backend()
    if name is None and loaded is not None and user != loaded and loaded not in _warned:
        message = stuck_message(loaded, network)
        _warned.add(loaded)
        if message:
            print(message, file=sys.stderr, flush=True)
    wanted = name or (loaded if loaded is not None else user or default_backend(network, quiet))
    if wanted not in BACKENDS:
        raise CharlstmError(f"--backend must be one of {', '.join(BACKENDS)}, got {wanted!r}")
    require(wanted, f"--backend {wanted}")
    if loaded is not None and loaded != wanted:
        raise CharlstmError(
            f"Keras is already imported with the {loaded} backend in this process; the backend is fixed at "
            f"Keras' first import: call charlstm.train(backend={wanted!r}) before importing keras, or set "
            f"KERAS_BACKEND={wanted}"
        )
    os.environ["KERAS_BACKEND"] = wanted
    if wanted == "torch":
        torch_threads_wait_passively()
    if name is None and user is None:  # charlstm's choice: a child process may choose again
        os.environ[PRESET_ENV] = wanted
    else:
        os.environ.pop(PRESET_ENV, None)
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
