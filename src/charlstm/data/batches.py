"""From one encoded id array to training batches, without ever materialising more than a batch.

Three layouts:
- windows (the lesson): every `step`-th position starts a `maxlen`-character input whose target is the one
  next character;
- sequences (char-rnn/nanoGPT): contiguous `seq_len`-character inputs whose targets are the same characters
  shifted by one, cut at a fresh random offset every epoch and shuffled, so every position is a target;
- streams (char-rnn/torch-rnn, for a carried state): the text as `batch_size` contiguous streams, row r of
  batch k+1 continuing row r of batch k, so the recurrent state can be carried from one batch to the next.

The arrangement of an epoch is a pure function of (seed, epoch): resuming at epoch k sees exactly the batches
an uninterrupted run would have seen. Rows are gathered by fancy indexing (a copy), so the corpus array
itself is never permuted in place.
"""

from __future__ import annotations

import math
import os
from typing import Any

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
    if not shuffle:  # validation: every full chunk from the start, in order
        return seq_len * np.arange((n_chars - 1) // seq_len, dtype=np.int64)
    rng = epoch_rng(seed, epoch)
    offset = int(rng.integers(offsets))
    # (offset + seq_len * arange(count))[permutation], computed in place: one array, not three (a 1 GB
    # corpus has 14 million sequences an epoch)
    starts = rng.permutation(count)
    starts *= seq_len
    starts += offset
    return starts


def shard_rows(rows: np.ndarray, batch_size: int, index: int = 0, count: int = 1, replicas: int = 1) -> np.ndarray:
    """Process `index` of `count`'s share of an epoch laid out in global batches of `batch_size` rows.

    It takes rows index::count of every global batch, so batch i of every process together is global batch i
    and the data order stays a pure function of (seed, epoch), whatever the number of processes. A smaller
    last batch is cut to a multiple of `replicas` (the devices of all processes) so that every device gets
    the same number of rows; shorter than that, it is left out. `batch_size` and `replicas` must be
    multiples of `count` (every process has as many devices). With one process and one replica: `rows`.
    """
    if count == 1 and replicas == 1:
        return rows
    full = len(rows) // batch_size * batch_size
    tail = rows[full : len(rows) - (len(rows) - full) % replicas]
    head = rows[:full].reshape(-1, batch_size)[:, index::count].reshape(-1)
    return np.concatenate([head, tail[index::count]])


def gather(ids: Any, starts: np.ndarray, length: int) -> np.ndarray:
    """Rows ids[s : s + length] for each start, as int32 (a copy). `ids` may be a memory map of a prepared
    corpus (rows are then read from its file: see `read_rows`) or a `RemappedIds` view."""
    if isinstance(ids, RemappedIds):
        return ids.table[gather(ids.ids, starts, length)]
    if isinstance(ids, np.memmap) and ids.filename:
        return read_rows(ids, starts, length).astype(np.int32)
    return np.asarray(ids[starts[:, None] + np.arange(length)[None, :]], dtype=np.int32)


def read_rows(ids: np.memmap, starts: np.ndarray, length: int) -> np.ndarray:
    """Rows of a memory-mapped id array, read with pread from its file rather than through the mapping.

    Why: random rows touch pages all over a big corpus, and the kernel maps far more than the 65 bytes a row
    needs around each one (fault-around, large page-cache folios): on this project's machine 400 batches of
    a 1 GB corpus left 959 MB of it mapped into the process, so RSS grew toward the corpus' size within an
    epoch (nanoGPT re-creates its np.memmap every batch for the same reason). pread copies just the bytes
    asked for, from the page cache, and maps nothing: 0.16 ms a batch of 64 rows here, RSS flat.
    """
    root = ids
    while isinstance(root.base, np.ndarray):  # a slice's file position: its root map's offset + the distance
        root = root.base
    first = root.offset + ids.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    size = ids.dtype.itemsize
    fd = os.open(ids.filename, os.O_RDONLY)
    try:
        data = b"".join([os.pread(fd, length * size, first + s * size) for s in starts.tolist()])
    finally:
        os.close(fd)
    return np.frombuffer(data, dtype=ids.dtype).reshape(len(starts), length)


def span(ids: Any, start: int, stop: int) -> np.ndarray:
    """ids[start:stop], read as `gather` reads rows: from the file for a memory-mapped prepared corpus (so a pass
    over all of it maps nothing: see `read_rows`), through the table for a `RemappedIds` view."""
    stop = min(stop, len(ids))
    if isinstance(ids, RemappedIds):
        return ids.table[span(ids.ids, start, stop)]
    if isinstance(ids, np.memmap) and ids.filename:
        return read_rows(ids, np.array([start], dtype=np.int64), max(stop - start, 0))[0]
    return np.asarray(ids[start:stop])


class RemappedIds:
    """An id array seen through a lookup table, lazily (a fine-tuned model may number characters otherwise
    than the corpus): indexing returns table[ids[index]], so a memory-mapped corpus is never copied whole."""

    def __init__(self, ids: np.ndarray, table: np.ndarray) -> None:
        self.ids, self.table = ids, table

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):
        return self.table[self.ids[index]]


class EpochBatches:
    """Batches of one layout. `epoch_rows(e)` lays out epoch e (what training/feeds.py feeds), and
    `epoch_batches(e)` yields its batches in NumPy; `set_epoch(e)` + `len()` + `[i]` give random access to one
    epoch (tests, inspection). Nothing per epoch is kept, so a huge corpus costs one epoch's layout at a time."""

    tags: np.ndarray | None = None  # a tag id at every position of `ids` (data/tags.py), or None: untagged
    balance: bool = False  # tagged: every tag gets as many rows an epoch (`balanced`)

    def __init__(self, ids: np.ndarray, batch_size: int, seed: int, shuffle: bool) -> None:
        self.ids = ids
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.replicas, self.shard = 1, (0, 1)

    def distribute(self, replicas: int, index: int, count: int) -> None:
        """Feed process `index` of `count` in a data-parallel job whose `replicas` devices share each batch
        of `batch_size` rows (the global batch): see `shard_rows`."""
        self.replicas, self.shard = replicas, (index, count)

    @property
    def local_batch_size(self) -> int:
        """Rows per batch that this process feeds (the global batch size on a single process)."""
        return self.batch_size // self.shard[1]

    @property
    def wraps(self) -> bool:
        """Training batches are all full (one compiled shape), wrapping around to the epoch's first rows;
        validation keeps a smaller last batch so that each row counts once."""
        return self.shuffle

    def row_count(self) -> int:
        """Rows (examples) per epoch: the same in every epoch."""
        raise NotImplementedError

    def arrangement(self, epoch: int) -> np.ndarray:
        """Start positions of epoch `epoch`'s rows, in order."""
        raise NotImplementedError

    def rows(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) for the given start positions."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def starts(self) -> np.ndarray:
        return self.arrangement(self.epoch)

    def __len__(self) -> int:
        full, tail = divmod(self.row_count(), self.batch_size)
        return full + bool(tail if self.wraps else tail >= self.replicas)  # see shard_rows

    def batch_rows(self, starts: np.ndarray) -> np.ndarray:
        """An arrangement laid out batch after batch: batch i is rows[i * batch_size : (i + 1) * batch_size]."""
        if not self.wraps:
            return starts
        return np.resize(starts, len(self) * self.batch_size)

    def epoch_rows(self, epoch: int) -> np.ndarray:
        """Start positions of epoch `epoch`'s rows in batch order (this process's share of each batch when
        distributed): a pure function of (seed, epoch)."""
        return shard_rows(self.batch_rows(self.arrangement(epoch)), self.batch_size, *self.shard, self.replicas)

    def batch(self, rows: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index` of an epoch laid out as `rows` (`epoch_rows`): this process's (inputs, targets)."""
        size = self.local_batch_size
        return self.rows(rows[index * size : (index + 1) * size])

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.batch(self.epoch_rows(self.epoch), index)

    def epoch_batches(self, epoch: int):
        """Epoch `epoch`'s batches in NumPy, one by one: the reference that `feeds.to_tf_dataset` reproduces."""
        rows = self.epoch_rows(epoch)
        for index in range(math.ceil(len(rows) / self.local_batch_size)):
            yield self.batch(rows, index)


class SequenceBatches(EpochBatches):
    """(x, y) = (ids[s:s+L], ids[s+1:s+L+1]) rows; see `sequence_starts`."""

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.seq_len = min(seq_len, len(ids) - 1) if not shuffle else seq_len
        if self.seq_len < 1:
            raise CharlstmError("the validation text needs at least 2 characters")
        if shuffle:
            sequence_layout(len(ids), seq_len)  # refuses a text shorter than one sequence, up front
        super().__init__(ids, batch_size, seed, shuffle)

    def row_count(self) -> int:
        if not self.shuffle:
            return (len(self.ids) - 1) // self.seq_len
        count = sequence_layout(len(self.ids), self.seq_len)[0]
        if self.balance and self.tags is not None:
            k = int(self.tags.max()) + 1
            return k * math.ceil(count / k)
        return count

    def arrangement(self, epoch: int) -> np.ndarray:
        starts = sequence_starts(len(self.ids), self.seq_len, self.seed, epoch, shuffle=self.shuffle)
        if self.balance and self.tags is not None and self.shuffle:
            return balanced(starts, self.tags, self.row_count(), epoch_rng(self.seed, epoch + 7_777_777))
        return starts

    def rows(self, starts: np.ndarray) -> tuple[Any, np.ndarray]:
        chunk = gather(self.ids, starts, self.seq_len + 1)
        return with_tags(chunk[:, :-1], self.tags, starts, self.seq_len), chunk[:, 1:]


class WindowBatches(EpochBatches):
    """The lesson's windows: x = ids[i:i+maxlen] (ids; the one-hot happens inside the model), y = ids[i+maxlen]."""

    def __init__(self, ids: np.ndarray, maxlen: int, step: int, batch_size: int, seed: int, shuffle: bool = True):
        self.maxlen, self.step = maxlen, step
        self.count = len(window_starts(len(ids), maxlen, step))
        super().__init__(ids, batch_size, seed, shuffle)

    def row_count(self) -> int:
        return self.count

    def arrangement(self, epoch: int) -> np.ndarray:
        # the lesson's window_starts(...) permuted: step * permutation equals it without holding both arrays
        if not self.shuffle:
            return self.step * np.arange(self.count, dtype=np.int64)
        return self.step * epoch_rng(self.seed, epoch).permutation(self.count)

    @property
    def wraps(self) -> bool:
        return False  # the lesson's fit() keeps a smaller last batch rather than wrapping around

    def rows(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chunk = gather(self.ids, starts, self.maxlen + 1)
        return chunk[:, :-1], chunk[:, -1]


def stream_layout(n_chars: int, seq_len: int, streams: int) -> int:
    """Characters per stream (a multiple of seq_len, the same in every epoch) for `streams` streams.

    The streams start at a random offset o < seq_len each epoch: stream r covers [o + r * S, o + (r + 1) * S),
    so a row's start s tells its place without the epoch: stream s // S, chunk (s % S) // seq_len.
    """
    per = (n_chars - seq_len - 1) // streams // seq_len * seq_len  # room for the largest offset and a target
    if per < seq_len:
        raise CharlstmError(
            f"the training text has {n_chars} characters, too short for {streams} streams of at least one "
            f"{seq_len}-character row each; use a longer text, a smaller --batch-size or --no-carry-state"
        )
    return per


class StreamBatches(EpochBatches):
    """Rows that continue each other from batch to batch: x = {"chars": ids (B, L), "reset": (B,)}, y (B, L).

    Batch k's row r is stream r's chunk k: ids[o + r * S + k * L : ... + L] (S = `stream_layout`, o a random
    offset < L drawn per epoch from (seed, epoch)). `reset` is 1 where the row starts its stream (every row of
    an epoch's first batch) or, with `reset_prob`, where a row is picked to start from a fresh state anyway (a
    pure function of (seed, its start), so a resumed run draws the same), else 0: the step zeroes the carried
    state of those rows before the batch. Batches are never shuffled: their order is the carry.
    """

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, seed: int, reset_prob: float = 0.0) -> None:
        self.seq_len = seq_len
        self.per_stream = stream_layout(len(ids), seq_len, batch_size)
        self.reset_prob = float(reset_prob)
        super().__init__(ids, batch_size, seed, shuffle=True)

    def row_count(self) -> int:
        return self.per_stream // self.seq_len * self.batch_size

    def arrangement(self, epoch: int) -> np.ndarray:
        offset = int(epoch_rng(self.seed, epoch).integers(self.seq_len))
        chunks = np.arange(self.per_stream // self.seq_len, dtype=np.int64) * self.seq_len  # (K,)
        streams = offset + np.arange(self.batch_size, dtype=np.int64) * self.per_stream  # (B,)
        return (streams[None, :] + chunks[:, None]).reshape(-1)  # (K * B,): batch k is rows k*B .. k*B+B-1

    def resets(self, starts: np.ndarray) -> np.ndarray:
        """1.0 for rows that start from a zero state, else 0.0 (float32, (B,))."""
        first = (starts % self.per_stream) < self.seq_len
        if self.reset_prob > 0:
            first |= _unit_hash(starts, self.seed) < self.reset_prob
        return first.astype(np.float32)

    def rows(self, starts: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        chunk = gather(self.ids, starts, self.seq_len + 1)
        return {"chars": chunk[:, :-1], "reset": self.resets(starts)}, chunk[:, 1:]


def _unit_hash(values: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) for each value, a pure function of (seed, value): splitmix64's finaliser."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(seed % 2**63) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)).astype(np.float64) / 2.0**24


def with_tags(x: np.ndarray, tags: np.ndarray | None, starts: np.ndarray, length: int) -> Any:
    """The model's input for rows `x`: the ids alone, or {"chars": ids, "tags": the tag at each position}."""
    if tags is None:
        return x
    return {"chars": x, "tags": gather(tags, starts, length)}


def balanced(starts: np.ndarray, tags: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` rows with every tag (by the tag where a row starts) `count / tags` times: the rarer tags' rows
    drawn again (with replacement), the commoner ones' sampled down; shuffled."""
    k = int(tags.max()) + 1
    per = count // k
    of_row = np.asarray(tags[starts])
    picks = []
    for t in range(k):
        mine = starts[of_row == t]
        if len(mine):
            picks.append(rng.choice(mine, size=per, replace=len(mine) < per))
    out = np.concatenate(picks) if picks else starts[:0]
    out = np.resize(out, count) if len(out) != count else out
    return out[rng.permutation(len(out))]


def make_sequence_batches(
    ids: np.ndarray, seq_len: int, batch_size: int, seed: int, shuffle: bool = True,
    tags: np.ndarray | None = None, balance: bool = False,
) -> SequenceBatches:
    batches = SequenceBatches(ids, seq_len, batch_size, seed, shuffle)
    batches.tags, batches.balance = tags, balance
    return batches


def make_window_batches(
    ids: np.ndarray, maxlen: int, step: int, batch_size: int, seed: int, shuffle: bool = True
) -> WindowBatches:
    return WindowBatches(ids, maxlen, step, batch_size, seed, shuffle)
