"""Data-parallel training on engines that exist: none, mirrored (one machine) or multihost (many processes).

- `mirrored`: TensorFlow's `tf.distribute.MirroredStrategy` over every local GPU (or, without GPUs, every
  logical CPU device). The model is built and compiled under its scope; `fit` splits each global batch
  between the replicas and all-reduces the gradients.
- `multihost`: N processes (one per machine, each with its local devices) through Keras' own distribution
  API on JAX: `keras.distribution.initialize` (which calls `jax.distributed.initialize`; CPUs talk through
  gloo) and `keras.distribution.DataParallel` with `auto_shard_dataset=False`, every process feeding its own
  rows of each global batch (`batches.shard_rows`) from the same seed, so the data order stays a pure
  function of (seed, epoch). The process switches to the JAX backend itself, before Keras is imported.

Why not TensorFlow's MultiWorkerMirroredStrategy: with Keras 3.15.1 / TensorFlow 2.21 its `model.fit` fails
before the first step (`_maybe_symbolic_build` reduces the input batch, keras-team/keras#20585) and, with that
step patched, inside the train step (`reduce_per_replica`); it is not usable without patching Keras.

`--batch-size` is per replica (device): the global batch is batch_size x replicas, which config.json records.
Process 0 (the chief) writes the run directory; the others write their checkpoints to a private temporary
folder (TensorFlow's multi-worker pattern), so the run has exactly one set of files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlstm.errors import CharlstmError, TrainingInterrupted

KINDS = ("none", "mirrored", "multihost")
# the variables keras.distribution.initialize reads, in the order of our three options
ENV_COORDINATOR = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"


@dataclass(frozen=True)
class Request:
    """What the user asked for, checked before Keras (and TensorFlow or JAX) is imported."""

    kind: str = "none"
    coordinator: str | None = None  # HOST:PORT of process 0 (multihost)
    num_processes: int = 1
    process_id: int = 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise CharlstmError(f"${name} must be an integer, got {value!r}") from None


def request(
    kind: str | None = None,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> Request:
    """Check the options (multihost ones fall back to Keras' KERAS_DISTRIBUTION_* environment variables)."""
    kind = kind or "none"
    if kind not in KINDS:
        raise CharlstmError(f"--distribute must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "multihost":
        if coordinator is not None or num_processes is not None or process_id is not None:
            raise CharlstmError("--coordinator, --num-processes and --process-id need --distribute multihost")
        return Request(kind)
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    if coordinator and "," in coordinator:  # Keras accepts every job's address; the first is the coordinator
        coordinator = coordinator.split(",")[0]
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    num_processes = 1 if num_processes is None else num_processes
    if num_processes < 1:
        raise CharlstmError(f"--num-processes must be >= 1, got {num_processes}")
    if num_processes > 1:
        if not coordinator:
            raise CharlstmError(
                f"--distribute multihost with {num_processes} processes needs --coordinator HOST:PORT "
                f"(process 0's address, the same on every process; or ${ENV_COORDINATOR})"
            )
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise CharlstmError(f"--coordinator must be HOST:PORT (e.g. 10.0.0.1:1234), got {coordinator!r}")
        if process_id is None:
            raise CharlstmError(f"--distribute multihost needs --process-id (0 to {num_processes - 1}; or ${ENV_PROCESS_ID})")
    process_id = 0 if process_id is None else process_id
    if not 0 <= process_id < num_processes:
        raise CharlstmError(f"--process-id must be between 0 and {num_processes - 1}, got {process_id}")
    return Request(kind, coordinator, num_processes, process_id)


def backend_for(req: Request, backend: str | None) -> str | None:
    """The Keras backend a request needs: multihost runs on JAX, mirrored on TensorFlow (None: no constraint)."""
    if req.kind != "none" and backend == "torch":
        raise CharlstmError(
            f"--distribute {req.kind} is not supported on the torch backend: mirrored runs on TensorFlow, "
            "multihost on JAX; drop --backend torch or --distribute"
        )
    from charlstm.training.backend import require

    if req.kind == "multihost":
        require("jax", "--distribute multihost (Keras' distribution API on JAX)")
        if backend == "tensorflow":
            raise CharlstmError(
                "--distribute multihost runs on Keras' distribution API with the JAX backend; drop --backend "
                "tensorflow (TensorFlow's MultiWorkerMirroredStrategy does not work with Keras 3's fit)"
            )
        return "jax"
    if req.kind == "mirrored":
        require("tensorflow", "--distribute mirrored (TensorFlow's MirroredStrategy)")
        if backend == "jax":
            raise CharlstmError(
                "--distribute mirrored is TensorFlow's MirroredStrategy; with JAX use --distribute multihost "
                "(with --num-processes 1 it uses all devices of this machine)"
            )
        return "tensorflow"
    return backend


@dataclass
class Distributed:
    """The running distribution: how many replicas share each global batch and which process this is."""

    kind: str = "none"
    replicas: int = 1  # devices over all processes; each takes batch_size rows of every global batch
    process_id: int = 0
    num_processes: int = 1
    strategy: Any = None  # tf.distribute.MirroredStrategy, or keras.distribution.DataParallel
    _scratch: Any = field(default=None, repr=False)

    @property
    def chief(self) -> bool:
        """Process 0 writes the run directory, prints, and samples; the others only compute."""
        return self.process_id == 0

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Where the model is built and compiled (its variables are created as mirrored/replicated) and
        trained (Keras' JAX trainer reads the distribution in fit to assemble each global batch)."""
        if self.strategy is None:
            return contextlib.nullcontext()
        return self.strategy.scope()

    def output_dir(self, run_dir: Path) -> Path:
        """Where this process writes its run files: the run directory on the chief, else a private scratch
        folder (removed when the process ends) so that workers never touch the run's files."""
        if self.chief:
            return run_dir
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix=f"charlstm-worker{self.process_id}-")
        return Path(self._scratch.name)

    @contextlib.contextmanager
    def training(self, run_dir: Path) -> Iterator[None]:
        """Around fit: the distribution's scope, and a failed collective (another process died or lost the
        network) turned into a resumable stop.

        The run's last checkpoint is its last finished epoch; the surviving processes cannot go on alone, so
        they stop with a message that says how to relaunch (JAX then ends them within its heartbeat timeout).
        """
        if self.num_processes == 1:
            with self.scope():
                yield
            return
        import jax

        try:
            with self.scope():
                yield
        except jax.errors.JaxRuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingInterrupted(
                f"process {self.process_id} of {self.num_processes} stopped: a step with the other processes "
                f"failed ({first}); a process died or lost the network. Relaunch every process with --resume "
                f"{run_dir} (the run goes on from its last finished epoch)"
            ) from None

    def describe(self, batch_size: int) -> dict[str, Any]:
        """What config.json records: the kind, the replicas and processes, and the global batch."""
        return {
            "kind": self.kind,
            "replicas": self.replicas,
            "processes": self.num_processes,
            "batch_size_per_replica": batch_size,
            "global_batch_size": batch_size * self.replicas,
        }


def start(req: Request) -> Distributed:
    """Start the distribution (imports Keras): build the strategy, join the other processes."""
    if req.kind == "mirrored":
        return _mirrored()
    if req.kind == "multihost":
        return _multihost(req)
    return Distributed()


def _mirrored() -> Distributed:
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    return Distributed("mirrored", strategy.num_replicas_in_sync, strategy=strategy)


def _multihost(req: Request) -> Distributed:
    import jax
    import keras

    if req.num_processes > 1 and not jax.distributed.is_initialized():  # once per process (train() may run again)
        if not jax.config.jax_cpu_collectives_implementation:  # CPUs talk through gloo (older JAX: no default)
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        # jax.distributed.initialize underneath; it waits for all processes (5 minutes at most)
        try:
            keras.distribution.initialize(req.coordinator, req.num_processes, req.process_id)
        except Exception as exc:  # a refused or unreachable coordinator, a timeout, a duplicate process id
            raise CharlstmError(
                f"process {req.process_id} of {req.num_processes} could not join the job at {req.coordinator}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
    if jax.process_count() != req.num_processes:
        raise CharlstmError(
            f"this process already joined a job of {jax.process_count()} processes; start a new process for "
            f"a job of {req.num_processes}"
        )
    devices = keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    if len(devices) % req.num_processes:
        raise CharlstmError(
            f"multihost needs the same number of devices on every process: {len(devices)} devices over "
            f"{req.num_processes} processes"
        )
    return Distributed("multihost", len(devices), jax.process_index(), jax.process_count(), strategy=distribution)
