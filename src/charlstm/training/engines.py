"""Loading Keras and its engine quietly, and saying what matters about it in charlstm's own words.

TensorFlow 2.21 writes its start-up lines ("oneDNN custom operations are on", "Could not find cuda drivers",
the absl preamble, a cuInit error on machines without a GPU) from C++ straight to file descriptor 2 while it
is imported, before its own log settings apply: TF_CPP_MIN_LOG_LEVEL, TF_ENABLE_ONEDNN_OPTS and absl's
settings do not silence them (checked: each still printed). So `load_engines` imports Keras, TensorFlow (tf.data
feeds TensorFlow and JAX; a torch process keeps it out) and the backend's devices with descriptor 2 pointed at a temporary file, then restores
it and passes on only what is not such a line. After the import, TF_CPP_MIN_LOG_LEVEL=3 (unless the user set
it) keeps the engines' later lines out too. `show_logs=True` (`charlstm train -v`) lets all of them through.

What a user must know is said here instead: a GPU on the machine that the backend does not use.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# glog/absl lines ("I0000 00:00:1796117183.796353    4904 port.cc:153] ...") and the absl preamble
_ENGINE_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    r"|An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not installed)"
)

_loaded = False


@contextlib.contextmanager
def native_stderr_filtered(show: bool = False) -> Iterator[None]:
    """Inside `with`: file descriptor 2 (C++ and Python alike) goes to a temporary file; on exit the engines'
    own log lines are dropped (all kept with `show`) and the rest is written to stderr as it came."""
    if show:
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (some embedded interpreters): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if not _ENGINE_LINE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def load_engines(show_logs: bool = False, devices: bool = True) -> None:
    """Import Keras (its backend chosen before: `backend.select`), TensorFlow and the backend's devices,
    without the engines' start-up lines unless `show_logs`; then warn if a GPU is present but unused.
    `devices=False` leaves JAX's devices untouched (and skips the warning): a multihost job must call
    `jax.distributed.initialize` before anything initialises JAX's backend (strategy.py does, next).

    Idempotent: a second call, or a process that imported Keras itself, costs nothing and prints nothing.
    """
    global _loaded
    if _loaded:
        return
    if show_logs:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    already = "keras" in sys.modules
    with native_stderr_filtered(show_logs or already):
        import keras

        if feeds_tf_data(keras.backend.backend()):  # a torch process keeps TensorFlow out (torch_engine.py)
            import tensorflow as tf

            tf.config.list_physical_devices()
        if keras.backend.backend() == "jax" and devices:
            import jax

            jax.devices()
    _loaded = True
    if not already and devices:
        warn_unused_gpu(keras.backend.backend())


def feeds_tf_data(backend: str) -> bool:
    """Whether training on `backend` feeds tf.data (TensorFlow; JAX where TensorFlow is installed) rather than
    NumPy batches (torch, and JAX without TensorFlow: `charlstm[jax]` alone)."""
    from charlstm.training.backend import available

    return backend == "tensorflow" or (backend == "jax" and available("tensorflow"))


def gpu_hardware() -> str | None:
    """A sign that this machine has an NVIDIA GPU (driver files), whatever the engines can use, or None."""
    for sign in ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/nvidiactl"):
        if Path(sign).exists():
            return sign
    return None


def unused_gpu_message(backend: str, device_kind: str, hardware: str | None) -> str | None:
    """The warning for a GPU that training will not use, or None (no GPU, or it is used)."""
    if hardware is None or device_kind == "gpu":
        return None
    fix = {
        "tensorflow": 'pip install "tensorflow[and-cuda]"',
        "jax": 'pip install -U "jax[cuda12]"',
        # the CPU-only wheel (README, Install) or KERAS_TORCH_DEVICE=cpu; PyPI's Linux wheel brings CUDA
        "torch": 'pip install --force-reinstall "torch==2.13.0" from PyPI (its Linux wheel brings CUDA), and '
                 "leave KERAS_TORCH_DEVICE unset",
    }.get(backend, "install a CUDA-enabled build")
    return (
        f"charlstm: warning: this machine has an NVIDIA GPU ({hardware}) but {backend} cannot use it (no "
        f"CUDA-enabled build or driver found): training on the CPU. To use the GPU: {fix}; "
        "`charlstm train -v` shows the engine's own messages"
    )


def warn_unused_gpu(backend: str, device_kind: Any = None) -> None:
    from charlstm.training.device import device

    message = unused_gpu_message(backend, device_kind or device()["kind"], gpu_hardware())
    if message:
        print(message, file=sys.stderr, flush=True)
