"""Build the next batches on a background thread while the GPU works on the current one.

Batches are addressed by (step, micro-step), so prefetching changes nothing about their content or order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

_DONE = object()


class Prefetcher:
    """Iterate ``make(key)`` for ``keys`` in order, up to ``depth`` batches ahead; with ``pin``, tensors are
    put in page-locked memory so the host-to-GPU copy can overlap compute. An error in ``make`` is raised in
    the consumer."""

    def __init__(self, make: Callable[[Any], dict[str, torch.Tensor]], keys: Iterable[Any], depth: int = 4,
                 pin: bool = False):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(make, iter(keys), pin), daemon=True)
        self._thread.start()

    def _work(self, make, keys: Iterator[Any], pin: bool) -> None:
        try:
            for key in keys:
                batch = make(key)
                if pin:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                while not self._stop.is_set():
                    try:
                        self._q.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._q.put(_DONE)
        except BaseException as e:  # handed to the consumer
            self._q.put(e)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        item = self._q.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
