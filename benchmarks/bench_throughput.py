"""Training throughput (target characters per second): Keras on TensorFlow, JAX and PyTorch, and PyTorch itself.

Two networks, each at its own batch and sequence length:
- default: Embedding(64), 2 x LSTM(128), dropout 0.1 between layers and before the head, Dense(V) at every
  position; Adam(5e-3) with clipnorm 1.0; batch 64, 64-character sequences (64 x 64 targets per batch);
- classic: one-hot input (CategoryEncoding), LSTM(128), Dense(V) on the last step; RMSprop(0.01); batch 128,
  40-character windows (one target per window, so 128 target characters per batch).

Every measurement runs in a fresh subprocess (one implementation per process: TensorFlow and torch in one
process segfaulted on some machines), in alternating rounds so that machine noise hits all alike. A worker
builds the network, compiles and warms it up on two batches, then times `--steps` batches of random ids.
The Keras workers compile as charlstm's trainer does (same optimizer, loss and XLA setting);
`--impls` also takes `train-<backend>`, which times `charlstm.train` itself (tf.data or NumPy batches as the
trainer feeds them, callbacks, 300 KB of tiny Shakespeare) over the batches after the first epoch's first 5.

    python benchmarks/bench_throughput.py [--rounds 3] [--steps 40] [--recipes default,classic]
                                          [--impls tensorflow,jax,torch] [--variants ...]

Keras on the torch backend (issue 15; needs charlstm[torch]) comes in four `--impls`:
  keras-torch-stock  Keras' own torch path (a Python loop of matmuls per LSTM time step on a CPU)
  keras-torch-fused  oneDNN's fused LSTM through training/torch_lstm.py, Keras' stock train step
  keras-torch        as charlstm trains on torch: fused LSTM + torch_engine's lean step
  keras-torch-bf16   the same with --mixed-precision bf16 (float32 weights and logits)
and PyTorch itself in two: `torch` (float32) and `torch-bf16` (torch.autocast bfloat16, float32 loss).

`--variants` compares knobs on the Keras workers (join knobs with '+', e.g. `hoisted+xla`); the measurements
behind benchmarks/README.md:
  stock     as charlstm trains (no knob)           xla       jit_compile=True
  hoisted   the input projection out of the LSTM's time loop (see `hoist_input_projection`)
  unroll    the stock loop traced unrolled         tfdata    feed tf.data instead of NumPy arrays
  spe8      steps_per_execution=8                  headonly  no LSTMs: embedding, logits, loss, optimizer
  threads1  one intra-op thread                    inter1    one inter-op thread
  onednn0   TF_ENABLE_ONEDNN_OPTS=0                avx2      oneDNN, ATen and XLA capped at AVX2 (a stand-in
  b128, t128, u256: batch, sequence length, units            for an AVX2-only CPU)
PyTorch runs the batch, length, units, threads1 and avx2 knobs of each variant.
PyTorch is in charlstm's default install; `tensorflow` and `jax` need the `tensorflow` and `jax` extras.
`benchmarks/profile_step.py` times one step of both torch paths alternating in one process, with profiles.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
RECIPES = {
    # V = 65: tiny Shakespeare's alphabet; the classic recipe's lowercase ASCII text has about as many
    "default": dict(V=65, B=64, T=64, layers=2, units=128, embedding=64, dropout=0.1, every_position=True),
    "classic": dict(V=65, B=128, T=40, layers=1, units=128, embedding=0, dropout=0.0, every_position=False),
}


def cpu_description() -> str:
    """CPU model, core count and widest vector extension, as lscpu would name them."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vec = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {os.cpu_count()} cores, {vec}"


# -- workers (each runs alone in its own process) ----------------------------------------------------------


def hoist_input_projection(model) -> int:
    """The `hoisted` experiment: give each LSTM layer (this instance only) an inner loop that multiplies the
    whole sequence by the input kernel once, before the time loop, as PyTorch's CPU LSTM does; the
    recurrence then does only h @ R per step. Same maths as the stock cell (checked: outputs within 3e-8).
    It made training slower on both backends (benchmarks/README.md), so charlstm does not use it."""
    import types

    import keras
    from keras import ops
    from keras.src import backend as kbackend

    def inner_loop(self, sequences, initial_state, mask=None, training=False):
        cell = self.cell
        recurrent = ops.convert_to_tensor(cell.recurrent_kernel)
        projected = ops.matmul(sequences, ops.convert_to_tensor(cell.kernel)) + ops.convert_to_tensor(cell.bias)

        def step(z_x, states):
            h, c = states[0], states[1]
            z_i, z_f, z_c, z_o = ops.split(z_x + ops.matmul(h, recurrent), 4, axis=-1)
            c = cell.recurrent_activation(z_f) * c + cell.recurrent_activation(z_i) * cell.activation(z_c)
            h = cell.recurrent_activation(z_o) * cell.activation(c)
            return h, [h, c]

        return kbackend.rnn(step, projected, list(initial_state), input_length=sequences.shape[1],
                            return_all_outputs=self.return_sequences)

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    for layer in layers:
        layer.inner_loop = types.MethodType(inner_loop, layer)
    return len(layers)


def _shape(recipe: str, knobs: set[str]) -> dict:
    r = dict(RECIPES[recipe])
    for k in knobs:
        if k.startswith("b") and k[1:].isdigit():
            r["B"] = int(k[1:])
        if k.startswith("t") and k[1:].isdigit():
            r["T"] = int(k[1:])
        if k.startswith("u") and k[1:].isdigit():
            r["units"] = int(k[1:])
    return r


def _data(r: dict, steps: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, r["V"], (r["B"] * steps, r["T"])).astype(np.int32)
    ytail = (r["T"],) if r["every_position"] else ()
    y = rng.integers(0, r["V"], (r["B"] * steps, *ytail)).astype(np.int32)
    return x, y


def unroll_time_loop(model) -> int:
    """The `unroll` experiment: trace each LSTM's stock loop unrolled (this instance only, config untouched)."""
    import types

    import keras

    def inner_loop(self, *args, **kwargs):
        self.unroll = True
        try:
            return type(self).inner_loop(self, *args, **kwargs)
        finally:
            self.unroll = False

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    for layer in layers:
        layer.inner_loop = types.MethodType(inner_loop, layer)
    return len(layers)


def keras_worker(backend: str, recipe: str, knobs: set[str], steps: int, engine: str = "lean",
                 precision: str | None = None) -> dict:
    """engine (torch backend only): "stock" (Keras alone), "fused" (the fused LSTM hook) or "lean" (hook + lean
    step, as charlstm trains); precision: None or "bf16" (Keras' mixed_bfloat16 policy, as charlstm's)."""
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "onednn0" in knobs:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if backend == "tensorflow" and knobs & {"threads1", "inter1"}:
        import tensorflow as tf

        if "threads1" in knobs:
            tf.config.threading.set_intra_op_parallelism_threads(1)
        if "inter1" in knobs:
            tf.config.threading.set_inter_op_parallelism_threads(1)
    if backend == "torch":
        from charlstm.training import torch_engine

        torch_engine.keep_tensorflow_out()  # as a torch training process
        if "threads1" in knobs:
            import torch

            torch.set_num_threads(1)
    import keras

    from charlstm.training.model import ModelSpec, build_model
    from charlstm.training.model import make_optimizer as _optimizer
    from charlstm.training.recipes import make_config

    r = _shape(recipe, knobs)
    config = make_config(recipe)
    keras.utils.set_random_seed(0)
    if "headonly" in knobs:
        inputs = keras.Input(shape=(r["T"],), dtype="int32")
        x = keras.layers.Embedding(r["V"], r["embedding"] or 64)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(r["V"])(x))
    else:
        spec = ModelSpec(
            r["V"],
            input="onehot" if not r["embedding"] else "embedding",
            embedding_dim=r["embedding"] or 64,
            layers=r["layers"],
            units=r["units"],
            dropout=r["dropout"],
            window=None if r["every_position"] else r["T"],
        )
        model = build_model(spec, precision)
    installed = hoist_input_projection(model) if "hoisted" in knobs else 0
    if "unroll" in knobs:
        installed = unroll_time_loop(model)
    model.compile(
        optimizer=_optimizer(config, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # the trainer's setting: XLA off for TensorFlow on CPUs; JAX always compiles (False would run op by op)
        jit_compile=True if "xla" in knobs else (False if backend in ("tensorflow", "torch") else "auto"),
        steps_per_execution=8 if "spe8" in knobs else 1,
    )
    if backend == "torch" and engine != "stock":
        from charlstm.training import torch_engine

        torch_engine.prepare(model, lean=engine == "lean")
    x, y = _data(r, steps)
    B = r["B"]
    if "tfdata" in knobs:
        import tensorflow as tf

        def feed(n: int):
            return tf.data.Dataset.from_tensor_slices((x[: B * n], y[: B * n])).batch(B).prefetch(2)

        warm, timed = feed(8 if "spe8" in knobs else 2), feed(steps)
        fit = lambda data: model.fit(data, epochs=1, verbose=0)  # noqa: E731
    else:
        warm, timed = (x[: B * (8 if "spe8" in knobs else 2)], y[: B * (8 if "spe8" in knobs else 2)]), (x, y)
        fit = lambda data: model.fit(*data, batch_size=B, epochs=1, verbose=0, shuffle=False)  # noqa: E731
    fit(warm)  # build, trace, compile
    t0 = time.perf_counter()
    fit(timed)
    seconds = time.perf_counter() - t0
    targets = B * steps * (r["T"] if r["every_position"] else 1)
    return {"chars_per_s": targets / seconds, "hoisted_layers": installed, "versions": f"Keras {keras.__version__}"}


def torch_worker(recipe: str, knobs: set[str], steps: int, bf16: bool = False) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(1 if "threads1" in knobs else (os.cpu_count() or 2))
    torch.manual_seed(0)
    r = _shape(recipe, knobs)
    V, B, T = r["V"], r["B"], r["T"]

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(V, r["embedding"]) if r["embedding"] else None
            width = r["embedding"] or V
            self.lstm = nn.LSTM(width, r["units"], num_layers=r["layers"], batch_first=True, dropout=r["dropout"])
            self.drop = nn.Dropout(r["dropout"])
            self.head = nn.Linear(r["units"], V)

        def forward(self, x):
            x = self.emb(x) if self.emb is not None else nn.functional.one_hot(x, V).float()
            h, _ = self.lstm(x)
            if not r["every_position"]:
                h = h[:, -1]
            return self.head(self.drop(h))

    net = Net()
    if r["every_position"]:
        opt = torch.optim.Adam(net.parameters(), lr=5e-3, eps=1e-7)
    else:
        opt = torch.optim.RMSprop(net.parameters(), lr=0.01, alpha=0.9, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    x_np, y_np = _data(r, steps)
    x = torch.from_numpy(x_np.astype(np.int64)).reshape(steps, B, T)
    y = torch.from_numpy(y_np.astype(np.int64)).reshape(steps, B, *y_np.shape[1:])

    def step(i: int) -> None:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # float32 master weights
            logits = net(x[i])
        loss = loss_fn(logits.float().reshape(-1, V), y[i].reshape(-1))
        loss.backward()
        if r["every_position"]:
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    step(0)
    step(1)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    seconds = time.perf_counter() - t0
    targets = B * steps * (T if r["every_position"] else 1)
    return {"chars_per_s": targets / seconds, "versions": f"PyTorch {torch.__version__}"}


def train_worker(backend: str, recipe: str, steps: int, knobs: set[str] = frozenset()) -> dict:
    """charlstm.train itself (its data feed, callbacks and compile settings) on the first 300 KB of tiny
    Shakespeare: the `steps` batches after the first 5, timed between batch ends by a callback."""
    import tempfile

    os.environ["KERAS_BACKEND"] = backend  # before Keras is imported (here, for the callback class)
    if backend == "torch" and "threads1" in knobs:
        import torch

        torch.set_num_threads(1)
    sys.path.insert(0, str(HERE.parent))
    import keras
    from common import DATA

    import charlstm
    from charlstm.training.recipes import make_config

    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())
            if len(times) >= steps + 6:
                self.model.stop_training = True

    text = (DATA / "tiny_shakespeare.txt").read_text(encoding="utf-8")[:300_000]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "shakespeare.txt"
        src.write_text(text, encoding="utf-8")
        charlstm.train(
            src, recipe=recipe, out=Path(tmp) / "run", epochs=1, verbose=0, sample_length=1,
            callbacks=[Clock()], backend=backend,
        )
    config = make_config(recipe)
    per_batch = config.batch_size * (config.seq_len if config.mode == "sequences" else 1)
    timed = times[5:]
    return {
        "chars_per_s": per_batch * (len(timed) - 1) / (timed[-1] - timed[0]),
        "versions": f"Keras {keras.__version__}",
    }


AVX2_ONLY = {  # the `avx2` knob: every library's kernels capped at AVX2 (a stand-in for an AVX2-only CPU)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN in TensorFlow and PyTorch
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own kernels
    "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",  # XLA's code generation (JAX)
}


def worker(args: argparse.Namespace) -> None:
    knobs = set(filter(None, args.variant.split("+")))
    if "avx2" in knobs:
        os.environ.update(AVX2_ONLY)
    impl = args.worker
    if impl in ("torch", "torch-bf16"):
        result = torch_worker(args.recipe, knobs, args.steps, bf16=impl == "torch-bf16")
    elif impl.startswith("keras-torch"):
        engine = {"keras-torch-stock": "stock", "keras-torch-fused": "fused"}.get(impl, "lean")
        precision = "bf16" if impl == "keras-torch-bf16" else None
        result = keras_worker("torch", args.recipe, knobs, args.steps, engine=engine, precision=precision)
    elif impl.startswith("train-"):
        result = train_worker(impl.removeprefix("train-"), args.recipe, args.steps, knobs)
    else:
        result = keras_worker(impl, args.recipe, knobs, args.steps)
    print("RESULT " + json.dumps(result), flush=True)


# -- driver ------------------------------------------------------------------------------------------------


def run_one(impl: str, recipe: str, variant: str, steps: int) -> dict | None:
    cmd = [sys.executable, str(HERE), "--worker", impl, "--recipe", recipe, "--variant", variant, "--steps", str(steps)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    print(f"  {impl} {recipe} {variant}: failed (exit {proc.returncode}): {' | '.join(tail)}", flush=True)
    return None


def _torch_variants(variants: list[str]) -> list[str]:
    """The variants' knobs that PyTorch shares (batch, sequence length, threads), each combination once."""
    out: list[str] = []
    for v in variants:
        kept = "+".join(k for k in v.split("+") if k in ("threads1", "avx2") or (k[:1] in "btu" and k[1:].isdigit()))
        if kept not in out:
            out.append(kept)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="timed batches per measurement")
    ap.add_argument("--recipes", default="default,classic")
    ap.add_argument("--impls", default="tensorflow,jax,torch")
    ap.add_argument("--variants", default="", help="Keras knobs to compare, e.g. stock,hoisted,hoisted+xla")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--recipe", default="default", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    variants = args.variants.split(",") if args.variants else [""]
    cases = []
    for recipe in args.recipes.split(","):
        for impl in args.impls.split(","):
            keras = impl in ("tensorflow", "jax") or impl.startswith("keras-")
            for v in variants if keras else _torch_variants(variants):
                cases.append((recipe, impl, v))
    print(f"CPU: {cpu_description()}; Python {platform.python_version()}", flush=True)
    results: dict[tuple, list[float]] = {c: [] for c in cases}
    versions: dict[str, str] = {}
    for r in range(args.rounds):
        for case in cases:
            recipe, impl, v = case
            out = run_one(impl, recipe, v, args.steps)
            if out:
                results[case].append(out["chars_per_s"])
                versions[impl] = out["versions"]
                print(f"round {r + 1}: {recipe:8s} {impl + ('/' + v if v else ''):28s} "
                      f"{out['chars_per_s']:>10,.0f} target chars/s", flush=True)
    print(f"\nCPU: {cpu_description()}; " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
    print(f"median of {args.rounds} rounds, {args.steps} timed batches each:")
    print("| recipe | implementation | target chars/s (rounds) | median | vs PyTorch |\n|---|---|---|---:|---:|")
    for case, vals in results.items():
        recipe, impl, v = case
        if not vals:
            continue
        torch_vals = results.get((recipe, "torch", _torch_variants([v])[0]), [])
        ratio = f"{statistics.median(vals) / statistics.median(torch_vals):.2f}" if torch_vals else "-"
        rounds = " / ".join(f"{x:,.0f}" for x in vals)
        name = impl + (f" ({v})" if v else "")
        print(f"| {recipe} | {name} | {rounds} | {statistics.median(vals):,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
