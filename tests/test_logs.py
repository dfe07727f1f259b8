"""The access line written directly is the line the logging module would write."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from proxy.logs import (
    ACCESS_LOGGER,
    PLAIN_FORMAT,
    AccessLog,
    BatchingHandler,
    JsonFormatter,
    SecondsFormatter,
    make_formatter,
)

FIELDS: dict[str, object] = {
    "method": "GET",
    "path": "/pa/js/script.js",
    "host": "t.example",
    "status": 200,
    "cache": "hit",
    "ms": 0.4,
}
MESSAGE = '"GET /pa/js/script.js" host=t.example status=200 cache=hit ms=0.4'
STAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d{3}Z?")


def through_logging(formatter: logging.Formatter) -> str:
    record = logging.LogRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 1, "%s", (MESSAGE,), None
    )
    record.access = FIELDS
    return formatter.format(record) + "\n"


def direct(json_lines: bool, worker: int | None = None) -> str:
    """The line written while `handler` is the only output, as serve sets up."""
    out = io.StringIO()
    handler = BatchingHandler(out)
    access = AccessLog()
    handler.setFormatter(make_formatter("json" if json_lines else "plain", worker))
    access.direct_to(handler)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        access.write(MESSAGE, FIELDS)  # no event loop runs: written at once
    finally:
        root.handlers[:] = saved
    return out.getvalue()


def test_the_plain_line_is_laid_out_as_the_logging_module_lays_it_out() -> None:
    expected = through_logging(SecondsFormatter(PLAIN_FORMAT))
    written = direct(json_lines=False)
    assert STAMP.sub("T", written) == STAMP.sub("T", expected)
    assert written.endswith(f"INFO tagproxy.access: {MESSAGE}\n")


def test_a_workers_plain_line_names_its_worker() -> None:
    assert f"INFO tagproxy.access[3]: {MESSAGE}\n" in direct(False, worker=3)


def test_the_json_line_has_the_same_keys_and_values() -> None:
    expected = json.loads(through_logging(JsonFormatter(worker=2)))
    written = json.loads(direct(json_lines=True, worker=2))
    assert written.keys() == expected.keys()
    for key in expected.keys() - {"time"}:
        assert written[key] == expected[key]
    assert STAMP.fullmatch(written["time"])
    assert written["path"] == "/pa/js/script.js"


def test_without_setup_lines_go_through_the_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    AccessLog().write(MESSAGE, FIELDS)
    (record,) = caplog.records
    assert record.getMessage() == MESSAGE
    assert record.__dict__["access"] == FIELDS  # the extra the JSON format reads


def test_once_the_output_changes_lines_go_through_the_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    access = AccessLog()
    access.direct_to(BatchingHandler(io.StringIO()))  # not installed
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    assert access.wants_fields
    access.write(MESSAGE, FIELDS)
    (record,) = caplog.records
    assert record.getMessage() == MESSAGE
