"""Adaptive backoff and recovery judgement: the rule, its bounds, its wiring."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from recoveryd import adaptive, history
from recoveryd.adaptive import Rate, next_delay
from recoveryd.config import parse_config
from recoveryd.connection import Link
from recoveryd.intake import Intake
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts
from recoveryd.wake import Alarm
from tests.conftest import aput_task, atask_of

NOW = 1_700_000_000_000
NETWORK = "recoverable_network"
EXACT = """
[categories.recoverable_network]
base_delay = "30s"
max_delay = "1h"
jitter = 0
"""


@pytest.fixture
def runtime() -> Runtime:
    return Runtime.from_config(parse_config(EXACT))


def test_a_low_success_rate_slows_retries_down(runtime):
    config = runtime.config
    network = config.categories[NETWORK]
    bad = Rate(recovered=10, refailed=20)
    assert next_delay(30.0, bad, network, config.adaptive) == 45.0


def test_a_high_success_rate_speeds_retries_up(runtime):
    config = runtime.config
    network = config.categories[NETWORK]
    good = Rate(recovered=95, refailed=5)
    assert next_delay(30.0, good, network, config.adaptive) == 24.0


def test_a_middling_rate_or_too_few_samples_change_nothing(runtime):
    config = runtime.config
    network = config.categories[NETWORK]
    assert (
        next_delay(30.0, Rate(recovered=75, refailed=25), network, config.adaptive)
        == 30.0
    )
    few = Rate(recovered=1, refailed=18)  # 19 < min_samples (20)
    assert next_delay(30.0, few, network, config.adaptive) == 30.0


def test_the_rule_stops_at_its_bounds(runtime):
    config = runtime.config
    network = config.categories[NETWORK]
    delay = 30.0
    for _ in range(20):
        delay = next_delay(
            delay, Rate(recovered=0, refailed=50), network, config.adaptive
        )
    assert delay == 240.0  # 8 × the configured 30 s
    for _ in range(40):
        delay = next_delay(delay, Rate(recovered=50), network, config.adaptive)
    assert delay == 7.5  # a quarter of it


def test_the_upper_bound_never_passes_max_delay():
    config = parse_config(
        '[categories.recoverable_network]\nbase_delay = "30s"\nmax_delay = "1m"\n'
    )
    network = config.categories[NETWORK]
    assert adaptive.bounds(network, config.adaptive) == (7.5, 60.0)


async def record_outcomes(ar, keys, now_ms: int, recovered: int, refailed: int):
    counts = Counter(
        {f"recovered:{NETWORK}": recovered, f"refailed:{NETWORK}": refailed}
    )
    async with ar.pipeline(transaction=False) as pipe:
        history.write(pipe, keys, now_ms - 60_000, +counts)
        await pipe.execute()


async def test_each_period_moves_the_stored_delay_within_bounds(ar, runtime):
    keys = runtime.keys
    hour_ms = 3_600_000
    seen = []
    for period in range(8):
        now_ms = NOW + period * hour_ms
        await record_outcomes(ar, keys, now_ms, recovered=5, refailed=45)
        await adaptive.adapt(ar, runtime, now_ms)
        stored = await ar.hgetall(keys.base_delays)
        seen.append(float(stored[NETWORK.encode()]))
    assert seen == [45.0, 67.5, 101.25, 151.875, 227.8125, 240.0, 240.0, 240.0]
    stored = await ar.hgetall(keys.base_delays)
    assert float(stored[f"{NETWORK}:from".encode()]) == 30.0
    assert float(stored[f"{NETWORK}:rate".encode()]) == 0.1


async def test_too_few_outcomes_leave_the_delay_alone(ar, runtime):
    await record_outcomes(ar, runtime.keys, NOW, recovered=0, refailed=5)
    assert await adaptive.adapt(ar, runtime, NOW) == []
    assert not await ar.hexists(runtime.keys.base_delays, NETWORK)


def test_a_new_configured_base_delay_starts_afresh(runtime):
    stored = {NETWORK.encode(): b"45", f"{NETWORK}:from".encode(): b"30"}
    assert adaptive.effective_delays(stored, runtime.config) == {NETWORK: 45.0}
    changed = parse_config('[categories.recoverable_network]\nbase_delay = "1m"\n')
    assert adaptive.effective_delays(stored, changed) == {}


async def test_a_redispatched_task_that_stays_quiet_is_recovered(ar, runtime):
    keys = runtime.keys
    window_ms = round(runtime.config.schedule.recovery_window_s * 1000)
    for task_id, state in [("quiet", "dispatched"), ("failed", "scheduled")]:
        await aput_task(ar, keys, task_id, state=state, category=NETWORK)
        await ar.zadd(keys.watch, {task_id: NOW - window_ms - 1})
    await aput_task(ar, keys, "recent", state="dispatched", category=NETWORK)
    await ar.zadd(keys.watch, {"recent": NOW - 1_000})

    assert await adaptive.settle(ar, Scripts(ar), runtime, NOW) == 1

    assert (await atask_of(ar, keys, "quiet")).get(b"state") == b"recovered"
    assert await ar.zscore(keys.done, "quiet") > NOW, "forgotten in time"
    assert (await atask_of(ar, keys, "failed")).get(b"state") == b"scheduled"
    assert await ar.zrange(keys.watch, 0, -1) == [b"recent"]
    counts = await history.read_counts(ar, keys, NOW - 60_000, NOW + 1)
    assert counts[f"recovered:{NETWORK}"] == 1


def intake(ar, runtime) -> Intake:
    return Intake(
        ar, Scripts(ar), "me", lambda: runtime, Link(), Alarm("retry"), lambda: set()
    )


def failure(task_id: str) -> str:
    return json.dumps(
        {
            "task": "sync.pull",
            "id": task_id,
            "queue": "q:sync",
            "error": "ConnectionRefusedError: [Errno 111] Connection refused",
        }
    )


async def test_intake_schedules_with_the_adapted_base_delay(ar, runtime):
    keys = runtime.keys
    await ar.hset(keys.base_delays, mapping={NETWORK: 45, f"{NETWORK}:from": 30})
    await ar.lpush(keys.failures, failure("t1"))

    await intake(ar, runtime).step(block_s=0)

    task = await atask_of(ar, keys, "t1")
    assert task[b"category"] == NETWORK.encode()
    due = await ar.zscore(keys.retry, "t1")
    assert int(due) - int(task[b"failed_at"]) == 45_000


async def test_success_reports_count_as_recovered_and_are_not_invalid(ar, runtime):
    keys = runtime.keys
    common = {"category": NETWORK, "attempt": 1, "queue": "q", "task": "t"}
    await aput_task(ar, keys, "sent", **common, state="dispatched")
    await ar.zadd(keys.watch, {"sent": NOW})
    await aput_task(ar, keys, "waiting", **common, state="scheduled")
    await ar.zadd(keys.retry, {"waiting": NOW + 60_000})
    for task_id in ("sent", "waiting", "unknown"):
        await ar.lpush(keys.failures, json.dumps({"id": task_id, "ok": True}))

    await intake(ar, runtime).step(block_s=0)

    assert await ar.llen(keys.invalid) == 0
    assert (await atask_of(ar, keys, "sent")).get(b"state") == b"recovered"
    assert await ar.zcard(keys.watch) == 0
    assert (await atask_of(ar, keys, "waiting")).get(b"state") == b"succeeded"
    assert await ar.zscore(keys.retry, "waiting") is None
    assert int(await ar.hget(keys.stats, "ok_reports")) == 3
    now_ms = int((await atask_of(ar, keys, "sent")).get(b"recovered_at"))
    counts = await history.read_counts(ar, keys, now_ms - 60_000, now_ms + 1)
    assert counts[f"recovered:{NETWORK}"] == 1
    assert counts[f"reported_ok:{NETWORK}"] == 1


async def test_a_retry_that_fails_again_counts_against_its_category(ar, runtime):
    keys = runtime.keys
    await aput_task(ar, keys, "again", category=NETWORK, attempt=1, state="dispatched")
    await ar.lpush(keys.failures, failure("again"))

    await intake(ar, runtime).step(block_s=0)

    failed_ms = int((await atask_of(ar, keys, "again")).get(b"failed_at"))
    counts = await history.read_counts(ar, keys, failed_ms - 60_000, failed_ms + 1)
    assert counts[f"refailed:{NETWORK}"] == 1
    assert (await atask_of(ar, keys, "again")).get(b"attempt") == b"2"
