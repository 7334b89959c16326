"""Training rows for a list of items (data/items.py): the items in a new random order every epoch, every row
starting at an item's start."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from charlstm.data.batches import EpochBatches, epoch_rng
from charlstm.errors import CharlstmError

_STRIDE = 1 << 40  # a row's start encodes (epoch, position): epoch * _STRIDE + position


class ItemBatches(EpochBatches):
    """Rows of `seq_len` + 1 ids cut from a stream of items B item B item ... B whose items are put in a new
    random order every epoch (validation: the given order); every row starts at an item's boundary.

    A row's start encodes its epoch (epoch * 2**40 + position in that epoch's stream), since the rows are
    gathered later, in tf.data's threads, away from the epoch that laid them out. The epoch's stream is
    treated as a ring (its start repeats after its end), so every row is whole; row k starts at the first
    boundary at or after offset + k * seq_len, so rows cover the stream once, give or take an item each.
    """

    def __init__(self, stream: np.ndarray, boundary: int, seq_len: int, batch_size: int, seed: int,
                 shuffle: bool = True, tags: np.ndarray | None = None) -> None:
        stream = np.asarray(stream, dtype=np.int32)
        if len(stream) < 2:
            raise CharlstmError("the items hold fewer than 2 characters; give more items")
        self.boundary = boundary
        self.bounds = np.flatnonzero(stream == boundary)  # item k: stream[bounds[k] : bounds[k + 1]]
        self.seq_len = seq_len
        self._streams: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        self._lock = threading.Lock()
        super().__init__(stream, batch_size, seed, shuffle)
        self.tags = None if tags is None else np.asarray(tags, dtype=np.int32)  # an item's tag at its positions

    def row_count(self) -> int:
        return max(1, (len(self.ids) - 1) // self.seq_len)

    def epoch_stream(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(ring of the epoch's stream, its boundary positions): the items in epoch `epoch`'s order."""
        return self._epoch(epoch)[:2]

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`epoch_stream` and the ring's tag at every position (None: untagged)."""
        key = epoch if self.shuffle else -1
        with self._lock:
            if key in self._streams:
                return self._streams[key]
        starts, ends = self.bounds[:-1], self.bounds[1:]
        if self.shuffle:
            order = epoch_rng(self.seed, epoch).permutation(len(starts))
            starts, ends = starts[order], ends[order]
        lengths = ends - starts
        new_starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        idx = np.repeat(starts - new_starts, lengths) + np.arange(int(lengths.sum()))
        body = self.ids[idx]
        ring = np.resize(body, len(body) + 1 + self.seq_len).astype(np.int32)  # body[0] is B: it closes the ring
        tag_ring = None if self.tags is None else np.resize(self.tags[idx], len(ring))
        bounds = np.concatenate([new_starts, [len(body)]])
        with self._lock:
            if len(self._streams) >= 3:
                self._streams.pop(next(iter(self._streams)))
            self._streams[key] = (ring, bounds, tag_ring)
        return ring, bounds, tag_ring

    def arrangement(self, epoch: int) -> np.ndarray:
        _, bounds = self.epoch_stream(epoch)
        count = self.row_count()
        rng = epoch_rng(self.seed, epoch) if self.shuffle else None
        offset = int(rng.integers(self.seq_len)) if rng is not None else 0
        targets = offset + self.seq_len * np.arange(count, dtype=np.int64)
        starts = bounds[np.minimum(np.searchsorted(bounds, targets), len(bounds) - 1)]
        if rng is not None:
            starts = starts[rng.permutation(count)]
        return (epoch if self.shuffle else 0) * _STRIDE + starts.astype(np.int64)

    def rows(self, starts: np.ndarray) -> tuple[Any, np.ndarray]:
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), self.seq_len + 1), dtype=np.int32)
        tags = np.empty((len(starts), self.seq_len), dtype=np.int32) if self.tags is not None else None
        epochs = starts // _STRIDE
        for epoch in np.unique(epochs):
            ring, _, tag_ring = self._epoch(int(epoch))
            pick = epochs == epoch
            pos = starts[pick] % _STRIDE
            out[pick] = ring[pos[:, None] + np.arange(self.seq_len + 1)[None, :]]
            if tags is not None:
                tags[pick] = tag_ring[pos[:, None] + np.arange(self.seq_len)[None, :]]
        x = out[:, :-1] if tags is None else {"chars": out[:, :-1], "tags": tags}
        return x, out[:, 1:]
