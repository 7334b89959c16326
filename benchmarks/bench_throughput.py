"""Training throughput (target characters per second): charlstm's default model vs the same network in PyTorch.

Same sizes (Embedding 64, 2 x LSTM(128), Dense(V)), batch 64, sequence 128, Adam with clipnorm 1.0, on this
CPU, alternating Keras and PyTorch rounds in one process so machine noise hits both alike.
PyTorch is not a dependency of charlstm: `pip install torch` first (CPU build).

    python benchmarks/bench_throughput.py [--rounds 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
V, E, U, LAYERS, B, T = 65, 64, 128, 2, 64, 128


def keras_runner(steps: int):
    import keras

    from charlstm.model import ModelSpec, build_model
    from charlstm.recipes import make_config
    from charlstm.trainer import _compile

    config = make_config("default")
    model = build_model(ModelSpec(V, embedding_dim=E, units=U, layers=LAYERS, dropout=config.dropout))
    _compile(model, config, steps_per_epoch=steps)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B * steps, T)).astype(np.int32)
    y = rng.integers(0, V, (B * steps, T)).astype(np.int32)
    model.fit(x[: B * 2], y[: B * 2], batch_size=B, epochs=1, verbose=0, shuffle=False)  # build + trace
    keras.utils.set_random_seed(0)

    def run() -> float:
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=B, epochs=1, verbose=0, shuffle=False)
        return B * T * steps / (time.perf_counter() - t0)

    return run


def torch_runner(steps: int, dropout: float):
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(V, E)
            self.lstm = nn.LSTM(E, U, num_layers=LAYERS, batch_first=True, dropout=dropout)
            self.drop = nn.Dropout(dropout)
            self.head = nn.Linear(U, V)

        def forward(self, x):
            h, _ = self.lstm(self.emb(x))
            return self.head(self.drop(h))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, V, (steps, B, T)).astype(np.int64))
    y = torch.from_numpy(rng.integers(0, V, (steps, B, T)).astype(np.int64))

    def step(i: int) -> None:
        opt.zero_grad()
        loss = loss_fn(net(x[i]).reshape(-1, V), y[i].reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    step(0)

    def run() -> float:
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        return B * T * steps / (time.perf_counter() - t0)

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    from charlstm.recipes import make_config

    runners = {"charlstm (Keras/TF)": keras_runner(args.steps),
               "PyTorch nn.LSTM": torch_runner(args.steps, make_config("default").dropout)}
    results: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.rounds):
        for name, run in runners.items():
            results[name].append(run())
            print(f"round {r + 1}: {name:20s} {results[name][-1]:>9,.0f} target chars/s", flush=True)
    med = {k: float(np.median(v)) for k, v in results.items()}
    keras_name, torch_name = list(med)
    print(f"median: {keras_name} {med[keras_name]:,.0f}/s, {torch_name} {med[torch_name]:,.0f}/s, "
          f"ratio {med[keras_name] / med[torch_name]:.2f}")


if __name__ == "__main__":
    main()
