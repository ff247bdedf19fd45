"""A task across failures: its payload, its record and its place."""

from __future__ import annotations

import json

import pytest

from recoveryd.connection import Link
from recoveryd.dispatch import DispatchLoop
from recoveryd.intake import Intake
from recoveryd.manual import retry_task
from recoveryd.scripts import Scripts
from recoveryd.wake import Wakeup
from tests.conftest import task_of

LONG = {"order": 1, "note": "x" * 5000}
SHORT = {"order": 2}


@pytest.fixture
def flow(ar, keys, runtime):
    scripts = Scripts(ar)
    wake = Wakeup(ar, keys.wake, Link())
    intake = Intake(
        ar, scripts, "test:1:p", lambda: runtime, Link(), wake.alarm("retry"), set
    )
    dispatch = DispatchLoop(ar, scripts, keys, wake.alarm("retry"), Link(), batch=100)
    return intake, dispatch


def fail(r, keys, payload, queue="q", **extra) -> None:
    record = {"id": "t", "task": "sync", "queue": queue, "error": "timed out"}
    r.lpush(keys.failures, json.dumps(record | {"payload": payload} | extra))


def fail_for_good(r, keys) -> None:
    """A failure of task t in a category that is never retried."""
    record = {"id": "t", "task": "sync", "queue": "q", "payload": SHORT}
    r.lpush(keys.failures, json.dumps(record | {"error": "malformed JSON"}))


async def dispatch_now(r, keys, dispatch) -> None:
    """Make every pending retry due, and dispatch them."""
    r.zadd(keys.retry, dict.fromkeys(r.zrange(keys.retry, 0, -1), 1), xx=True)
    await dispatch.dispatch_due()
    assert r.zcard(keys.retry) == 0


async def test_a_long_payload_is_kept_and_pushed_whole(r, keys, flow):
    intake, dispatch = flow
    fail(r, keys, LONG, retry_after=3600)
    await intake.step(block_s=0)

    assert json.loads(task_of(r, keys, "t")[b"payload"]) == LONG
    assert r.keys(f"{keys.prefix}:task*") == [b"recoveryd:tasks"], "no key per task"

    assert retry_task(r, keys, "t").message.startswith("scheduled; now due")
    await dispatch_now(r, keys, dispatch)

    assert [json.loads(p) for p in r.lrange("q", 0, -1)] == [LONG]
    task = task_of(r, keys, "t")
    assert task[b"state"] == b"dispatched"
    assert b"payload" not in task, "a pushed payload is not kept"


@pytest.mark.parametrize(("first", "then"), [(LONG, SHORT), (SHORT, LONG)])
async def test_the_next_failure_replaces_the_payload_either_way(
    r, keys, flow, first, then
):
    intake, dispatch = flow
    fail(r, keys, first, retry_after=3600)
    await intake.step(block_s=0)
    fail(r, keys, then)
    await intake.step(block_s=0)

    await dispatch_now(r, keys, dispatch)

    assert [json.loads(p) for p in r.lrange("q", 0, -1)] == [then]


async def test_a_task_that_dies_unpushable_takes_its_payload_back(r, keys, flow):
    intake, dispatch = flow
    r.set("blocked", "not a list")
    fail(r, keys, LONG, queue="blocked")
    await intake.step(block_s=0)

    await dispatch_now(r, keys, dispatch)

    assert r.zscore(keys.dead, "t") is not None
    task = task_of(r, keys, "t")
    assert json.loads(task[b"payload"]) == LONG
    assert task[b"reason"] == b"queue blocked is not a list"

    r.delete("blocked")
    assert retry_task(r, keys, "t").message.startswith("was dead")
    await dispatch_now(r, keys, dispatch)
    assert [json.loads(p) for p in r.lrange("blocked", 0, -1)] == [LONG]


async def test_a_success_report_cancels_a_pending_retry(r, keys, flow):
    intake, _ = flow
    fail(r, keys, LONG, retry_after=3600)
    await intake.step(block_s=0)
    r.lpush(keys.failures, json.dumps({"id": "t", "ok": True}))
    await intake.step(block_s=0)

    assert r.zcard(keys.retry) == 0
    assert task_of(r, keys, "t")[b"state"] == b"succeeded"
    assert r.zscore(keys.done, "t") is not None, "forgotten in its time"


async def test_a_task_given_up_keeps_its_payload_and_drops_its_retry(r, keys, flow):
    intake, _ = flow
    fail(r, keys, LONG, retry_after=3600)
    await intake.step(block_s=0)
    fail_for_good(r, keys)
    await intake.step(block_s=0)

    assert json.loads(task_of(r, keys, "t").get(b"payload")) == SHORT
    assert r.zscore(keys.dead, "t") is not None
    assert r.zscore(keys.retry, "t") is None, "the earlier failure's retry is void"


async def test_a_dead_task_that_fails_retryably_leaves_the_dead_set(r, keys, flow):
    intake, _ = flow
    fail_for_good(r, keys)
    await intake.step(block_s=0)
    fail(r, keys, SHORT)
    await intake.step(block_s=0)

    assert r.zscore(keys.retry, "t") is not None
    assert r.zscore(keys.dead, "t") is None
    task = task_of(r, keys, "t")
    assert b"reason" not in task and b"died_at" not in task and b"record" not in task


async def test_a_task_whose_record_is_not_readable_is_parked_and_the_rest_flow(
    r, keys, flow
):
    intake, _ = flow
    r.hset(keys.tasks, "t", "not a record")
    fail(r, keys, SHORT)
    record = {"id": "u", "task": "sync", "queue": "q", "error": "timed out"}
    r.lpush(keys.failures, json.dumps(record))

    assert await intake.step(block_s=0) == 2

    assert r.zrange(keys.retry, 0, -1) == [b"u"]
    [parked] = [json.loads(p) for p in r.lrange(keys.invalid, 0, -1)]
    assert (
        "record cannot be read: its record is not one recoveryd wrote"
        in (parked["reason"])
    )
    assert r.hget(keys.tasks, "t") == b"not a record"


async def test_retrying_a_dead_task_with_no_queue_leaves_it_dead(r, keys, flow):
    intake, _ = flow
    record = {"id": "t", "task": "sync", "error": "malformed JSON"}
    r.lpush(keys.failures, json.dumps(record))
    await intake.step(block_s=0)

    assert "no queue" in retry_task(r, keys, "t").message
    assert r.zscore(keys.dead, "t") is not None
