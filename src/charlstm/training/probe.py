"""Which Keras backend trains a network fastest on this machine: measured once, then remembered.

Neither TensorFlow nor JAX wins on every CPU, nor for every network (benchmarks/README.md, "Choosing the backend"): on
this project's AVX-512 EPYC, Keras on TensorFlow trains the default 2 x LSTM(128) 1.4x faster than Keras on
JAX, but 2 x LSTM(256) 1.1-1.5x slower; on an AVX2 EPYC (issue 11) JAX trains the default network 1.8x
faster. So when nothing names a backend, `charlstm train` trains the run's own network (its layers, units,
input, batch and sequence length; random ids) for a few batches on each backend, each in a subprocess (about
10-20 s in all, once), trains with the faster one, and remembers the answer per machine, library versions and
network shape in `$CHARLSTM_CACHE/backend.json` (default ~/.cache/charlstm; delete it to measure again).
A backend that sees a GPU wins outright, TensorFlow first (cuDNN). Only the backends installed are
measured: the default install has PyTorch alone (the fused oneDNN LSTM and a lean step, torch_engine.py), so
there is nothing to measure; `charlstm[tensorflow]` and `charlstm[jax]` add the others.

    python -m charlstm.training.probe            # the default recipe's network, measured now (refreshes the cache)
    python -m charlstm.training.probe jax NET    # one backend's figure for NET (JSON), as the subprocesses run it
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE_NAME = "backend.json"
PROBE_VERSION = 2  # bump when the measurement changes, so that old answers are measured again
ORDER = ("tensorflow", "jax", "torch")  # preference on a tie or on GPUs: TensorFlow (cuDNN)
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve")
# the TrainConfig fields that shape the training step (the vocabulary size is not known yet: VOCAB stands in)
NETWORK_KEYS = (
    "mode", "input", "cell", "layers", "units", "embedding_dim", "dropout", "batch_size", "seq_len", "maxlen",
    "optimizer", "clipnorm", "mixed_precision",
)
VOCAB = 80


def network_of(config: Any) -> dict[str, Any]:
    """The part of a TrainConfig that decides which backend trains faster (what the answer is keyed by)."""
    net = {k: getattr(config, k) for k in NETWORK_KEYS}
    net["seq_len" if net["mode"] == "windows" else "maxlen"] = None  # the other layout's length: unused
    if net["mixed_precision"] == "auto":  # decided per backend after the choice (torch_engine.auto_precision)
        net["mixed_precision"] = None
    return net


def default_network() -> dict[str, Any]:
    from charlstm.training.recipes import make_config

    return network_of(make_config("default"))


def cache_path() -> Path:
    from charlstm.data.cache import cache_dir

    return cache_dir() / CACHE_NAME


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() in ("flags", "Features"):
                    flags = set(value.split())
    except OSError:
        pass
    return model, sorted(flags.intersection(ISA_FLAGS))


def machine_key() -> str:
    """What the answer depends on: the CPU (model, cores, vector extensions) and the library versions."""
    model, isa = _cpu()
    parts = {
        "probe": PROBE_VERSION,
        "cpu": model,
        "cores": os.cpu_count(),
        "isa": isa,
        "python": platform.python_version(),
        **{dist: _version(dist) for dist in ("keras", "tensorflow", "jax", "jaxlib", "torch")},
    }
    return json.dumps(parts, sort_keys=True)


def measure(backend: str, network: dict[str, Any], timeout: float = 300, quick: bool = False) -> dict[str, Any] | None:
    """One backend's figure for `network` from a fresh subprocess (the backend is fixed per process), or None
    if it failed. `quick`: two batches (tests of the mechanism; the figure means little)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend == "torch":  # as the torch training process will run (backend.torch_threads_wait_passively)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [sys.executable, "-m", "charlstm.training.probe", backend, json.dumps(network), *(["--quick"] if quick else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def installed() -> list[str]:
    """The backends installed here, in ORDER (the default install: torch alone; TensorFlow and JAX are extras)."""
    return [b for b in ORDER if _importable(b)]


def _importable(name: str) -> bool:
    """backend.available (not imported from there: backend imports this module)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # an import hook that refuses it
        return False


def remembered(network: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The answer measured before for `network` (None: the default recipe's) on this machine, or None: what
    a process that cannot choose any more (Keras imported) can still say about the others."""
    try:
        net = json.dumps(network or default_network(), sort_keys=True)
        known = _read_cache(cache_path()).get(machine_key(), {})
        answer = known.get(net) if isinstance(known, dict) else None
    except Exception:  # noqa: BLE001 - a warning's extra figures must never stop training
        return None
    return answer if isinstance(answer, dict) and answer.get("backend") in ORDER else None


def pick(figures: dict[str, dict[str, Any]]) -> str:
    """The backend to train with, given each working backend's figure: one on a GPU first, else the fastest."""
    on_gpu = [b for b in ORDER if b in figures and figures[b]["device"] != "cpu"]
    if on_gpu:
        return on_gpu[0]
    if not figures:
        return ORDER[0]
    return max(figures, key=lambda b: (figures[b]["chars_per_s"], -ORDER.index(b)))


def choose(
    network: dict[str, Any] | None = None,
    *,
    refresh: bool = False,
    say: Callable[[str], None] | None = None,
    measure_one: Callable[..., Any] = measure,
) -> str:
    """The faster backend for `network` (None: the default recipe's) on this machine: remembered, or measured
    now (and remembered)."""
    candidates = installed()
    if len(candidates) == 1:
        return candidates[0]
    network = network or default_network()
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    path, machine, net = cache_path(), machine_key(), json.dumps(network, sort_keys=True)
    cache = _read_cache(path)
    known = cache.get(machine, {}).get(net) if isinstance(cache.get(machine), dict) else None
    if not refresh and isinstance(known, dict) and known.get("backend") in ORDER:
        return known["backend"]
    shape = f"{network['layers']} x {network['cell'].upper()}({network['units']}), batch {network['batch_size']}"
    say(f"charlstm: measuring which Keras backend trains {shape} faster on this machine (once; remembered in "
        f"{path}) ...")
    figures: dict[str, dict[str, Any]] = {}
    for backend in candidates:
        figure = measure_one(backend, network)
        if figure is not None:
            figures[backend] = figure
            if figure["device"] != "cpu":  # an accelerator: no CPU figure can beat it
                break
    choice = pick(figures)
    shown = ", ".join(f"{b} {f['chars_per_s']:,.0f}" for b, f in figures.items()) or "no backend could be measured"
    say(f"charlstm: {shown} target chars/s -> training with {choice}")
    if figures:  # a failed measurement is not remembered: the next run tries again
        from charlstm.fileio import write_atomic

        if not isinstance(cache.get(machine), dict):
            cache[machine] = {}
        cache[machine][net] = {"backend": choice, "figures": figures, "measured": time.strftime("%Y-%m-%d %H:%M")}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(cache, indent=1))
        except OSError as exc:  # a read-only home must not stop training
            say(f"charlstm: could not remember the choice in {path} ({exc.strerror or exc})")
    return choice


def run_probe(network: dict[str, Any], windows: int = 3, batches: int = 8, quick: bool = False) -> dict[str, Any]:
    """In a process whose backend is already chosen: build and compile `network` as the trainer does, train it
    on random ids and return the best of `windows` timings of `batches` batches, in target characters/s."""
    import types

    if os.environ.get("KERAS_BACKEND") == "torch":  # as a torch training process: without TensorFlow
        from charlstm.training.torch_engine import keep_tensorflow_out

        keep_tensorflow_out()
    import keras
    import numpy as np

    from charlstm.training.device import device
    from charlstm.training.model import build_model, compile_model, model_spec
    from charlstm.training.recipes import TrainConfig

    config = TrainConfig(**{k: v for k, v in network.items() if k not in ("seq_len", "maxlen") or v is not None})
    windows, batches = (1, 2) if quick else (windows, batches)
    keras.utils.set_random_seed(0)
    model = build_model(model_spec(config, types.SimpleNamespace(size=VOCAB)), config.mixed_precision)
    compile_model(model, config, steps_per_epoch=batches)
    rows = config.batch_size * (1 + windows * batches)
    rng = np.random.default_rng(0)
    if config.mode == "windows":  # the lesson: one target per window
        length, targets_per_row = config.maxlen, 1
        y = rng.integers(0, VOCAB, rows)
    else:
        length = targets_per_row = config.seq_len
        y = rng.integers(0, VOCAB, (rows, length))
    x, y = rng.integers(0, VOCAB, (rows, length)).astype(np.int32), y.astype(np.int32)
    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            ends.append(time.perf_counter())

    # one fit: the first batch builds and compiles; then `windows` windows of `batches` batches, timed between
    # batch ends (no per-fit overhead); the best window counts, as a busy neighbour only ever slows one down
    model.fit(x, y, batch_size=config.batch_size, verbose=0, shuffle=False, callbacks=[Clock()])
    best = max(
        batches * config.batch_size * targets_per_row / (ends[i + batches] - ends[i])
        for i in range(0, len(ends) - batches, batches)
    )
    return {"backend": keras.backend.backend(), "device": device()["kind"], "chars_per_s": round(best)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv:  # one backend, in this process (what measure()'s subprocesses run)
        os.environ["KERAS_BACKEND"] = argv[0]  # before Keras is imported
        network = json.loads(argv[1]) if len(argv) > 1 and argv[1].startswith("{") else default_network()
        print(json.dumps(run_probe(network, quick="--quick" in argv)), flush=True)
        return
    print(choose(refresh=True))


if __name__ == "__main__":
    main()
