"""Keras on PyTorch at the CPU's speed: the fused LSTM, a lean training step, and no TensorFlow in the process.

On the torch backend, everything around the LSTM in Keras' own `fit` step costs more than the whole
non-LSTM work of a plain PyTorch loop (issue 15: metrics bookkeeping, Keras' loss wrappers). `prepare(model)`
keeps `model.fit`, its callbacks and the saved file as they are, and changes two things for this process:

- the LSTM arithmetic goes to torch's fused kernel, oneDNN on a CPU and cuDNN on a GPU (`torch_lstm`, one
  reversible hook);
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

_switched = {"lean_step": False, "direct_forward": False, "fused_adam": False, "carry_state": False}  # what the last prepare() switched on (config.json: trained_with)


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


def auto_precision(cell: str = "lstm") -> str | None:
    """`--mixed-precision auto` on the torch engine: bf16 where the fused LSTM trains on a CPU that computes
    bf16 natively (benchmarks/README.md: the equal-time comparison of issue 23), else float32 (a GRU runs
    Keras' own loop; GPUs were not measured)."""
    return "bf16" if cell == "lstm" and training_device() == "cpu" and bf16_supported() else None


def training_device() -> str:
    """Where Keras' torch backend puts tensors in this process: "cuda" when torch sees a GPU (Keras' default;
    KERAS_TORCH_DEVICE overrides it), else "cpu" (or "mps", ...)."""
    try:
        from keras.src.backend.torch.core import get_device

        return str(get_device()).split(":")[0]
    except ImportError:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def check_precision(mixed_precision: str | None, device: str = "cpu") -> None:
    """16-bit training on the torch backend: on a GPU bf16 or fp16 (fp16 with Keras' loss scaling); on a CPU
    bf16 only, and only where the CPU computes it."""
    if mixed_precision is None or device == "cuda":
        return
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


def direct_forward(model: Any) -> Any:
    """For charlstm's own network (Embedding, LSTM layers with Dropout between, Dense logits; float32, or
    Keras' mixed_bfloat16 policy with float32 logits): the training forward pass as plain torch calls on the
    model's own variables, skipping Keras' per-layer call machinery (about a tenth of a step at the default
    size: its dtype, mask and shape bookkeeping around every layer). The same ops in the same order as Keras'
    graph with the fused hook: `embedding`, the fused LSTM (`torch_lstm.run`), `dropout` from torch's global
    generator (as Keras' unseeded Dropout draws), matmul + bias, with the casts Keras' dtype policy makes; so
    the same numbers and the same dropout masks.

    `forward(x, training=True, state=None)` returns (logits (B, T, V), [(h, c) per LSTM layer, each (B, U)]):
    `state` (the same list) starts each layer there instead of at zeros, which is how a carried state
    (`carry.CarriedState`) enters the step. None for any other model, or when a check on a small batch does
    not give Keras' own logits (then the lean step calls the model as Keras does)."""
    import keras
    import torch
    from torch.nn import functional

    from charlstm.training import torch_lstm

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    dtypes = {layer.compute_dtype for layer in layers[:-1]}
    if (len(layers) < 3 or not torch_lstm.installed() or not hasattr(model, "_run_through_graph")
            or any(len(getattr(layer, "_inbound_nodes", ())) != 1 for layer in layers)
            or len(dtypes) != 1 or dtypes.pop() not in ("float32", "bfloat16") or layers[-1].compute_dtype != "float32"):
        return None
    embedding, body, head = layers[0], layers[1:-1], layers[-1]
    if (type(embedding) is not keras.layers.Embedding or embedding.mask_zero
            or type(head) is not keras.layers.Dense or not head.use_bias
            or head.activation not in (keras.activations.linear, None)):
        return None
    for layer in body:
        if type(layer) is keras.layers.LSTM:
            cell = layer.cell
            if (not layer.return_sequences or layer.go_backwards or layer.unroll or layer.stateful
                    or cell.dropout or cell.recurrent_dropout or not cell.use_bias
                    or not torch_lstm._plain(cell.activation, "tanh")
                    or not torch_lstm._plain(cell.recurrent_activation, "sigmoid")):
                return None
        elif type(layer) is keras.layers.Dropout:
            if layer.noise_shape is not None or getattr(layer.seed_generator, "_initial_seed", None) is not None:
                return None
        else:
            return None
    dtype = torch.bfloat16 if embedding.compute_dtype == "bfloat16" else torch.float32

    def forward(x: Any, training: bool = True, state: list[tuple[Any, Any]] | None = None) -> Any:
        h = functional.embedding(x.long(), embedding.embeddings.value.to(dtype))  # (B, T, E)
        out: list[tuple[Any, Any]] = []
        for layer in body:
            if isinstance(layer, keras.layers.LSTM):
                cell = layer.cell
                if state is None:
                    h0 = c0 = h.new_zeros(1, h.shape[0], cell.units)  # (1, B, U): Keras' zero initial state
                else:
                    h0, c0 = (s.to(dtype).unsqueeze(0) for s in state[len(out)])  # (1, B, U)
                h, hn, cn = torch_lstm.run(h, h0, c0, cell.kernel.value.to(dtype),
                                           cell.recurrent_kernel.value.to(dtype), cell.bias.value.to(dtype))
                out.append((hn[0], cn[0]))  # (B, U) each
            elif training and layer.rate > 0:
                h = functional.dropout(h, p=layer.rate, training=True)
        return torch.matmul(h.float(), head.kernel.value) + head.bias.value, out  # (B, T, V)

    try:
        with torch.no_grad():
            ids = torch.randint(0, embedding.input_dim, (2, 7), dtype=torch.int32,
                                generator=torch.Generator().manual_seed(0))  # not the global generator
            probe = ids.to(embedding.embeddings.value.device)
            tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: the same ops, checked at bf16's precision
            same = torch.allclose(forward(probe, training=False)[0], model(probe, training=False), atol=tol,
                                  rtol=100 * tol)
    except Exception:  # noqa: BLE001 - any surprise: Keras' own forward
        return None
    return forward if same else None


def _lean_train_step(self: Any, data: Any, weights: list[Any], forward: Any = None, carry: Any = None) -> dict[str, Any]:
    """One training step with none of Keras' per-step wrappers; see the module docstring.

    With `carry` (a `carry.CarriedState`) and a streams batch (x = {"chars", "reset"}: data/batches.py), each
    row starts from the state its stream ended the previous batch with (zeros where `reset` is 1), and the
    state it ends with is kept, detached, for the next batch (truncated backpropagation through time)."""
    import torch
    from torch.nn import functional

    if isinstance(data, (tuple, list)) and len(data) == 3 and data[2] is None:
        data = data[:2]  # train_on_batch's (x, y, None): the budget's speed probe times this step, not Keras'
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return type(self).train_step(self, data)
    x, y = _tensors(data)
    if carry is not None and isinstance(x, dict) and "reset" in x:
        chars = x["chars"]
        logits, state = forward(chars, state=carry.begin(x["reset"], chars.shape[0]))
        carry.end(state)
    elif forward is not None:
        logits = forward(x)[0]
    else:
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


def _tensors(data: Any) -> Any:
    """fit's batches arrive as tensors on the training device; train_on_batch's as given (NumPy): as tensors."""
    from keras.src.backend.torch.core import convert_to_tensor

    x, y = data
    if isinstance(x, dict):
        x = {k: v if hasattr(v, "long") else convert_to_tensor(v) for k, v in x.items()}
    elif not hasattr(x, "long"):
        x = convert_to_tensor(x)
    return x, y if hasattr(y, "long") else convert_to_tensor(y)


def _foreach_clipnorm(optimizer: Any) -> Any:
    """Keras' `clipnorm` (each gradient scaled by c / max(||g||, c), on its own) in three foreach calls for all
    the gradients, instead of eight small ops per variable in Python: the same arithmetic, in the same order
    (g * c, then / max(||g||, c)); a zero gradient stays zero, as in Keras' `_clip_by_norm`."""
    import torch

    def clip(grads: list[Any]) -> list[Any]:
        if any(g is None for g in grads):
            return type(optimizer)._clip_gradients(optimizer, grads)
        c = float(optimizer.clipnorm)
        norms = torch.stack(torch._foreach_norm(grads))  # (n_variables,)
        return torch._foreach_div(torch._foreach_mul(grads, c), list(torch.clamp_min(norms, c).unbind()))

    return clip


def _fused_adam(optimizer: Any) -> Any | None:
    """Keras' Adam update as torch's fused CPU kernel (`torch._fused_adam_`: one pass over each variable, its
    moments and its gradient) instead of Keras' eleven foreach passes and their temporaries; None where it does
    not apply (amsgrad, weight decay, EMA, gradient accumulation, loss scaling, a GPU, no such kernel).

    The same update: Keras takes var -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps), torch's kernel
    var -= lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps'); with eps' = eps / sqrt(1 - b2^t) the two are
    one formula (float32 round-off apart). The moments stay Keras' own variables, so checkpoints, resume and
    any other backend read them as ever."""
    import math

    import keras
    import torch

    if (not isinstance(optimizer, keras.optimizers.Adam) or optimizer.amsgrad or optimizer.weight_decay
            or optimizer.use_ema or optimizer.gradient_accumulation_steps or optimizer.loss_scale_factor
            or not hasattr(torch, "_fused_adam_") or training_device() != "cpu"):
        return None

    def update(grads: list[Any], variables: list[Any], learning_rate: Any) -> None:
        params = [v.value for v in variables]
        if any(p.dtype != torch.float32 for p in params):
            return type(optimizer)._parallel_update_step(optimizer, grads, variables, learning_rate)
        index = [optimizer._get_variable_index(v) for v in variables]
        step = float(optimizer.iterations.value) + 1.0  # what Keras' step calls local_step
        steps = [torch.tensor(step)] * len(params)
        torch._fused_adam_(
            params, list(grads), [optimizer._momentums[i].value for i in index],
            [optimizer._velocities[i].value for i in index], [], steps,
            lr=float(learning_rate), beta1=float(optimizer.beta_1), beta2=float(optimizer.beta_2),
            weight_decay=0.0, eps=float(optimizer.epsilon) / math.sqrt(1.0 - float(optimizer.beta_2) ** step),
            amsgrad=False, maximize=False,
        )

    return update


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


def prepare(model: Any, *, fused: bool = True, lean: bool = True, direct: bool = True, carry: Any = None) -> dict[str, bool]:
    """Make a compiled model train at the torch backend's best on this machine (a no-op on other backends);
    returns what was switched on. Call it again after every `compile` (it re-reads the optimizer).
    `direct=False` keeps Keras' own forward inside the lean step (`direct_forward`). `carry` (a
    `carry.CarriedState`) carries the LSTM state across streams batches; it needs the direct forward
    (`carry_state` in the result says whether it is on)."""
    import keras

    if keras.backend.backend() != "torch":
        return {"fused_lstm": False, "lean_step": False}

    from charlstm.training import torch_lstm

    save_optimizers_by_public_name()
    if fused and training_device() in torch_lstm.DEVICES:
        torch_lstm.install()
    use_lean = lean and lean_step_applies(model)
    forward = None
    if use_lean:  # a plain function on the instance: an attribute holding variables would be saved with them
        weights = list(model.trainable_weights)
        forward = direct_forward(model) if direct else None
        carried = carry if forward is not None else None
        object.__setattr__(model, "train_step", lambda data: _lean_train_step(model, data, weights, forward, carried))
    elif "train_step" in vars(model):
        object.__delattr__(model, "train_step")
    optimizer = model.optimizer
    plain_clip = bool(optimizer.clipnorm) and not optimizer.global_clipnorm and not optimizer.clipvalue
    if use_lean and plain_clip:  # on the instance only, like the step (the saved optimizer is Keras' own)
        object.__setattr__(optimizer, "_clip_gradients", _foreach_clipnorm(optimizer))
    elif "_clip_gradients" in vars(optimizer):
        object.__delattr__(optimizer, "_clip_gradients")
    fused_adam = _fused_adam(optimizer) if use_lean else None
    if fused_adam is not None:
        object.__setattr__(optimizer, "_parallel_update_step", fused_adam)
    elif "_parallel_update_step" in vars(optimizer):
        object.__delattr__(optimizer, "_parallel_update_step")
    _switched["fused_adam"] = fused_adam is not None
    model.train_function = None  # rebuilt from the (new) train_step on the next fit
    _switched["lean_step"] = use_lean
    _switched["direct_forward"] = use_lean and forward is not None
    _switched["carry_state"] = carry is not None and _switched["direct_forward"]
    return {"fused_lstm": torch_lstm.installed(), "lean_step": use_lean,
            "direct_forward": _switched["direct_forward"], "fused_adam": _switched["fused_adam"],
            "carry_state": _switched["carry_state"]}


def tensorboard(log_dir: str) -> Any:
    """A TensorBoard callback for a torch process: Keras' own writes through `tf.summary` (TensorFlow, absent
    from the default install and kept out of torch processes), so this one writes the same per-epoch scalars
    (`epoch_loss`, ... under `train/` and `validation/`, as Keras' does) with torch.utils.tensorboard, which
    needs only the tensorboard package (`charlstm[tensorboard]`). tensorboard's own switch
    (`tensorboard.compat.notf`) keeps it from importing TensorFlow where that is installed."""
    import types

    import keras

    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    class TorchBoard(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.writers: dict[str, Any] = {}

        def _writer(self, split: str) -> Any:
            if split not in self.writers:
                self.writers[split] = SummaryWriter(f"{log_dir}/{split}")
            return self.writers[split]

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            for key, value in (logs or {}).items():
                split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
                self._writer(split).add_scalar(f"epoch_{name}", float(value), epoch)
            for writer in self.writers.values():
                writer.flush()

        def on_train_end(self, logs: dict | None = None) -> None:
            for writer in self.writers.values():
                writer.close()
            self.writers.clear()

    return TorchBoard()


def seed_torch(seed: int, epoch: int, batch: int) -> None:
    """Seed torch's global generator from (seed, epoch, batch): Keras' Dropout on torch draws its masks from it
    (Keras seeds no generator of its own for an unseeded Dropout), so a resumed epoch draws the same masks."""
    import torch

    value = (((seed % (2**31)) * 1_000_003 + epoch) * 1_000_033 + batch) % (2**63)
    # torch.manual_seed(value) in effect, without its per-call device bookkeeping (about 0.3 ms a batch here)
    torch.default_generator.manual_seed(value)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(value)


def describe() -> dict[str, Any]:
    """What config.json records about the torch engine."""
    import torch

    from charlstm.training import torch_lstm

    return {"torch": torch.__version__, "fused_lstm": torch_lstm.installed(), **_switched,
            "threads": torch.get_num_threads(), "torch_device": training_device(),
            "cpu_bf16": bf16_supported()}  # what --mixed-precision auto decides by on a CPU
