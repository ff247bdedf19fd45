"""A peer's worker as a child process: start, wait until ready, CPU time, stop.

CPU time is read from /proc so that a worker's own helpers (RQ forks a
scheduler process, and a work horse per job) count towards the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "CpuReading",
    "WorkerError",
    "WorkerProcess",
    "cpu_between",
    "cpu_seconds",
    "descendants",
    "read_cpu",
    "tree_cpu_seconds",
]

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parents[2]


class WorkerError(RuntimeError):
    """A peer's worker died or never became ready."""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses; fields follow the last ")".
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of one live process (0 when it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class CpuReading:
    """CPU time of some processes at one instant, two ways.

    ``ticks_s`` comes from /proc/<pid>/stat: every thread, live or gone, in
    10 ms ticks, too coarse for a process that idles (a quiet minute may
    cost it less than one tick). ``threads_ns`` is each live thread's run
    time from its schedstat, in nanoseconds; a thread that ends takes its
    time with it.
    """

    ticks_s: float
    threads_ns: dict[int, int]


def read_cpu(pids: Sequence[int]) -> CpuReading:
    threads: dict[int, int] = {}
    for pid in pids:
        try:
            tids = [int(entry.name) for entry in Path(f"/proc/{pid}/task").iterdir()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for tid in tids:
            try:
                raw = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            threads[tid] = int(raw.split()[0])
    return CpuReading(sum(cpu_seconds(pid) for pid in pids), threads)


def cpu_between(before: CpuReading, after: CpuReading) -> float:
    """CPU seconds spent between two readings of the same processes.

    To the nanosecond when the same threads lived at both readings (so
    none took its time away), else in ticks.
    """
    if before.threads_ns and before.threads_ns.keys() == after.threads_ns.keys():
        return (sum(after.threads_ns.values()) - sum(before.threads_ns.values())) / 1e9
    return after.ticks_s - before.ticks_s


def descendants(pid: int) -> list[int]:
    """Pids of every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    return sum(cpu_seconds(p) for p in [pid, *descendants(pid)])


class WorkerProcess:
    """One worker child process, its output kept in ``log_path``."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.argv = [sys.executable, *argv]
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, is_ready: Callable[[], bool]) -> None:
        """Start the worker and return once ``is_ready()`` says it polls for work."""
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not is_ready():
            self.check_alive()
            if time.monotonic() > deadline:
                self.stop()
                raise WorkerError(
                    f"worker not ready in {READY_TIMEOUT_S}s: {self._tail()}"
                )
            time.sleep(0.02)

    def check_alive(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise WorkerError(
                f"worker exited with {self._proc.returncode}: {self._tail()}"
            )

    def stop(self) -> None:
        """SIGTERM the worker, SIGKILL it after a grace, then any helper it left."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # pidfds pin the helpers, so a pid reused meanwhile is never signalled.
        helpers = [_pidfd(pid) for pid in descendants(proc.pid)]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pidfd in helpers:
            _kill_and_close(pidfd)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _kill_and_close(pidfd: int | None) -> None:
    if pidfd is None:
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)
