"""systemd integration: notify socket messages, and the unit file itself."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from recoveryd.systemd import SystemdNotifier
from tests.conftest import wait_for

UNIT = Path(__file__).parents[1] / "deploy" / "systemd" / "recoveryd.service"


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except TimeoutError:
                return self.messages

    def has(self, line: str) -> bool:
        return any(line in m.splitlines() for m in self.drain())


@pytest.fixture
def notify_socket(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.sock.close()


def test_ready_status_and_watchdog_reach_the_notify_socket(start_daemon, notify_socket):
    daemon = start_daemon(
        env={"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"}
    )
    wait_for(lambda: notify_socket.has("READY=1"), what="READY=1")
    # Two watchdog pings prove the loop feeds it, not a one-off at start.
    wait_for(
        lambda: sum("WATCHDOG=1" in m for m in notify_socket.drain()) >= 2,
        what="watchdog pings",
    )
    statuses = [m for m in notify_socket.messages if "STATUS=" in m]
    assert any(re.search(r"STATUS=\d+ records taken", m) for m in statuses)
    assert daemon.stop() == 0
    assert notify_socket.has("STOPPING=1")


def test_notifier_does_nothing_outside_systemd():
    notifier = SystemdNotifier(environ={})
    assert not notifier.enabled
    notifier.notify("READY=1")  # no socket, no error


def test_watchdog_for_another_pid_is_ignored():
    notifier = SystemdNotifier(
        environ={"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    )
    assert notifier.watchdog_s is None


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_unit_verifies(tmp_path):
    recoveryd = Path(sys.executable).parent / "recoveryd"
    unit = tmp_path / "recoveryd.service"
    unit.write_text(
        UNIT.read_text().replace("/opt/recoveryd/bin/recoveryd", str(recoveryd))
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_unit_exposure_is_at_most_2():
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Overall exposure level for .*: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found[1]) <= 2.0
