"""Small thread helpers so decoding, compositing and encoding overlap (PyAV and numpy release the GIL)."""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

_DONE = object()


def prefetch(it: Iterable, depth: int = 8) -> Iterator:
    """Iterate `it` in a worker thread; errors are re-raised in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put(item)
            q.put(_DONE)
        except BaseException as e:
            q.put(e)

    th = threading.Thread(target=work, daemon=True, name="rgba-prefetch")
    th.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():  # drain so a producer blocked on a full queue can see `stop`
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.05)


class BackgroundWriter:
    """Call `sink(item)` for each item from a worker thread; the first error surfaces on the
    next write() or on close()."""

    def __init__(self, sink, depth: int = 8):
        self.sink, self.error = sink, None
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.th = threading.Thread(target=self._run, daemon=True, name="rgba-encode")
        self.th.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not _DONE:
            if self.error is None:
                try:
                    self.sink(item)
                except BaseException as e:
                    self.error = e

    def write(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)

    def close(self, raise_error: bool = True) -> None:
        self.q.put(_DONE)
        self.th.join()
        if raise_error and self.error is not None:
            raise self.error
