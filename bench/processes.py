"""The daemon under test as a child process, and what /proc says about it.

The daemon is the real thing, ``python -m recoveryd run -c FILE``, against
the benchmark's own redis-server; its log goes to a file in the work
directory. It is ready once it has registered its heartbeat in Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, cast

import redis

from bench.peers.procs import cpu_seconds

__all__ = [
    "DaemonError",
    "DaemonProcess",
    "cpu_seconds",
    "log_warnings",
    "machine_busy_s",
    "memory_kib",
    "write_config",
]

READY_TIMEOUT_S = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT_S = 20.0
REPO_ROOT = Path(__file__).resolve().parents[1]


class DaemonError(RuntimeError):
    """The daemon exited, or never became ready."""


def write_config(path: Path, redis_url: str, state_dir: Path) -> Path:
    """A config of built-in defaults, pointed at the benchmark's Redis."""
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\n\n[paths]\nstate_dir = "{state_dir}"\n'
    )
    return path


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (resident at its peak), in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


class DaemonProcess:
    """One ``recoveryd run``; ``with DaemonProcess(...) as daemon:`` stops it."""

    def __init__(self, config: Path, log_path: Path, client: redis.Redis) -> None:
        self.config = config
        self.log_path = log_path
        self.client = client
        self.consumers_key = "recoveryd:consumers"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.ready_ms = 0  # its first heartbeat, on Redis's clock

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recoveryd", "run", "-c", str(self.config)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        mark = f":{self.pid}:".encode()
        while True:
            self.check_alive()
            beats = cast(dict[bytes, bytes], self.client.hgetall(self.consumers_key))
            for consumer, beat in beats.items():
                if mark in consumer:
                    self.ready_ms = int(beat)
                    return
            if time.monotonic() > deadline:
                raise DaemonError(f"daemon not ready in {READY_TIMEOUT_S}s")
            time.sleep(0.005)

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise DaemonError(
                f"daemon exited with {self.proc.returncode}; log tail:\n{self.tail()}"
            )

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def memory_kib(self) -> dict[str, int]:
        return memory_kib(self.pid)

    def stop(self) -> int | None:
        """SIGTERM, as systemd would; SIGKILL only if it overruns the grace."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def log_warnings(log_path: Path) -> int:
    """How many WARNING or ERROR lines the daemon wrote."""
    if not log_path.exists():
        return 0
    with log_path.open(errors="replace") as lines:
        return sum(1 for line in lines if " WARNING " in line or " ERROR " in line)
