"""Logging set-up shared by every long-running command (daemon, execute, scheduler).

    basic_config(verbose)   text lines on stderr: "time LEVEL logger: message"
    use_json_logs()         --log-format json: one JSON object per record on stderr
    JsonLogFormatter        the formatter behind it
    console_logger()        where console lines go under --log-format json (None: print them)

Nothing here knows about click; the CLI calls these.
"""
from __future__ import annotations

import json
import logging
import sys
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLogFormatter(logging.Formatter):
    """{"ts", "level", "logger", "msg"}, plus "exc" and any `extra=` fields a call adds."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        doc.update({k: v for k, v in vars(record).items() if k not in self._STANDARD and k not in doc})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def use_json_logs() -> None:
    """Every log record, and the agent's console lines, as JSON lines on stderr. Installed before a
    command's own logging.basicConfig, which then leaves the root logger's handler alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def console_logger() -> logging.Logger | None:
    """Where console lines go under --log-format json; None when they are printed as text."""
    json_on = any(isinstance(h.formatter, JsonLogFormatter) for h in logging.getLogger().handlers)
    return logging.getLogger("shipyard.console") if json_on else None


def basic_config(verbose: bool) -> None:
    """Log records as text on stderr, DEBUG with `verbose` else INFO (the level also holds under
    --log-format json, whose handler basicConfig leaves alone)."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format=TEXT_FORMAT)
    logging.getLogger().setLevel(level)
