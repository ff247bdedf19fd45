"""Logging to stderr, for journald or a terminal.

Under systemd (``JOURNAL_STREAM`` set) lines carry no timestamp of their own,
since the journal adds one; elsewhere they do. ``--json`` on `recoveryd run`
gives one JSON object per line instead.
"""

from __future__ import annotations

import logging
import os
import sys

import msgspec

from recoveryd.config import ConfigError

__all__ = ["LEVELS", "escape", "setup"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# A message is cut to this many characters. Records name their task and id
# with text of any length, up to `[intake] max_record_size`, and a line
# that names one must not be a megabyte long.
MESSAGE_CHARS = 2000

# Control characters, line breaks and the marks that reorder text are
# written as escapes: a task named with a newline must not start a line
# that looks like the daemon's own, nor a terminal escape reach the
# operator's screen.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
_REORDERING = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_ESCAPES |= {c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *_REORDERING)}


def escape(text: str) -> str:
    """``text`` with its control characters and line breaks as escapes."""
    return text.translate(_ESCAPES)


class _Cut(logging.Filter):
    """Cuts each message to one line of a bounded length."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = escape(record.getMessage())
        if len(message) > MESSAGE_CHARS:
            cut = len(message) - MESSAGE_CHARS
            message = f"{message[:MESSAGE_CHARS]}… [{cut} characters cut]"
        # Formatted once, here: the formatter finds no arguments left.
        record.msg, record.args = message, None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def setup(*, json_lines: bool = False, level: str | None = None) -> None:
    """Send the logs to stderr at ``level``; $RECOVERYD_LOG_LEVEL overrides it."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(_JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    handler.addFilter(_Cut())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # HTTP and SMTP client logs name URLs and hosts at INFO and dump
    # headers at DEBUG, where provider tokens live: keep them quiet.
    for noisy in ("httpx", "httpcore", "aiosmtplib", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    chosen = (os.environ.get("RECOVERYD_LOG_LEVEL") or level or "info").upper()
    if chosen not in LEVELS:
        raise ConfigError(
            f"expected one of {', '.join(LEVELS).lower()}, got {chosen.lower()!r}",
            key="RECOVERYD_LOG_LEVEL",
        )
    root.setLevel(chosen)
