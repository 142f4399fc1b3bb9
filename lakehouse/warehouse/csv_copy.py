"""Streaming rows into PostgreSQL: Arrow record batches rendered as CSV for COPY, with bounded memory."""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg2
import pyarrow.csv as pacsv

if TYPE_CHECKING:
    from psycopg2.extensions import cursor as Cursor


class CsvStream(io.RawIOBase):
    """A read-only file over Arrow record batches rendered as CSV, for `copy_expert`. A background thread reads
    and renders the batches while PostgreSQL parses the previous ones, at most `ahead` chunks ahead (bounded
    memory)."""

    def __init__(self, batches: Iterable, on_batch: Callable[[int], None] | None = None, ahead: int = 4):
        self._options = pacsv.WriteOptions(include_header=False)
        self._write = pacsv.write_csv
        self._chunk = memoryview(b"")
        self._on_batch = on_batch
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._done = False
        self.rows = 0
        self.error: BaseException | None = None  # what failed while reading or rendering the batches
        self._thread = threading.Thread(target=self._render, args=(iter(batches),), name="csv-stream", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _render(self, batches: Iterator) -> None:
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                sink = io.BytesIO()
                self._write(batch, sink, self._options)
                self.rows += batch.num_rows
                if self._on_batch:
                    self._on_batch(self.rows)
                if not self._put(sink.getvalue()):
                    return
            self._put(None)
        except BaseException as exc:  # handed to the reader, raised in copy_expert's thread
            self._put(exc)

    def read(self, size: int = -1) -> bytes:
        if not self._chunk:
            if self._done:
                return b""
            item = self._queue.get()
            if item is None:
                self._done = True
                return b""
            if isinstance(item, BaseException):
                self._done = True
                self.error = item
                raise item
            self._chunk = memoryview(item)
        size = len(self._chunk) if size is None or size < 0 else size
        out, self._chunk = self._chunk[:size], self._chunk[size:]
        return out.tobytes()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        super().close()


def copy_batches(
    cur: Cursor,
    table: str,
    columns: Iterable[str],
    batches: Iterable[Any],
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """COPY Arrow record batches into `table` (CSV over the wire); returns the rows sent."""
    stream = CsvStream(batches, on_batch)
    try:
        cur.copy_expert(f"copy {table} ({', '.join(columns)}) from stdin with (format csv)", stream, size=1 << 20)
    except psycopg2.Error:
        if stream.error is not None:  # psycopg2 reports it as a cancelled COPY: raise what actually failed
            raise stream.error from None
        raise
    finally:
        stream.close()
    return stream.rows
