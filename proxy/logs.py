"""Log output: plain lines for people, or one JSON object per line for machines.

The access logger (`tagproxy.access`) writes one line per request; its fields
travel as the record's `access` extra, so the JSON format emits them as
top-level keys instead of a string to re-parse. Neither format ever carries
cookies or beacon query strings: the access fields hold the path only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Final

from .config import Settings

PLAIN_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, fields."""

    def converter(self, seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            out["worker"] = self.worker
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            out.update(access)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(settings: Settings, worker: int | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        formatter: logging.Formatter = JsonFormatter(worker)
    else:
        tag = "" if worker is None else f"[{worker}]"
        formatter = logging.Formatter(
            PLAIN_FORMAT.replace("%(name)s", "%(name)s" + tag)
        )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
