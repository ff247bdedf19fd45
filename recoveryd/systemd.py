"""Talking to systemd: readiness, status lines and the watchdog.

The protocol is one datagram per message on the socket named by
``$NOTIFY_SOCKET``; without it (not under systemd) every call does nothing.
The watchdog is fed from a coroutine on the daemon's own event loop, so a
loop that hangs stops feeding it and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import anyio

__all__ = ["SystemdNotifier"]

log = logging.getLogger(__name__)

# Status lines are refreshed at least this often even without a watchdog.
STATUS_EVERY_S = 10.0


class SystemdNotifier:
    """Sends sd_notify messages, if the service manager asked for them."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = _watchdog_interval_s(env)
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> None:
        """Send ``KEY=value`` lines; a failure to send is logged, never raised."""
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)

    async def run(self, status: Callable[[], str]) -> None:
        """Feed the watchdog and refresh the status line, until cancelled."""
        period_s = STATUS_EVERY_S
        if self.watchdog_s is not None:
            # Twice per interval, as systemd advises, so one late wake-up
            # is not a restart.
            period_s = min(period_s, self.watchdog_s / 2)
        while True:
            lines = [f"STATUS={status()}"]
            if self.watchdog_s is not None:
                lines.append("WATCHDOG=1")
            self.notify(*lines)
            await anyio.sleep(period_s)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        # An abstract socket: the name starts with a NUL byte.
        return "\0" + value[1:]
    return value


def _watchdog_interval_s(env: dict[str, str] | os._Environ[str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
