"""`recoveryd run` with no Redis configured: the embedded server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis

from tests.conftest import wait_for


def recoveryd(cwd: Path, *args: str, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "recoveryd", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_run_without_redis_url_starts_an_embedded_redis(tmp_path):
    (tmp_path / "recoveryd.toml").write_text(
        '[paths]\nstate_dir = "state"\n\n'
        '[categories.recoverable_network]\nbase_delay = "200ms"\njitter = 0\n'
    )
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "recoveryd", "run"],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url_file = tmp_path / "state" / "redis" / "url"
        wait_for(url_file.exists, what="the embedded redis address")
        url = url_file.read_text().strip()
        client = redis.Redis.from_url(url)
        wait_for(lambda: client.hlen("recoveryd:consumers"), what="the daemon")
        assert url in (tmp_path / "daemon.log").read_text()

        record = {
            "task": "t",
            "id": "e1",
            "queue": "q",
            "payload": "go",
            "error": "socket.timeout: timed out",
        }
        submitted = recoveryd(tmp_path, "submit", stdin=json.dumps(record))
        assert submitted.returncode == 0, submitted.stderr
        assert wait_for(lambda: client.rpop("q"), what="re-dispatch") == b"go"

        status = recoveryd(tmp_path, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["counters"]["dispatched"] == 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        log.close()

    # The daemon stopped the server it started, and its data is on disk.
    assert not url_file.exists()
    assert any((tmp_path / "state" / "redis").glob("appendonly.aof*"))


def test_commands_say_when_no_redis_is_there(tmp_path):
    (tmp_path / "recoveryd.toml").write_text('[paths]\nstate_dir = "state"\n')
    result = recoveryd(tmp_path, "status")
    assert result.returncode == 3
    assert "start `recoveryd run` first" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.path.isdir(tmp_path) and not (tmp_path / "state" / "redis").exists()


def test_the_embedded_redis_keeps_its_port_across_restarts(tmp_path):
    from recoveryd.embedded import EmbeddedRedis

    first = EmbeddedRedis(tmp_path)
    url = first.start()
    first.stop()
    second = EmbeddedRedis(tmp_path)
    try:
        assert second.start() == url
    finally:
        second.stop()
