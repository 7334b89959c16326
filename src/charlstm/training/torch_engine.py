"""Keras on PyTorch at the CPU's speed: the fused LSTM, a lean training step, and no TensorFlow in the process.

On the torch backend, everything around the LSTM in Keras' own `fit` step costs more than the whole
non-LSTM work of a plain PyTorch loop (issue 15: metrics bookkeeping, Keras' loss wrappers). `prepare(model)`
keeps `model.fit`, its callbacks and the saved file as they are, and changes two things for this process:

- the LSTM arithmetic goes to oneDNN's fused kernel on a CPU (`torch_lstm`, one reversible hook);
- the model instance gets a lean `train_step` (Keras documents overriding `train_step` per backend):
  forward, torch's fused cross-entropy on the float32 logits, `backward()`, then Keras' own
  `optimizer.apply` (clipnorm, Adam/RMSprop state, iterations: what last.keras saves and resumes). Its loss
  is the same number as Keras' `SparseCategoricalCrossentropy(from_logits=True)` (mean over every target),
  and the loss tracker is updated as the stock step does, so logs, metrics.csv and callbacks read the same.
  The method lives on the instance only: the model stays a plain Functional model, and anything the lean
  step does not cover (sample weights, compiled metrics, a loss-scale optimizer, layer losses) runs Keras'
  stock step.

`keep_tensorflow_out()`: Keras imports TensorFlow when it is installed even on the torch backend (to seed
it in `set_random_seed`, to recognise its types when saving); on 2 cores its thread pools then compete with
torch's. A torch training process tells Keras TensorFlow is unavailable unless something imported it already.
"""

from __future__ import annotations

import sys
from typing import Any

from charlstm.errors import CharlstmError

_switched = {"lean_step": False}  # what the last prepare() switched on (config.json: trained_with)


def keep_tensorflow_out() -> None:
    """Make Keras treat TensorFlow as absent in this (torch) process, unless it is imported already."""
    if "tensorflow" in sys.modules:
        return
    try:
        from keras.src.utils import module_utils

        module_utils.tensorflow._available = False  # what LazyModule.available caches after a failed import
    except (ImportError, AttributeError):  # a Keras without that lazy module imports TensorFlow lazily anyway
        pass


def save_optimizers_by_public_name() -> None:
    """Make checkpoints written on torch name their optimizer as TensorFlow and JAX do ("keras.optimizers",
    "Adam"), so they resume on any backend.

    Keras 3.15's torch backend swaps `keras.optimizers.Adam` (RMSprop, ...) for a private subclass
    (`keras.src.backend.torch.optimizers.torch_adam.Adam`) that has no public name, so `model.save` records
    that torch module: loading the file under TensorFlow then builds the torch optimizer there and the first
    step fails. This gives each such subclass its parent's public name for serialising only; loading that
    name on torch gives the torch subclass again (Keras' own swap).
    """
    import importlib
    import pkgutil

    from keras.src import api_export
    from keras.src.backend.torch import optimizers
    from keras.src.backend.torch.optimizers.torch_optimizer import TorchOptimizer

    for module in pkgutil.iter_modules(optimizers.__path__):  # Keras imports them at the first optimizer only
        importlib.import_module(f"{optimizers.__name__}.{module.name}")
    pending = list(TorchOptimizer.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if api_export.get_name_from_symbol(cls) is not None:
            continue
        for parent in cls.__mro__[1:]:
            name = api_export.get_name_from_symbol(parent)
            if name is not None and name.startswith("keras.optimizers.") and cls.__name__ == parent.__name__:
                api_export.REGISTERED_OBJS_TO_NAMES[cls] = name
                break


def bf16_supported() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (AVX-512-BF16 or AMX), as PyTorch reports it."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(mixed_precision: str | None) -> None:
    """16-bit training on the torch backend on a CPU: bf16 only, and only where the CPU computes it."""
    if mixed_precision == "fp16":
        raise CharlstmError(
            "--mixed-precision fp16 on the torch backend on a CPU is not supported (float16 is a GPU format); "
            "use --mixed-precision bf16 on a CPU with AVX-512-BF16 or AMX, or drop --mixed-precision"
        )
    if mixed_precision == "bf16" and not bf16_supported():
        raise CharlstmError(
            "--mixed-precision bf16: this CPU has neither AVX-512-BF16 nor AMX, so bfloat16 would be emulated "
            "and train slower than float32; drop --mixed-precision"
        )


def _lean_train_step(self: Any, data: Any, weights: list[Any]) -> dict[str, Any]:
    """One training step with none of Keras' per-step wrappers; see the module docstring."""
    import torch
    from torch.nn import functional

    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return type(self).train_step(self, data)
    x, y = data
    logits = self(x, training=True)
    loss = functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1).long())
    for v in weights:
        v.value.grad = None
    loss.backward()
    with torch.no_grad():
        self.optimizer.apply([v.value.grad for v in weights], weights)
    loss = loss.detach()
    self._loss_tracker.update_state(loss, sample_weight=y.shape[0])  # y: x may be a dict (a tagged model)
    return {"loss": self._loss_tracker.result()}


def lean_step_applies(model: Any) -> bool:
    """Whether the lean step computes exactly what Keras' step would for this compiled model."""
    import keras

    return (
        isinstance(getattr(model, "loss", None), keras.losses.SparseCategoricalCrossentropy)
        and model.loss.get_config().get("from_logits") is True
        and not model.loss.get_config().get("ignore_class")
        and not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        and not model.losses
        and [m.name for m in model.metrics] in ([], ["loss"])
    )


def prepare(model: Any, *, fused: bool = True, lean: bool = True) -> dict[str, bool]:
    """Make a compiled model train at the torch backend's best on this machine (a no-op on other backends);
    returns what was switched on. Call it again after every `compile` (it re-reads the optimizer)."""
    import keras

    if keras.backend.backend() != "torch":
        return {"fused_lstm": False, "lean_step": False}
    import torch

    from charlstm.training import torch_lstm

    save_optimizers_by_public_name()
    on_cpu = not torch.cuda.is_available()
    if fused and on_cpu:
        torch_lstm.install()
    use_lean = lean and lean_step_applies(model)
    if use_lean:  # a plain function on the instance: an attribute holding variables would be saved with them
        weights = list(model.trainable_weights)
        object.__setattr__(model, "train_step", lambda data: _lean_train_step(model, data, weights))
    elif "train_step" in vars(model):
        object.__delattr__(model, "train_step")
    model.train_function = None  # rebuilt from the (new) train_step on the next fit
    _switched["lean_step"] = use_lean
    return {"fused_lstm": torch_lstm.installed(), "lean_step": use_lean}


def seed_torch(seed: int, epoch: int, batch: int) -> None:
    """Seed torch's global generator from (seed, epoch, batch): Keras' Dropout on torch draws its masks from it
    (Keras seeds no generator of its own for an unseeded Dropout), so a resumed epoch draws the same masks."""
    import torch

    torch.manual_seed((((seed % (2**31)) * 1_000_003 + epoch) * 1_000_033 + batch) % (2**63))


def describe() -> dict[str, Any]:
    """What config.json records about the torch engine."""
    import torch

    from charlstm.training import torch_lstm

    return {"torch": torch.__version__, "fused_lstm": torch_lstm.installed(), **_switched,
            "threads": torch.get_num_threads()}
