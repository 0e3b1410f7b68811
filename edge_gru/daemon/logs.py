"""Structured logging: one line per event (logfmt or JSON) and rate-limited warnings.

A daemon that runs for months is read through ``journalctl``: each event is one line with
``event=name key=value ...`` so it can be grepped and parsed, and bad input that arrives
10,000 times a second is reported a few times a minute with a count, not 10,000 times.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log event ``name`` with key/value ``fields``."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def _logfmt_value(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    else:
        text = str(value)
    if not text or any(c in text for c in ' ="\\\n') or text != text.strip():
        return json.dumps(text)
    return text


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=warning logger=edge_gru.daemon.worker event=bad_payload topic=... reason=...``."""

    def __init__(self, *, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        if self.timestamps:
            parts.append("ts=" + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z")
        parts += [
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"event={_logfmt_value(record.getMessage())}",
        ]
        fields = getattr(record, "fields", None) or {}
        parts += [f"{k}={_logfmt_value(v)}" for k, v in fields.items()]
        if record.exc_info:
            parts.append("exception=" + json.dumps(self.formatException(record.exc_info)))
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: str = "info", fmt: str = "logfmt", *, timestamps: bool = True) -> None:
    """Route log records to stderr, one structured line each; ``level`` applies to edge-gru's loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter(timestamps=timestamps))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # numba and LLVM log volumes at DEBUG; only our own loggers follow ``level``
    logging.captureWarnings(True)  # a library's warning (numpy, paho) becomes one structured line, not raw stderr
    logging.getLogger("edge_gru").setLevel(getattr(logging, level.upper()))


class RateLimitedWarnings:
    """At most one warning per key every ``interval_s``; the next one says how many were suppressed."""

    def __init__(self, logger: logging.Logger, *, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, name: str, **fields: Any) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        event(self.logger, logging.WARNING, name, **fields)
