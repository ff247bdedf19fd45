"""Task records in the tasks hash: stored compactly, read back exactly."""

from __future__ import annotations

import msgspec

from recoveryd import tasks
from recoveryd.scripts import Scripts
from recoveryd.writes import Writes
from tests.conftest import put_task, task_of


def record(**fields):
    base = {
        "state": "scheduled",
        "attempt": 3,
        "failed_at": 1_700_000_000_123,
        "task": "billing.charge_card",
        "category": "recoverable_network",
        "pattern": "network.connect_timeout",
        "confidence": "0.9",
        "queue": "app:queue:billing",
        "payload": '{"job": 1}',
    }
    return tasks.record(**(base | fields))


async def test_a_record_reads_back_field_by_field(ar, r, keys):
    writes = Writes()
    payload = '{"note": "ünïcode"}'
    writes.schedule(
        keys.retry, (keys.tasks, keys.names), "t1", 5, record(payload=payload)
    )
    dead = record(state="dead", error="boom", payload=b"\xff is no text")
    writes.store((keys.tasks, keys.names), "t2", dead)

    assert await writes.commit(Scripts(ar))

    first = task_of(r, keys, "t1")
    assert first == {
        b"state": b"scheduled",
        b"attempt": b"3",
        b"failed_at": b"1700000000123",
        b"task": b"billing.charge_card",
        b"category": b"recoverable_network",
        b"pattern": b"network.connect_timeout",
        b"confidence": b"0.9",
        b"queue": b"app:queue:billing",
        b"payload": payload.encode(),
    }
    assert task_of(r, keys, "t2")[b"error"] == b"boom"
    assert task_of(r, keys, "t2")[b"payload"] == b"\xff is no text"
    assert r.zscore(keys.retry, "t1") == 5


async def test_recurring_names_are_stored_once_as_numbers(ar, r, keys):
    writes = Writes()
    for i in range(50):
        writes.store((keys.tasks, keys.names), f"t{i}", record())
    long_name = "x" * (tasks.NAME_MAX_BYTES + 1)
    writes.store((keys.tasks, keys.names), "odd", record(task=long_name))

    assert await writes.commit(Scripts(ar))

    # task, category, pattern and queue: four names, each both ways.
    assert r.hget(keys.names, "count") == b"4"
    assert r.hget(keys.names, "=billing.charge_card") is not None
    stored = msgspec.msgpack.decode(r.hget(keys.tasks, "t7"))
    assert "billing.charge_card" not in stored and isinstance(stored[3], int)
    assert len(r.hget(keys.tasks, "t7")) < 40
    assert task_of(r, keys, "odd")[b"task"] == long_name.encode()


async def test_a_marked_record_keeps_every_field(ar, r, keys):
    put_task(r, keys, "t", queue="q", payload="p", error_type="", history="")
    writes = Writes()
    writes.mark(keys.tasks, "t", "succeeded", succeeded_at=42)
    writes.mark(keys.tasks, "unknown", "succeeded", succeeded_at=42)

    assert await writes.commit(Scripts(ar))

    task = task_of(r, keys, "t")
    assert (task[b"state"], task[b"succeeded_at"]) == (b"succeeded", b"42")
    assert (task[b"queue"], task[b"payload"]) == (b"q", b"p")
    assert not r.hexists(keys.tasks, "unknown"), "a mark makes no task"
    stored = msgspec.msgpack.decode(r.hget(keys.tasks, "t"))
    assert isinstance(stored, list), "still an array, not a map"


def test_an_unknown_or_unreadable_task_reads_as_none(r, keys):
    r.hset(keys.tasks, "junk", b"\xc1")
    assert tasks.read_sync(r, keys, ["missing", "junk"], ["state"]) == [None, None]
