"""One training step of the default network: charlstm's torch engine against a plain PyTorch `nn.LSTM` script,
step by step in one process, and where each one's time goes (torch.profiler).

    python benchmarks/profile_step.py [--steps 30] [--threads 1] [--units 128] [--no-profile]

Both train the same shape as `bench_throughput.py`'s default recipe (Embedding 64, 2 x LSTM(128), dropout 0.1,
Dense over 65 symbols; batch 64 x 64; Adam with clipnorm 1.0): charlstm's model is built and compiled as the
trainer does (`compile_model`, so `torch_engine.prepare`: the fused-LSTM hook, the lean step, the direct
forward, foreach clipnorm) and its `train_step` called on torch tensors; the plain script is
`bench_throughput.torch_worker`'s network and loop (nn.LSTM, CrossEntropyLoss, clip_grad_norm_, torch Adam).
The two alternate step by step, so a busy neighbour slows both alike; the ratio is of the median step times.
Keras' `fit` loop, the data feed and the callbacks are not in this step: `bench_throughput.py --impls
train-torch` measures `charlstm.train` whole.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

V, B, T, EMB = 65, 64, 64, 64


def charlstm_step(units: int, layers: int, dropout: float):
    from charlstm.training import torch_engine

    torch_engine.keep_tensorflow_out()
    import keras

    from charlstm.training.model import ModelSpec, build_model, compile_model
    from charlstm.training.recipes import make_config

    keras.utils.set_random_seed(0)
    config = make_config("default", layers=layers, units=units, dropout=dropout)
    model = build_model(ModelSpec(V, embedding_dim=EMB, layers=layers, units=units, dropout=dropout))
    compile_model(model, config, steps_per_epoch=1000)
    print(f"charlstm: {torch_engine.describe()}", flush=True)
    return lambda x, y: model.train_step((x, y))


def plain_step(units: int, layers: int, dropout: float):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(V, EMB)
            self.lstm = nn.LSTM(EMB, units, num_layers=layers, batch_first=True, dropout=dropout)
            self.drop = nn.Dropout(dropout)
            self.head = nn.Linear(units, V)

        def forward(self, x):
            h, _ = self.lstm(self.emb(x))
            return self.head(self.drop(h))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(net(x.long()).reshape(-1, V), y.long().reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--units", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from bench_throughput import cpu_description

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, V, (B, T)).astype(np.int32))
    y = torch.from_numpy(rng.integers(0, V, (B, T)).astype(np.int32))
    steps = {"charlstm": charlstm_step(args.units, args.layers, args.dropout),
             "pytorch": plain_step(args.units, args.layers, args.dropout)}
    for step in steps.values():  # warm-up: build, first allocations
        step(x, y)
        step(x, y)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(x, y)
            times[name].append(time.perf_counter() - t0)
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {args.threads} thread(s); "
          f"load average {os.getloadavg()[0]:.1f}")
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:9s} median {1000 * median[name]:6.1f} ms/step, min {1000 * min(t):6.1f} ms "
              f"({B * T / median[name]:,.0f} target chars/s)")
    print(f"charlstm / pytorch speed: {median['pytorch'] / median['charlstm']:.3f} (median), "
          f"{min(times['pytorch']) / min(times['charlstm']):.3f} (fastest steps)")
    if args.no_profile:
        return
    from torch.profiler import ProfilerActivity, profile

    for name, step in steps.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step(x, y)
        print(f"\n{name}: 5 steps, by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))


if __name__ == "__main__":
    main()
