"""A batch's writes, applied by one script call."""

from __future__ import annotations

import pytest

from recoveryd import tasks
from recoveryd.scripts import Scripts
from recoveryd.writes import Writes

RECORD = tasks.record(
    state="scheduled",
    attempt=1,
    failed_at=1,
    task="t",
    category="c",
    pattern="p",
    confidence="1.0",
    queue="q",
    payload="p",
)


@pytest.fixture
async def scripts(ar) -> Scripts:
    return Scripts(ar)


@pytest.mark.parametrize("size", [0, 31, 32, 255, 256, 65_535, 65_536, 100_000])
async def test_bytes_arrive_whole_at_every_length(ar, r, scripts, size):
    value = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    writes = Writes()
    writes.rpush("list", value, "text")
    writes.hset("hash", {"bytes": b"\xff\x00", "number": 0.95, "big": 10**20})

    assert await writes.commit(scripts)

    assert r.lrange("list", 0, -1) == [value, b"text"]
    assert r.hgetall("hash") == {
        b"bytes": b"\xff\x00",
        b"number": b"0.95",
        b"big": b"100000000000000000000",
    }


async def test_writes_dropped_from_a_mark_are_not_applied(ar, r, scripts):
    writes = Writes()
    writes.rpush("list", "kept")
    mark = len(writes)
    writes.rpush("list", "dropped")
    writes.hincrby("counts", "dropped")
    writes.drop_from(mark)

    assert await writes.commit(scripts)

    assert r.lrange("list", 0, -1) == [b"kept"]
    assert not r.exists("counts")


async def test_nothing_is_written_when_the_in_flight_list_changed(ar, r, scripts):
    r.rpush("inflight", "one", "two")
    writes = Writes()
    writes.rpush("list", "x")

    assert not await writes.commit(scripts, "inflight", 3)
    assert not r.exists("list")
    assert r.llen("inflight") == 2

    assert await writes.commit(scripts, "inflight", 2)
    assert r.lrange("list", 0, -1) == [b"x"]
    assert not r.exists("inflight")


async def test_a_retry_removed_later_in_the_batch_stays_removed(ar, r, scripts):
    writes = Writes()
    for task_id in ("a", "b"):
        writes.schedule("retry", ("tasks", "names"), task_id, 5, RECORD)
    writes.zrem("retry", "a")  # e.g. the task reported success in the same batch

    assert await writes.commit(scripts)

    assert r.zrange("retry", 0, -1, withscores=True) == [(b"b", 5.0)]
    assert sorted(r.hkeys("tasks")) == [b"a", b"b"]


async def test_more_values_than_one_lua_call_takes_are_all_pushed(ar, r, scripts):
    writes = Writes()
    writes.rpush("ids", *map(str, range(2500)))

    assert await writes.commit(scripts)

    assert r.lrange("ids", 0, -1) == [str(i).encode() for i in range(2500)]
