"""Log output: plain lines for people, or one JSON object per line for machines.

The access logger (`tagproxy.access`) writes one line per request; its fields
travel as the record's `access` extra, so the JSON format emits them as
top-level keys instead of a string to re-parse. Neither format ever carries
cookies or beacon query strings: the access fields hold the path only.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import stat
import sys
import time
from typing import Final, TextIO

from .config import Settings

PLAIN_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_LOGGER: Final = "tagproxy.access"
PIPE_BATCH: Final = 4096  # PIPE_BUF on Linux: larger pipe writes may interleave
FILE_BATCH: Final = 64 * 1024  # to a file or terminal: one write per batch
FLUSH_AFTER: Final = 0.01  # seconds a logged line may wait for its batch


class SecondsFormatter(logging.Formatter):
    """Formats a record's time with strftime once a second, not once a line.

    `line` writes a line from plain values, so the access log can write
    the same layout without building a LogRecord.
    """

    _cached: tuple[int, str | None, str] = (-1, None, "")

    def __init__(self, fmt: str = "%(message)s") -> None:
        super().__init__(fmt)
        self.layout = fmt

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created, datefmt)

    def stamp(self, created: float, datefmt: str | None = None) -> str:
        second = int(created)
        cached_second, cached_fmt, text = self._cached
        if second != cached_second or cached_fmt != datefmt:
            fmt = datefmt or self.default_time_format
            text = time.strftime(fmt, self.converter(created))
            self._cached = (second, datefmt, text)
        if datefmt or not self.default_msec_format:
            return text
        return self.default_msec_format % (text, _millis(created))

    def line(
        self,
        created: float,
        level: str,
        logger: str,
        message: str,
        fields: dict[str, object] | None = None,
    ) -> str:
        """A line in this format; plain lines carry no fields."""
        values = {"levelname": level, "name": logger, "message": message}
        return self.layout % {"asctime": self.stamp(created), **values}


class JsonFormatter(SecondsFormatter):
    """One JSON object per record: time, level, logger, message, fields."""

    def converter(self, seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        return self.line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            access if isinstance(access, dict) else None,
            exception,
        )

    def line(
        self,
        created: float,
        level: str,
        logger: str,
        message: str,
        fields: dict[str, object] | None = None,
        exception: str | None = None,
    ) -> str:
        out: dict[str, object] = {
            "time": self.stamp(created, "%Y-%m-%dT%H:%M:%S")
            + f".{_millis(created):03d}Z",
            "level": level,
            "logger": logger,
            "message": message,
        }
        if self.worker is not None:
            out["worker"] = self.worker
        if fields:
            out.update(fields)
        if exception:
            out["exception"] = exception
        return json.dumps(out, default=str)


def _millis(created: float) -> int:
    return int((created - int(created)) * 1000)


class BatchingHandler(logging.StreamHandler[TextIO]):
    """Writes the lines logged within a few milliseconds with one write.

    At thousands of requests a second a write per access line costs more CPU
    than the rest of the line's logging (measured in bench/), and so did a
    write per event-loop turn (a turn often serves one request). Lines logged
    while an event loop runs are written when a batch is full or FLUSH_AFTER
    after its first line, so a killed process loses at most those few
    milliseconds of lines; warnings and errors, and lines logged outside a
    loop (start and stop, worker threads), are written at once. A batch stays
    within PIPE_BUF bytes, so workers sharing one stderr pipe never
    interleave inside a line.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.max_batch = PIPE_BATCH if _is_pipe(stream) else FILE_BATCH
        self._pending: list[str] = []
        self._size = 0
        self._scheduled: asyncio.TimerHandle | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self.add(line, urgent=record.levelno >= logging.WARNING)

    def add(self, line: str, urgent: bool = False) -> None:
        """Queue one formatted line (newline included) for the next write."""
        if self._size + len(line) > self.max_batch:
            self.flush()
        self._pending.append(line)
        self._size += len(line)
        if urgent or not self._flush_later():
            self.flush()

    def _flush_later(self) -> bool:
        if self._scheduled is not None:
            return True  # a flush is due already
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._scheduled = loop.call_later(FLUSH_AFTER, self.flush)
        return True

    def flush(self) -> None:
        self.acquire()
        try:
            # Not cancelled: flush may run on another thread (an urgent
            # line), and loop handles are not safe to touch from there. A
            # timer that finds nothing pending writes nothing.
            self._scheduled = None
            if not self._pending:
                return
            lines, self._pending, self._size = self._pending, [], 0
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:  # as in StreamHandler: a broken log stream
                pass  # must not fail the request that logged
        finally:
            self.release()


def _is_pipe(stream: TextIO) -> bool:
    """Whether writes to `stream` may interleave with other processes' writes
    beyond PIPE_BUF bytes (a pipe, or something we cannot tell)."""
    try:
        return stat.S_ISFIFO(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return True


class AccessLog:
    """Writes each request's access line: a message and its fields.

    Through the logging module a line costs about 10 us (a LogRecord, the
    handler's lock, the formatter's dispatch), a tenth of what serving a
    cached script costs in all. Once `setup_logging` has chosen the output
    (serve and its workers), the handler's own formatter writes the line
    from plain values and it is queued on the batching handler directly,
    for about 2 us. Anywhere else (in-process use, tests) lines go through
    the `tagproxy.access` logger like any other record.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self._handler: BatchingHandler | None = None

    def direct_to(self, handler: BatchingHandler | None) -> None:
        self._handler = handler

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    @property
    def wants_fields(self) -> bool:
        """Whether `write` needs the fields, or only the plain message."""
        handler = self._direct()
        return handler is None or isinstance(handler.formatter, JsonFormatter)

    def _direct(self) -> BatchingHandler | None:
        """Our handler, while it is still the one and only output.

        Anything that changed the logging set-up since (a test's log
        capture, an embedding application) gets records as usual.
        """
        handler = self._handler
        handlers = logging.root.handlers
        if (
            handler is None
            or len(handlers) != 1
            or handlers[0] is not handler
            or self.logger.handlers
            or not isinstance(handler.formatter, SecondsFormatter)
        ):
            return None
        return handler

    def write(self, message: str, fields: dict[str, object] | None) -> None:
        handler = self._direct()
        if handler is None:
            self.logger.info("%s", message, extra={"access": fields or {}})
            return
        assert isinstance(handler.formatter, SecondsFormatter)
        line = handler.formatter.line(
            time.time(), "INFO", ACCESS_LOGGER, message, fields
        )
        handler.add(line + handler.terminator)


ACCESS: Final = AccessLog()


def speed_up_records() -> None:
    """Skip what our formats never print, as the logging docs suggest.

    Finding the caller's file and line walks the stack on every record, and
    thread and process names are looked up for each; no tagproxy format uses
    them.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def make_formatter(log_format: str, worker: int | None = None) -> SecondsFormatter:
    """`--log-format`'s formatter; a worker's lines say which worker wrote them."""
    if log_format == "json":
        return JsonFormatter(worker)
    tag = "" if worker is None else f"[{worker}]"
    return SecondsFormatter(PLAIN_FORMAT.replace("%(name)s", "%(name)s" + tag))


def setup_logging(settings: Settings, worker: int | None = None) -> None:
    speed_up_records()
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(make_formatter(settings.log_format, worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    ACCESS.direct_to(handler)
