"""Redis outages: the daemon waits them out and loses nothing Redis kept."""

from __future__ import annotations

import json

import pytest
import redis

from recoveryd.connection import exchange, redact_url
from tests.conftest import wait_for


def push_all(server, keys, ids) -> None:
    """Push each record, retrying through the outage as an application would."""
    for task_id in ids:
        record = json.dumps(
            {
                "task": "t",
                "id": task_id,
                "queue": "q",
                "error": "ECONNRESET: socket hang up",
            }
        )
        wait_for(
            lambda r=record: _try_push(server, keys, r),
            timeout_s=60,
            what="redis to take a push",
        )


def _try_push(server, keys, record: str) -> bool:
    try:
        server.client().lpush(keys.failures, record)
    except redis.RedisError:
        return False
    return True


def test_redis_restart_mid_flow_loses_nothing(redis_server, keys, start_daemon):
    daemon = start_daemon('[categories.recoverable_network]\nbase_delay = "1h"\n')
    push_all(redis_server, keys, [f"a{i}" for i in range(300)])

    redis_server.kill()
    wait_for(lambda: "redis is unreachable" in daemon.log(), what="the outage noticed")
    redis_server.start()
    push_all(redis_server, keys, [f"b{i}" for i in range(300)])

    r = redis_server.client()
    wait_for(
        lambda: int(r.hget(keys.stats, "received") or 0) == 600,
        timeout_s=60,
        what="all 600 records handled",
    )
    assert r.zcard(keys.retry) == 600
    assert r.llen(keys.failures) == 0
    log = daemon.log()
    assert "redis is reachable again" in log
    # One warning per change of state, not one per try.
    assert log.count("redis is unreachable") == 1
    assert daemon.process.poll() is None


def test_daemon_starts_before_redis_and_waits(
    redis_server, keys, start_daemon, tmp_path
):
    redis_server.kill()
    from tests.conftest import DaemonProcess, write_config

    config = write_config(tmp_path / "late.toml", redis_server.url)
    daemon = DaemonProcess(config, redis_server.client(), keys, tmp_path / "late.log")
    try:
        wait_for(lambda: "redis is unreachable" in daemon.log(), what="the wait")
        assert daemon.process.poll() is None
        redis_server.start()
        daemon.wait_ready()
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_password_is_never_shown():
    assert redact_url("redis://:hunter2@db:6379/0") == "redis://:***@db:6379/0"


async def test_exchange_hands_back_each_reply_in_turn(ar, r):
    r.rpush("l", "a", "b")
    commands = [["LRANGE", "l", 0, -1], ["RPUSH", "l", "c"], ["LLEN", "l"]]

    async with exchange(ar, commands) as replies:
        assert await replies.next() == [b"a", b"b"]
        assert replies.unread == 2
    # The rest were read on the way out, and the connection is reused clean.

    assert r.llen("l") == 3
    assert await ar.lrange("l", 0, -1) == [b"a", b"b", b"c"]


async def test_exchange_sends_more_on_the_same_connection(ar, r):
    async with exchange(ar, [["SET", "k", "1"]]) as replies:
        await replies.send(["INCR", "k"], ["GET", "k"])
        assert replies.unread == 3
        assert await replies.next() == b"OK"
        assert await replies.next() == 2
        assert await replies.next() == b"2"


async def test_exchange_left_by_an_error_leaves_no_stray_reply(ar, r):
    r.set("s", "not a list")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        async with exchange(ar, [["LLEN", "s"], ["SET", "x", "1"]]) as replies:
            await replies.next()

    assert r.get("x") == b"1", "a command sent is run even if its reply is unread"
    assert await ar.get("s") == b"not a list"
