"""Report files: where the scan and the analysis write what they found.

``<state_dir>/reports/<kind>/<kind>_<UTC timestamp>.json``, for example
``reports/failure_analysis/failure_analysis_20250301T060000Z.json``. A file
is written whole under a temporary name and then renamed, so a reader never
sees half a report.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from recoveryd.notification import iso_utc

__all__ = ["Window", "stamp", "write_report"]


class Window(msgspec.Struct, kw_only=True):
    """The stretch of time a report covers, in RFC 3339 UTC."""

    start: str
    end: str
    hours: float

    @classmethod
    def between(cls, start_ms: int, end_ms: int) -> Window:
        hours = round((end_ms - start_ms) / 3_600_000, 2)
        return cls(start=iso_utc(start_ms), end=iso_utc(end_ms), hours=hours)


def stamp(epoch_ms: int) -> str:
    """``20250301T060000Z``: the UTC timestamp in report file names."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y%m%dT%H%M%SZ")


def write_report(state_dir: Path, kind: str, now_ms: int, report: Any) -> Path:
    """Write ``report`` (a Struct or plain data) as indented JSON; returns its path."""
    folder = state_dir / "reports" / kind
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{kind}_{stamp(now_ms)}"
    path = folder / f"{base}.json"
    number = 1
    # Two runs in one second (an operator's run beside the daemon's) keep
    # both files.
    while path.exists():
        number += 1
        path = folder / f"{base}_{number}.json"
    body = msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_bytes(body)
    os.replace(temporary, path)
    return path
