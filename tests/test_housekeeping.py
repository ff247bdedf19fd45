"""Bounds on the dead set and the invalid list, and their eviction counts."""

from __future__ import annotations

from redis.asyncio import Redis

from recoveryd import housekeeping
from recoveryd.config import parse_config
from recoveryd.connection import Link
from recoveryd.housekeeping import Housekeeping
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts
from tests.conftest import put_task


async def test_dead_set_is_trimmed_by_age_then_count_and_counted(redis_server, r, keys):
    runtime = Runtime.from_config(
        parse_config(
            '[dead]\nmax_age = "1d"\nmax_count = 3\n[intake]\ninvalid_max = 2\n'
        )
    )
    seconds, _ = r.time()
    now_ms = seconds * 1000
    day_ms = 86_400_000
    ages = {
        "ancient": 3 * day_ms,
        "old": 2 * day_ms,
        "a": 5000,
        "b": 4000,
        "c": 3000,
        "d": 2000,
    }
    for task_id, age in ages.items():
        r.zadd(keys.dead, {task_id: now_ms - age})
        put_task(r, keys, task_id, state="dead")
    r.lpush(keys.invalid, "1", "2", "3", "4", "5")

    client = Redis.from_url(redis_server.url)
    try:
        keeper = Housekeeping(client, Scripts(client), lambda: runtime, Link())
        assert await keeper.trim() == (2, 1, 3)
    finally:
        await client.aclose()

    assert r.zrange(keys.dead, 0, -1) == [b"b", b"c", b"d"]
    assert sorted(r.hkeys(keys.tasks)) == [b"b", b"c", b"d"]
    assert r.lrange(keys.invalid, 0, -1) == [b"5", b"4"]
    assert r.hget(keys.stats, "dead_evicted") == b"3"
    assert r.hget(keys.stats, "invalid_evicted") == b"3"


async def test_recovered_tasks_are_forgotten_when_their_time_is_up(
    ar, r, keys, runtime, monkeypatch
):
    monkeypatch.setattr(housekeeping, "FORGET_CHUNK", 3)
    seconds, _ = r.time()
    now_ms = seconds * 1000
    for i in range(7):
        put_task(r, keys, f"old{i}", state="recovered")
        r.zadd(keys.done, {f"old{i}": now_ms - 1_000})
    put_task(r, keys, "fresh", state="succeeded")
    r.zadd(keys.done, {"fresh": now_ms + 60_000})
    # Failed again since it recovered: its new retry is not forgotten.
    put_task(r, keys, "again", state="scheduled")
    r.zadd(keys.done, {"again": now_ms - 1_000})

    keeper = Housekeeping(ar, Scripts(ar), lambda: runtime, Link())
    assert await keeper.forget_done() == 7

    assert sorted(r.hkeys(keys.tasks)) == [b"again", b"fresh"]
    assert r.zrange(keys.done, 0, -1) == [b"fresh"]
