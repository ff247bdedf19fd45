"""The alert logs: `admin_alerts.log` and `user_notifications.log`.

JSON Lines, one notification a line, appended with one write per batch of
whole lines so a reader tailing the file never sees half a line. A file
moved away by a log rotator is noticed at the next write and opened anew;
`AlertLog.reopen` (called on SIGHUP) closes both files so the next write
opens them again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import msgspec

from recoveryd.notification import ADMIN, Notification
from recoveryd.notifiers import DeliveryError, SendsBatches

__all__ = ["ADMIN_LOG", "USER_LOG", "AlertLog"]

ADMIN_LOG = "admin_alerts.log"
USER_LOG = "user_notifications.log"


class _AppendFile:
    """A file opened for appending, reopened when its path moves on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None

    def write(self, data: bytes) -> None:
        fd = self._open()
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        try:
            stat = os.stat(self.path)
            current: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            current = None
        if self._fd is not None and current == self._inode:
            return self._fd

        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        stat = os.fstat(self._fd)
        self._inode = (stat.st_dev, stat.st_ino)
        return self._fd


class AlertLog(SendsBatches):
    """Writes each notification to the log of its audience."""

    name = "alert_log"

    def __init__(self, state_dir: Path) -> None:
        self._admin = _AppendFile(state_dir / ADMIN_LOG)
        self._user = _AppendFile(state_dir / USER_LOG)
        self._encoder = msgspec.json.Encoder()

    async def send_many(
        self, notifications: Sequence[Notification]
    ) -> list[DeliveryError | None]:
        lines: dict[_AppendFile, list[bytes]] = {self._admin: [], self._user: []}
        for notification in notifications:
            target = self._admin if notification.audience == ADMIN else self._user
            lines[target].append(self._encoder.encode(notification) + b"\n")
        failed: dict[_AppendFile, DeliveryError] = {}
        for target, batch in lines.items():
            if not batch:
                continue
            try:
                target.write(b"".join(batch))
            except OSError as exc:
                failed[target] = DeliveryError(f"cannot append to {target.path}: {exc}")
        return [
            failed.get(self._admin if n.audience == ADMIN else self._user)
            for n in notifications
        ]

    def reopen(self) -> None:
        """Close both files; the next write opens them afresh (after a rotation)."""
        self._admin.close()
        self._user.close()

    async def aclose(self) -> None:
        self.reopen()
