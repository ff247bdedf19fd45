"""Task records in the tasks hash: stored compactly, read back exactly."""

from __future__ import annotations

import json

import msgspec
import pytest
from redis.exceptions import ResponseError

from recoveryd import tasks
from recoveryd.connection import Link
from recoveryd.dispatch import DispatchLoop
from recoveryd.intake import Intake
from recoveryd.scripts import Scripts
from recoveryd.wake import Alarm
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

    # task, category and pattern: three names, each both ways; the queue
    # is kept as itself.
    assert r.hget(keys.names, "last") == b"3"
    assert r.hlen(keys.names) == 7
    assert r.hget(keys.names, "=billing.charge_card") is not None
    stored = msgspec.msgpack.decode(r.hget(keys.tasks, "t7"))
    assert "billing.charge_card" not in stored and isinstance(stored[3], int)
    assert len(r.hget(keys.tasks, "t7")) < 60
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


async def test_a_lost_names_hash_never_lends_a_number_to_another_name(ar, r, keys):
    writes = Writes()
    writes.store((keys.tasks, keys.names), "a", record(task="alpha.task"))
    assert await writes.commit(Scripts(ar))
    r.delete(keys.names)
    writes = Writes()
    writes.store((keys.tasks, keys.names), "b", record(task="beta.task"))
    assert await writes.commit(Scripts(ar))

    assert task_of(r, keys, "b")[b"task"] == b"beta.task"
    old = task_of(r, keys, "a")
    assert b"task" not in old, "a lost name reads as empty, never as another"
    assert old[b"queue"] == b"app:queue:billing", "queues are never numbers"

    # Lost again at once, with many names given in between.
    writes = Writes()
    for i in range(300):
        writes.store((keys.tasks, keys.names), f"b{i}", record(task=f"beta.{i}"))
    assert await writes.commit(Scripts(ar))
    r.delete(keys.names)
    writes = Writes()
    for i in range(300):
        writes.store((keys.tasks, keys.names), f"c{i}", record(task=f"gamma.{i}"))
    assert await writes.commit(Scripts(ar))

    mislabelled = [
        i for i in range(300) if task_of(r, keys, f"b{i}").get(b"task", b"") != b""
    ]
    assert mislabelled == []
    assert task_of(r, keys, "c299")[b"task"] == b"gamma.299"


async def test_a_lost_number_count_or_way_back_is_mended(ar, r, keys):
    writes = Writes()
    writes.store((keys.tasks, keys.names), "a", record(task="alpha.task"))
    assert await writes.commit(Scripts(ar))
    number = r.hget(keys.names, "=alpha.task").decode()
    r.hdel(keys.names, "last", f"#{number}")
    writes = Writes()
    writes.store((keys.tasks, keys.names), "b", record(task="alpha.task"))
    writes.store((keys.tasks, keys.names), "c", record(task="gamma.task"))
    assert await writes.commit(Scripts(ar))

    assert task_of(r, keys, "a")[b"task"] == b"alpha.task"
    assert task_of(r, keys, "c")[b"task"] == b"gamma.task"


BAD_RECORDS = {
    "garbage": b"\xc1\xc1",
    "a map": msgspec.msgpack.encode({"state": 1}),
    "too short": msgspec.msgpack.encode([1, 1, 0]),
    "more not a map": msgspec.msgpack.encode(
        [1, 1, 0, "t", "c", "p", "1.0", "q:bad", "p", "", "", "", "x"]
    ),
    "payload not text": msgspec.msgpack.encode(
        [1, 1, 0, "t", "c", "p", "1.0", "q:bad", {"a": 1}, "", "", ""]
    ),
    "attempt not a number": msgspec.msgpack.encode(
        [1, "abc", 0, "t", "c", "p", "1.0", "q:bad", "p", "", "", ""]
    ),
    "time not a number": msgspec.msgpack.encode(
        [1, 1, "yesterday", "t", "c", "p", "1.0", "q:bad", "p", "", "", ""]
    ),
    "time as digits": msgspec.msgpack.encode(
        [1, 1, "100000000000000000000", "t", "c", "p", "1.0", "q:bad", "p", "", "", ""]
    ),
    "time past 9999": msgspec.msgpack.encode(
        [1, 1, 300_000_000_000_000, "t", "c", "p", "1.0", "q:bad", "p", "", "", ""]
    ),
    "queue a number": msgspec.msgpack.encode(
        [1, 1, 0, "t", "c", "p", "1.0", 7, "p", "", "", ""]
    ),
}


async def test_records_recoveryd_did_not_write_are_dropped_not_pushed(ar, r, keys):
    for task_id, raw in BAD_RECORDS.items():
        r.hset(keys.tasks, task_id, raw)
    put_task(r, keys, "good", queue="q:good", payload="fine")
    r.zadd(keys.retry, dict.fromkeys([*BAD_RECORDS, "good"], 1))
    loop = DispatchLoop(ar, Scripts(ar), keys, Alarm("retry"), Link(), batch=100)

    result = await loop.dispatch_due()

    assert (result.dispatched, result.orphans) == (1, len(BAD_RECORDS))
    assert r.lrange("q:good", 0, -1) == [b"fine"]
    assert not r.exists("q:bad")
    assert r.zcard(keys.retry) == 0
    assert tasks.read_sync(r, keys, list(BAD_RECORDS)) == [None] * len(BAD_RECORDS)


async def test_a_names_hash_of_the_wrong_type_parks_records_with_why(
    ar, r, keys, runtime
):
    put_task(r, keys, "known", queue="q")
    r.delete(keys.names)
    r.set(keys.names, "not a hash")
    intake = Intake(
        ar, Scripts(ar), "test:1:n", lambda: runtime, Link(), Alarm("retry"), set
    )
    for task_id in ("known", "new"):
        record = {"id": task_id, "task": "t", "queue": "q", "error": "timed out"}
        r.lpush(keys.failures, json.dumps(record))

    assert await intake.step(block_s=0) == 2

    parked = [json.loads(raw)["reason"] for raw in r.lrange(keys.invalid, 0, -1)]
    assert len(parked) == 2
    assert all("recoveryd:names is a string, not a hash" in why for why in parked)
    assert r.zcard(keys.retry) == 0


async def test_a_failure_of_a_task_with_an_unreadable_record_is_parked(
    ar, r, keys, runtime
):
    fields = [1, 1, 0, "t", "c", "p", "1.0", "q", "p", "", "", ""]
    r.hset(keys.tasks, "odd", BAD_RECORDS["attempt not a number"])
    # Text that is not UTF-8 reads with replacement characters.
    r.hset(keys.tasks, "mojibake", msgspec.msgpack.encode(fields)[:-1] + b"\xa1\xff")
    intake = Intake(
        ar, Scripts(ar), "test:1:u", lambda: runtime, Link(), Alarm("retry"), set
    )
    for task_id in ("odd", "mojibake", "fine"):
        record = {"id": task_id, "task": "t", "queue": "q", "error": "timed out"}
        r.lpush(keys.failures, json.dumps(record))
    r.lpush(keys.failures, json.dumps({"id": "odd", "ok": True}))

    assert await intake.step(block_s=0) == 4

    assert sorted(r.zrange(keys.retry, 0, -1)) == [b"fine", b"mojibake"]
    assert task_of(r, keys, "mojibake")[b"attempt"] == b"2"
    [parked] = [json.loads(raw) for raw in r.lrange(keys.invalid, 0, -1)]
    assert "record cannot be read" in parked["reason"]
    assert r.hget(keys.stats, "ok_reports") == b"1", "a success is never parked"


async def test_a_tasks_key_of_the_wrong_type_stops_dispatch_before_it_writes(
    ar, r, keys
):
    r.set(keys.tasks, "not a hash")
    r.zadd(keys.retry, {"t": 1})
    loop = DispatchLoop(ar, Scripts(ar), keys, Alarm("retry"), Link(), batch=100)

    with pytest.raises(ResponseError, match="recoveryd:tasks is a string, not a hash"):
        await loop.dispatch_due()

    assert r.zrange(keys.retry, 0, -1) == [b"t"], "nothing lost"


async def test_a_success_whose_index_is_refused_writes_nothing(ar, r, keys, runtime):
    put_task(r, keys, "k0", state="dispatched", queue="q")
    r.zadd(keys.watch, {"k0": 1})
    r.set(keys.done, "not a sorted set")
    intake = Intake(
        ar, Scripts(ar), "test:1:d", lambda: runtime, Link(), Alarm("retry"), set
    )
    r.lpush(keys.failures, json.dumps({"id": "k0", "ok": True}))

    assert await intake.step(block_s=0) == 1

    assert task_of(r, keys, "k0")[b"state"] == b"dispatched", "not half done"
