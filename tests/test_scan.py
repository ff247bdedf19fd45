"""The scan against a real Redis, at a time the test chooses."""

from __future__ import annotations

import json

import msgspec

from recoveryd import scan as scan_module
from recoveryd.notification import Analysis, Delivery, Notification
from recoveryd.scan import OVERDUE_MS, run_scan
from recoveryd.scripts import Scripts
from tests.conftest import aput_task, atask_of

NOW = 1_700_000_000_000
# Another host's daemons: judged by heartbeat alone, not by a local pid.
DEAD = "otherhost:111:dead00"
ALIVE = "otherhost:222:alive0"
GHOST = "otherhost:333:ghost0"


async def scan(ar, runtime, now_ms: int = NOW):
    return await run_scan(ar, Scripts(ar), runtime, now_ms, owner="test")


def notification(task_id: str) -> Notification:
    return Notification(
        id=f"n-{task_id}",
        type="unrecoverable_failure",
        severity="error",
        audience="admin",
        title="t failed",
        description="t failed",
        task="t",
        task_id=task_id,
        error_message="boom",
        analysis=Analysis(
            category="unrecoverable_data",
            recommended_action="fix it",
            confidence=0.9,
            pattern="data.malformed_json",
        ),
        created_at="2023-11-14T22:13:20.000Z",
    )


def delivery(channel: str, task_id: str, tries: int = 0) -> bytes:
    item = Delivery(channel=channel, notification=notification(task_id), tries=tries)
    return msgspec.json.encode(item)


async def test_records_stuck_in_flight_go_back_to_the_failures_list(ar, runtime):
    keys = runtime.keys
    await ar.hset(keys.consumers, mapping={DEAD: NOW - 100_000, ALIVE: NOW - 1_000})
    await ar.rpush(keys.inflight(DEAD), b"r1", b"r2")
    await ar.rpush(keys.inflight(GHOST), b"r3")  # no heartbeat at all
    await ar.rpush(keys.inflight(ALIVE), b"busy")

    report, path = await scan(ar, runtime)

    assert sorted(await ar.lrange(keys.failures, 0, -1)) == [b"r1", b"r2", b"r3"]
    assert await ar.lrange(keys.inflight(ALIVE), 0, -1) == [b"busy"]
    assert not await ar.hexists(keys.consumers, DEAD)
    found = report.stuck_in_flight
    assert (found.found, found.handled) == (2, 2)
    assert {item["daemon"]: item["records"] for item in found.items} == {
        DEAD: 2,
        GHOST: 1,
    }
    written = json.loads(path.read_text())
    assert written["stuck_in_flight"]["found"] == 2
    assert path.name == "failure_processing_20231114T221320Z.json"
    assert path.parent == runtime.config.state_dir / "reports" / "failure_processing"


async def test_undelivered_notifications_are_handled(ar, runtime):
    keys = runtime.keys
    # No [notify.email] in the config: no daemon serves the email outbox.
    unserved = delivery("email", "task-e")
    await ar.zadd(keys.outbox("email"), {unserved: NOW - OVERDUE_MS - 1})
    # Just queued for a channel another daemon may serve: not judged yet.
    fresh = delivery("push", "task-p")
    await ar.zadd(keys.outbox("push"), {fresh: NOW - 10_000})
    # The alert log is served, but this one was left overdue.
    overdue = delivery("alert_log", "task-o")
    await ar.zadd(keys.outbox("alert_log"), {overdue: NOW - OVERDUE_MS - 1})
    # Failing, and waiting for its next try: listed, left alone.
    retrying = delivery("alert_log", "task-r", tries=2)
    await ar.zadd(keys.outbox("alert_log"), {retrying: NOW + 30_000})
    pubsub = ar.pubsub()
    await pubsub.subscribe(keys.wake)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation

    report, _ = await scan(ar, runtime)

    assert await ar.zcard(keys.outbox("email")) == 0
    assert await ar.zrange(keys.outbox("push"), 0, -1) == [fresh]
    members = await ar.zrange(keys.outbox("alert_log"), 0, -1)
    assert sum(b"undeliverable" in m for m in members) == 1
    notice = next(
        msgspec.json.decode(m, type=Delivery) for m in members if b"undeliverable" in m
    )
    assert notice.channel == "alert_log"
    assert notice.notification.task_id == "task-e"
    assert "email" in notice.notification.description
    assert overdue in members and retrying in members

    found = report.undelivered
    assert found.found == 3
    assert found.handled == 2
    done = {item["task_id"]: item["done"] for item in found.items}
    assert done == {
        "task-e": "to the alert log",
        "task-o": "woke its delivery loop",
        "task-r": "left to its retries",
    }
    woken = []
    while message := await pubsub.get_message(timeout=1):
        woken.append(message["data"])
    assert f"outbox:alert_log {NOW}".encode() in woken
    await pubsub.aclose()


async def test_a_scheduled_task_that_lost_its_entry_is_scheduled_again(ar, runtime):
    keys = runtime.keys
    task = {"queue": "q", "payload": "p", "task": "t", "category": "c"}
    for task_id, state in [
        ("lost", "scheduled"),
        ("fine", "scheduled"),
        ("sent", "dispatched"),
        ("held", "held"),
        ("gone", "dead"),
        ("over", "recovered"),
    ]:
        await aput_task(ar, keys, task_id, **task, state=state)
    await ar.zadd(keys.retry, {"fine": NOW + 7_000})
    # "held" says a pause holds it, but the held set lost it.
    await aput_task(ar, keys, "held", **task, state="held", held="category:c")

    report, _ = await scan(ar, runtime)

    assert await ar.zscore(keys.retry, "lost") == NOW
    assert await ar.zscore(keys.retry, "held") == NOW
    assert await ar.zscore(keys.retry, "fine") == NOW + 7_000
    assert await ar.zscore(keys.retry, "sent") is None
    assert (await atask_of(ar, keys, "held")).get(b"state") == b"scheduled"
    assert sorted(report.lost_schedule.items) == ["held", "lost"]
    # Every other task is put back in the index its state names.
    assert await ar.zscore(keys.watch, "sent") == NOW
    assert await ar.zscore(keys.dead, "gone") == NOW
    ttl_ms = round(runtime.config.retry.task_ttl_s * 1000)
    assert await ar.zscore(keys.done, "over") == NOW + ttl_ms
    assert report.examined["tasks"] == 6
    assert report.examined["indexes_repaired"] == 3


async def test_the_scan_walks_every_task_in_steps(ar, runtime, monkeypatch):
    keys = runtime.keys
    monkeypatch.setattr(scan_module, "SWEEP_STEP", 7)
    for i in range(100):
        await aput_task(ar, keys, f"t{i}", queue="q", state="scheduled")
    await ar.zadd(keys.retry, {f"t{i}": NOW + 1 for i in range(0, 100, 2)})

    report, _ = await scan(ar, runtime)

    assert report.examined["tasks"] == 100
    assert sorted(report.lost_schedule.items) == sorted(
        f"t{i}" for i in range(1, 100, 2)
    )
    assert await ar.zcard(keys.retry) == 100


async def test_dead_tasks_never_alerted_are_notified_once(ar, runtime):
    keys = runtime.keys
    record = {"task": "sync.pull", "id": "d1", "queue": "q", "error": "timeout"}
    fields = {
        "state": "dead",
        "task": "sync.pull",
        "category": "recoverable_network",
        "pattern": "network.timeout",
        "confidence": "0.9",
        "attempt": 6,
        "reason": "retries exhausted (5)",
        "record": json.dumps(record),
    }
    await aput_task(ar, keys, "d1", **fields)
    await aput_task(ar, keys, "d2", **fields, alerted_at=NOW - 5)
    await ar.zadd(keys.dead, {"d1": NOW - 60_000, "d2": NOW - 60_000})

    report, _ = await scan(ar, runtime)

    assert report.never_alerted.items == ["d1"]
    assert int((await atask_of(ar, keys, "d1")).get(b"alerted_at")) == NOW
    members = await ar.zrange(keys.outbox("alert_log"), 0, -1)
    assert len(members) == 1
    sent = msgspec.json.decode(members[0], type=Delivery).notification
    assert (sent.type, sent.task_id, sent.attempt) == ("task_dead", "d1", 6)
    assert sent.analysis.category == "recoverable_network"

    again, _ = await scan(ar, runtime, NOW + 1_000)
    assert again.never_alerted.found == 0
    assert again.summary.startswith("examined 2 tasks; found 0 stuck in flight")


async def test_a_record_recoveryd_did_not_write_does_not_stop_the_scan(ar, runtime):
    keys = runtime.keys
    bad = msgspec.msgpack.encode(
        [3, 1, 0, "t", "c", "p", "1.0", "q", "p", "", "", "", 5]
    )
    await ar.hset(keys.tasks, "bad", bad)
    await aput_task(ar, keys, "lost", queue="q", state="scheduled")

    report, _ = await scan(ar, runtime)

    assert report.lost_schedule.items == ["lost"]
    assert await ar.hget(keys.tasks, "bad") == bad, "left for an operator"
