"""What the chosen backend computes on, and the settings that follow from it (XLA on or off).

Separate from backend.py (which picks the backend before Keras is imported) so that everything that builds
or compiles a model, the backend probe included, can ask about the device without reaching back into the
choice itself.
"""

from __future__ import annotations

import os
from typing import Any


def device() -> dict[str, Any]:
    """What the running backend computes on: {"kind": "cpu" | "gpu" | ..., "count": n, "name": ...}.

    Imports Keras (so call it after `select`).
    """
    import keras

    if keras.backend.backend() == "jax":
        import jax

        devices = jax.devices()
        kind = devices[0].platform
        return {"kind": kind, "count": len(devices), "name": str(getattr(devices[0], "device_kind", kind))}
    if keras.backend.backend() == "torch":  # never TensorFlow in a torch process (torch_engine)
        import torch

        from charlstm.training.torch_engine import training_device

        if training_device() == "cuda":
            return {"kind": "gpu", "count": torch.cuda.device_count(), "name": torch.cuda.get_device_name(0)}
        return {"kind": "cpu", "count": 1, "name": _cpu_name()}
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return {"kind": "gpu", "count": len(gpus), "name": str(details.get("device_name", "GPU"))}
    return {"kind": "cpu", "count": len(tf.config.list_physical_devices("CPU")), "name": _cpu_name()}


def _cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (benchmarks and config.json quote it), or the platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
    """Backend, versions and device, as config.json records them."""
    import keras

    info: dict[str, Any] = {"backend": keras.backend.backend(), "keras": keras.__version__}
    if info["backend"] == "jax":
        import jax

        info["jax"] = jax.__version__
    elif info["backend"] == "torch":
        from charlstm.training import torch_engine

        info.update(torch_engine.describe())
    else:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    dev = device()
    if dev["kind"] == "cpu":
        dev["cores"] = os.cpu_count()
        dev["name"] = _cpu_name()
    info["device"] = dev
    return info


def jit_compile() -> Any:
    """`compile(jit_compile=...)` for this backend and device.

    TensorFlow on a CPU runs without XLA: XLA made LSTM training 1.3-2x slower on this project's 2-core CPU
    (benchmarks/README.md); on a GPU it stays "auto". JAX always compiles (without XLA it runs op by op, about
    15x slower). Torch runs eagerly (`torch_engine`: the fused LSTM and a lean step; torch.compile would
    trace through the LSTM hook to the stock loop).
    """
    import keras

    if keras.backend.backend() == "jax":
        return True
    if keras.backend.backend() == "torch":
        return False
    return "auto" if device()["kind"] == "gpu" else False
