"""Training batches in step order, made by worker processes when asked.

A batch depends only on (seed, step) (:class:`.data.PatchStream`), so ``workers`` processes making
steps ``s, s + 1, ...`` side by side give exactly the batches one process would: a run is the same
run whether it was made with 0 or 16 workers, and resumes the same way. The workers are forked after
the stream's reference pools are loaded (each slice decoded once, in the parent, while it makes the
first batch, which it keeps) and before the model touches a GPU; at most ``ahead`` batches per worker
are made ahead of training.
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator

import numpy as np
import torch

from .data import PatchStream

_STREAM: PatchStream | None = None  # the worker's copy of the parent's stream (fork)


def _init_worker() -> None:
    torch.set_num_threads(1)


def _make(step: int) -> tuple[np.ndarray, ...]:
    assert _STREAM is not None
    return tuple(t.numpy() for t in _STREAM.batch(step))


class Batches:
    """``iter(Batches(stream, first, stop, workers))``: (noisy, clean, level) tensors of steps
    ``first .. stop - 1`` in order. ``workers`` 0: made in this process as they are needed.
    Use as a context manager so the workers end with it."""

    def __init__(self, stream: PatchStream, first: int, stop: int, workers: int = 0, ahead: int = 4) -> None:
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        self.stream, self.first, self.stop, self.workers, self.ahead = stream, first, stop, workers, ahead
        self._pool: multiprocessing.pool.Pool | None = None
        self._first: tuple[torch.Tensor, ...] | None = None
        if workers and first < stop:
            global _STREAM
            self._first = stream.batch(first)  # loads the reference pools once, before the fork shares them
            _STREAM = stream
            self._pool = multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self._pool is None:
            for step in range(self.first, self.stop):
                yield self.stream.batch(step)
            return
        pending: deque = deque()
        steps = iter(range(self.first + 1, self.stop))
        for step in steps:
            pending.append(self._pool.apply_async(_make, (step,)))
            if len(pending) >= self.workers * self.ahead:
                break
        if self._first is not None:
            yield self._first
        while pending:
            arrays = pending.popleft().get()
            nxt = next(steps, None)
            if nxt is not None:
                pending.append(self._pool.apply_async(_make, (nxt,)))
            yield tuple(torch.from_numpy(a) for a in arrays)

    def close(self) -> None:
        global _STREAM
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        _STREAM = None

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
