"""Log lines on stderr: ``--log.level`` and ``--log.format``, as Prometheus spells them.

Two formats, one record a line:

* ``logfmt`` (default): ``ts=2026-11-26T10:00:00.000Z level=info logger=exporter.scheduler
  msg="..."``;
* ``json``: ``{"ts": "2026-11-26T10:00:00.000Z", "level": "info", "logger": "...",
  "msg": "..."}``, plus ``"exc"`` with the traceback of an unexpected error.

Levels: ``debug``, ``info``, ``warn`` (Prometheus' spelling; ``warning`` too) and
``error``. Third-party libraries (APScheduler, urllib3) speak only from ``warning`` up.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .apitext import encodable, loggable

LEVELS = ("debug", "info", "warn", "warning", "error")
FORMATS = ("logfmt", "json")

_LEVEL_NUMBERS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _timestamp(record: logging.LogRecord) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{ts}.{int(record.msecs):03d}Z"


class LogfmtFormatter(logging.Formatter):
    """``ts=2026-11-26T10:00:00.000Z level=info logger=exporter.scheduler msg="..."``."""

    def format(self, record: logging.LogRecord) -> str:
        # One record, one line: text from the API (a job name with a newline, a lone
        # surrogate) cannot forge lines or break the stream.
        message = loggable(record.getMessage().replace("\\", "\\\\").replace('"', '\\"'))
        line = (
            f"ts={_timestamp(record)} level={record.levelname.lower()} "
            f'logger={record.name} msg="{message}"'
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``msg`` (and ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _encodable(record.getMessage()),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def _encodable(text: str) -> str:
    """``text`` with a lone surrogate (from the API) escaped, so the line can be written."""
    return text if encodable(text) else text.encode("utf-8", "backslashreplace").decode()


def setup_logging(level: str = "info", log_format: str = "logfmt") -> None:
    """Send every log record to stderr at ``level`` (one of LEVELS) in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVEL_NUMBERS[level])
    # Third-party libraries speak only when something is wrong.
    for noisy in ("apscheduler", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
