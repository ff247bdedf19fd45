"""Tasks an earlier version kept in keys of their own move into the tasks hash."""

from __future__ import annotations

import json

from recoveryd import migrate
from recoveryd.migrate import MOVED, move_legacy_tasks
from tests.conftest import put_task, task_of, wait_for

NOW = 1_700_000_000_000
KEEP = 7 * 86_400_000


async def test_many_old_tasks_move_in_chunks_with_progress(ar, r, keys, monkeypatch):
    monkeypatch.setattr(migrate, "CHUNK", 7)
    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.hset(f"recoveryd:task:m{i}", mapping={"state": "dead", "queue": "q"})
    pipe.execute()
    seen: list[int] = []

    assert await move_legacy_tasks(ar, keys, NOW, KEEP, seen.append) == 50

    assert r.hlen(keys.tasks) == 50
    assert seen == [7 * n for n in range(1, 8)]
    assert not r.keys("recoveryd:task:*")


async def test_a_broken_names_hash_stops_the_move_not_the_daemon(ar, r, keys):
    r.set(keys.names, "not a hash")
    r.hset("recoveryd:task:t1", mapping={"state": "scheduled", "queue": "q"})

    assert await move_legacy_tasks(ar, keys, NOW, KEEP) == 0

    assert r.exists("recoveryd:task:t1"), "left to be moved once mended"


async def test_old_task_keys_are_moved_with_all_they_held(ar, r, keys):
    pending = {
        "state": "scheduled",
        "attempt": "2",
        "task": "billing.charge",
        "category": "recoverable_network",
        "pattern": "network.timeout",
        "confidence": "0.9",
        "failed_at": "1699999999000",
        "error": "timed out",
        "queue": "q:billing",
        "due": "1700000060000",
        "history": json.dumps([{"attempt": 1}, {"attempt": 2}]),
    }
    r.hset("recoveryd:task:t1", mapping=pending)
    r.set("recoveryd:payload:t1", '{"long": "payload"}')
    r.zadd(keys.retry, {"t1": 1_700_000_060_000})
    r.hset("recoveryd:task:t2", mapping={"state": "recovered", "queue": "q"})
    r.hset("recoveryd:task:t3", mapping={"state": "dead", "reason": "exhausted"})
    put_task(r, keys, "t3", state="scheduled", queue="q:new")  # newer: kept
    r.set("recoveryd:task:odd", "not a hash")

    assert await move_legacy_tasks(ar, keys, NOW, KEEP) == 3

    moved = task_of(r, keys, "t1")
    for name, value in pending.items():
        if name != "due":
            assert moved[name.encode()] == value.encode(), name
    assert moved[b"payload"] == b'{"long": "payload"}'
    assert task_of(r, keys, "t2")[b"state"] == b"recovered"
    assert r.zscore(keys.done, "t2") == NOW + KEEP
    assert task_of(r, keys, "t3")[b"queue"] == b"q:new"
    assert r.keys("recoveryd:task:*") == [b"recoveryd:task:odd"]
    assert not r.exists("recoveryd:payload:t1")
    assert r.hexists(keys.names, MOVED)

    r.hset("recoveryd:task:late", "state", "scheduled")
    assert await move_legacy_tasks(ar, keys, NOW, KEEP) == 0, "done once"


def test_a_daemon_moves_old_tasks_and_dispatches_them(r, keys, start_daemon):
    r.hset(
        "recoveryd:task:old",
        mapping={"state": "scheduled", "queue": "q:work", "payload": "hello"},
    )
    r.zadd(keys.retry, {"old": 1})

    start_daemon()

    wait_for(lambda: r.llen("q:work") == 1, what="the moved task's retry")
    assert r.lrange("q:work", 0, -1) == [b"hello"]
    assert not r.exists("recoveryd:task:old")
