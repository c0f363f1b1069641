"""The threads of a run: decoding, the network and encoding overlap, joined by bounded queues.

Memory is bounded by the queue sizes (``QUEUE_BATCHES`` batches between two
stages), whatever the film's length. An error in a thread surfaces in the
calling thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

QUEUE_BATCHES = 2  # batches waiting between stages


def batched(frames: Iterable, size: int) -> Iterator[list]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Stage:
    """Runs an iterator in a thread, handing its items over through a bounded queue."""

    _DONE = object()

    def __init__(self, source: Iterable, name: str):
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"colorvid-{name}", daemon=True)

    def _run(self) -> None:
        try:
            for item in self._source:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        finally:
            self._put_done()

    def _put_done(self) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(self._DONE, timeout=0.1)
                return
            except queue.Full:
                continue

    def __enter__(self) -> Iterator:
        self._thread.start()
        return self._items()

    def _items(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


class Sink:
    """Consumes batches in a thread (the encoder); errors surface on the next put or at exit."""

    _DONE = object()

    def __init__(self, consume: Callable, name: str):
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self._error: BaseException | None = None
        self._failed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"colorvid-{name}", daemon=True)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is self._DONE:
                return
            if self._failed.is_set():
                continue  # drain without work after a failure
            try:
                for item in batch:
                    self._consume(item)
            except BaseException as exc:
                self._error = exc
                self._failed.set()

    def put(self, batch: list) -> None:
        if self._error is not None:
            raise self._error
        while True:
            try:
                self._queue.put(batch, timeout=0.1)
                return
            except queue.Full:
                if self._error is not None:
                    raise self._error

    def __enter__(self) -> Sink:
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._failed.set()  # the block failed: stop encoding, just drain
        self._queue.put(self._DONE)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error
