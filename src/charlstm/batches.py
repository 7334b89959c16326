"""From one encoded id array to training batches, without ever materialising more than a batch.

Two layouts:
- windows (the lesson): every `step`-th position starts a `maxlen`-character input whose target is the one
  next character;
- sequences (char-rnn/nanoGPT): contiguous `seq_len`-character inputs whose targets are the same characters
  shifted by one, cut at a fresh random offset every epoch and shuffled, so every position is a target.

The arrangement of an epoch is a pure function of (seed, epoch): resuming at epoch k sees exactly the batches
an uninterrupted run would have seen. Rows are gathered by fancy indexing (a copy), so the corpus array
itself is never permuted in place.
"""

from __future__ import annotations

import math

import numpy as np

from charlstm.errors import CharlstmError


def split_ids(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Train on the first (1 - val_frac) of the text, validate on the contiguous rest."""
    if val_frac <= 0:
        return ids, ids[:0]
    cut = int(round(len(ids) * (1 - val_frac)))
    return ids[:cut], ids[cut:]


def window_starts(n_chars: int, maxlen: int, step: int) -> np.ndarray:
    """The lesson's `for i in range(0, len(text) - maxlen, step)`: input text[i:i+maxlen], target text[i+maxlen]."""
    if n_chars <= maxlen:
        raise CharlstmError(
            f"the training text has {n_chars} characters, shorter than one training window "
            f"({maxlen} + 1); use a longer text or a smaller --maxlen"
        )
    return np.arange(0, n_chars - maxlen, step, dtype=np.int64)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def sequence_layout(n_chars: int, seq_len: int) -> tuple[int, int]:
    """(number of sequences per epoch, number of possible offsets): constant over epochs."""
    if n_chars < seq_len + 1:
        raise CharlstmError(
            f"the training text has {n_chars} characters, shorter than one training window "
            f"({seq_len} + 1); use a longer text or a smaller --seq-len"
        )
    offsets = min(seq_len, n_chars - seq_len)
    return (n_chars - offsets) // seq_len, offsets


def sequence_starts(n_chars: int, seq_len: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Start positions of this epoch's sequences: a random offset, then every seq_len, in shuffled order."""
    count, offsets = sequence_layout(n_chars, seq_len)
    rng = epoch_rng(seed, epoch)
    offset = int(rng.integers(offsets)) if shuffle else 0
    starts = offset + seq_len * np.arange(count, dtype=np.int64)
    return starts[rng.permutation(count)] if shuffle else starts


def gather(ids: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Rows ids[s : s + length] for each start, as int32 (a copy)."""
    return ids[starts[:, None] + np.arange(length)[None, :]].astype(np.int32)


def _keras_dataset_base():
    import keras

    return keras.utils.PyDataset


class _EpochBatches:
    """Shared epoch bookkeeping; subclasses define `_arrange(epoch)` and `_batch(starts)`."""

    def __init__(self, ids: np.ndarray, batch_size: int, seed: int, shuffle: bool) -> None:
        self.ids = ids
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.starts = np.zeros(0, np.int64)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.starts = self._arrange(epoch)

    def _arrange(self, epoch: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _batch(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError


def make_sequence_batches(ids: np.ndarray, seq_len: int, batch_size: int, seed: int, shuffle: bool = True):
    """A keras PyDataset of (x, y) = (ids[s:s+L], ids[s+1:s+L+1]) rows.

    Training (shuffle=True) fills every batch to `batch_size`, wrapping around the epoch's shuffled order, so
    all batches share one shape (one compiled step); validation (shuffle=False) keeps each sequence once.
    """
    base = _keras_dataset_base()

    class SequenceBatches(_EpochBatches, base):
        def __init__(self) -> None:
            base.__init__(self)
            _EpochBatches.__init__(self, ids, batch_size, seed, shuffle)

        def _arrange(self, epoch: int) -> np.ndarray:
            if not self.shuffle and len(self.ids) >= 2 and len(self.ids) < seq_len + 1:
                return np.zeros(1, np.int64)  # a short validation text: one shorter sequence
            return sequence_starts(len(self.ids), seq_len, seed, epoch, shuffle=self.shuffle)

        @property
        def seq_len(self) -> int:
            return min(seq_len, len(self.ids) - 1)

        def __len__(self) -> int:
            return math.ceil(len(self.starts) / batch_size)

        def __getitem__(self, index: int):
            rows = index * batch_size + np.arange(batch_size)
            if self.shuffle:
                rows %= len(self.starts)
            else:
                rows = rows[rows < len(self.starts)]
            chunk = gather(self.ids, self.starts[rows], self.seq_len + 1)
            return chunk[:, :-1], chunk[:, 1:]

    return SequenceBatches()


def make_window_batches(
    ids: np.ndarray, maxlen: int, step: int, batch_size: int, seed: int, shuffle: bool = True
):
    """A keras PyDataset of the lesson's windows: x = ids[i:i+maxlen] (ids, one-hot inside the model), y = ids[i+maxlen]."""
    base = _keras_dataset_base()
    all_starts = window_starts(len(ids), maxlen, step)

    class WindowBatches(_EpochBatches, base):
        def __init__(self) -> None:
            base.__init__(self)
            _EpochBatches.__init__(self, ids, batch_size, seed, shuffle)

        def _arrange(self, epoch: int) -> np.ndarray:
            return (
                all_starts[epoch_rng(seed, epoch).permutation(len(all_starts))]
                if self.shuffle
                else all_starts
            )

        def __len__(self) -> int:
            return math.ceil(len(self.starts) / batch_size)

        def __getitem__(self, index: int):
            starts = self.starts[index * batch_size : (index + 1) * batch_size]
            return gather(self.ids, starts, maxlen), self.ids[starts + maxlen].astype(np.int32)

    return WindowBatches()
