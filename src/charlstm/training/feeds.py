"""The framework's feeds over data/batches.py's layouts: tf.data streams and a Keras `PyDataset`.

data/ lays out batches in NumPy and imports no framework (a contract in pyproject.toml); this module hands
those batches to `fit`: through tf.data on the TensorFlow and JAX backends, as a plain generator (and a
`PyDataset` for validation) on torch, which must not load TensorFlow. Every batch is fixed by its
(epoch, index) position, so a resumed run reads what an uninterrupted one would have read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from charlstm.data.batches import EpochBatches


def to_tf_dataset(batches: EpochBatches, first_epoch: int = 0, last_epoch: int | None = None):
    """One tf.data stream of epochs first_epoch..last_epoch-1 (or one pass of epoch 0 if last_epoch is None).

    No Python per example: per epoch, one NumPy call lays out the start positions (`epoch_rows`, a pure
    function of (seed, epoch), so a resumed run sees the batches an uninterrupted one would); tf.data cuts
    them into batches; a parallel `numpy_function` gathers each batch's rows from the id array (for a
    prepared corpus, from its file: see `read_rows`); prefetching overlaps that with the training step. The batches are
    byte for byte those of `EpochBatches.epoch_batches`. Used with `fit(steps_per_epoch=len(batches))`, each
    batch's content is fixed by its position in the stream, so running ahead across epoch boundaries cannot
    change the data order. Keras feeds a tf.data.Dataset to the JAX backend too.
    """
    import tensorflow as tf

    epochs = list(range(first_epoch, last_epoch)) if last_epoch is not None else [0]
    count = len(batches) * len(epochs)  # every epoch has the same number of batches
    dataset = _feed(batches, tf.data.Dataset.from_tensor_slices(np.array(epochs, dtype=np.int64)), epochs[0])
    return dataset.apply(tf.data.experimental.assert_cardinality(count)).prefetch(tf.data.AUTOTUNE)


def to_tf_stream(batches: EpochBatches, epoch: int = 0, batch: int = 0):
    """An endless stream: epoch `epoch` from its batch `batch` on, then epoch + 1, epoch + 2, ...

    A time-budgeted run stops by the clock, not by a count, and resumes from the batch where it stopped;
    each batch is still fixed by its (epoch, index) position, as in `to_tf_dataset`.
    """
    import tensorflow as tf

    return _feed(batches, tf.data.Dataset.counter(start=epoch), epoch, skip=batch).prefetch(tf.data.AUTOTUNE)


def _feed(batches: EpochBatches, epoch_numbers, first_epoch: int, skip: int = 0):
    """Batches (x, y) of the epochs that `epoch_numbers` (a dataset of int64) names, after `skip` batches."""
    import tensorflow as tf

    x, y = batches.rows(batches.epoch_rows(first_epoch)[:1])
    y_shape = (None, *y.shape[1:])
    x_shape = (None, *x.shape[1:]) if not isinstance(x, dict) else None

    def epoch_rows(epoch: np.int64) -> np.ndarray:
        return batches.epoch_rows(int(epoch)).astype(np.int64, copy=False)

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        rows = tf.numpy_function(epoch_rows, [epoch], tf.int64, stateful=False)
        return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(rows, [None])).batch(batches.local_batch_size)

    if isinstance(x, dict):  # tagged: (chars, tags) in, as the model's two named inputs (data/tags.py)
        x_shape = (None, *x["chars"].shape[1:])

        def tagged_rows(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            bx, by = batches.rows(starts)
            return bx["chars"], bx["tags"], by

        def gather(starts: tf.Tensor) -> tuple[Any, tf.Tensor]:
            bx, bt, by = tf.numpy_function(tagged_rows, [starts], (tf.int32, tf.int32, tf.int32), stateful=False)
            return ({"chars": tf.ensure_shape(bx, x_shape), "tags": tf.ensure_shape(bt, x_shape)},
                    tf.ensure_shape(by, y_shape))
    else:
        def gather(starts: tf.Tensor) -> tuple[Any, tf.Tensor]:
            bx, by = tf.numpy_function(batches.rows, [starts], (tf.int32, tf.int32), stateful=False)
            return tf.ensure_shape(bx, x_shape), tf.ensure_shape(by, y_shape)

    return (
        epoch_numbers.flat_map(one_epoch)
        .skip(skip)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    )


def to_numpy_stream(batches: EpochBatches, epoch: int = 0, batch: int = 0, last_epoch: int | None = None):
    """The NumPy twin of `to_tf_stream` (and, with `last_epoch`, of `to_tf_dataset`): batches (x, y) of epoch
    `epoch` from its batch `batch` on, then the following epochs (up to `last_epoch` - 1, or endlessly).

    For the torch backend, which must not load TensorFlow (its thread pools fight torch's on small CPUs):
    `fit` takes a generator as it takes a tf.data stream, one batch per step, each fixed by its (epoch,
    index) position. Gathering a batch costs about 0.2 ms (`read_rows`), so there is no prefetch thread.
    """
    while last_epoch is None or epoch < last_epoch:
        rows = batches.epoch_rows(epoch)
        size = batches.local_batch_size
        for index in range(batch, math.ceil(len(rows) / size)):
            yield batches.batch(rows, index)
        epoch, batch = epoch + 1, 0


def to_numpy_dataset(batches: EpochBatches):
    """One pass of epoch 0 as a `keras.utils.PyDataset` (validation data that `fit` reads once an epoch),
    batch for batch what `to_tf_dataset(batches)` gives."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rows = batches.epoch_rows(0)
            self.count = math.ceil(len(self.rows) / batches.local_batch_size)

        def __len__(self) -> int:
            return self.count

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            if not 0 <= index < self.count:
                raise IndexError(index)
            return batches.batch(self.rows, index)

    return Batches()
