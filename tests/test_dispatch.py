"""Re-dispatch against a real Redis: exactly once, on time, in order of due."""

from __future__ import annotations

from tests.conftest import put_task, put_tasks, task_of, wait_for


def schedule_directly(client, keys, count: int, due_in_ms: int) -> None:
    seconds, micros = client.time()
    due_ms = seconds * 1000 + micros // 1000 + due_in_ms
    ids = [f"due-{i}" for i in range(count)]
    put_tasks(client, keys, {i: {"queue": "q:work", "payload": i} for i in ids})
    for start in range(0, count, 5000):
        client.zadd(keys.retry, dict.fromkeys(ids[start : start + 5000], due_ms))
    client.publish(keys.wake, f"retry {due_ms}")


def test_two_daemons_dispatch_each_entry_exactly_once(r, keys, start_daemon):
    config = "[retry]\ndispatch_batch = 100\n"
    start_daemon(config, name="a")
    start_daemon(config, name="b")
    schedule_directly(r, keys, 10_000, due_in_ms=300)

    wait_for(lambda: r.zcard(keys.retry) == 0, what="every entry to be dispatched")
    payloads = r.lrange("q:work", 0, -1)
    assert len(payloads) == 10_000
    assert len(set(payloads)) == 10_000
    assert int(r.hget(keys.stats, "dispatched")) == 10_000


def test_entry_scheduled_by_another_client_wakes_a_sleeping_daemon(
    r, keys, start_daemon
):
    daemon = start_daemon()
    # The daemon sleeps with nothing due; an entry due soon must still go
    # out without waiting for any timer the daemon had set before.
    schedule_directly(r, keys, 1, due_in_ms=50)
    wait_for(lambda: r.llen("q:work") == 1, timeout_s=5, what="dispatch")
    assert daemon.process.poll() is None


def test_a_queue_that_is_not_a_list_does_not_block_the_rest(r, keys, start_daemon):
    daemon = start_daemon()
    r.zadd("not-a-list", {"x": 1})
    put_task(r, keys, "bad", queue="not-a-list", payload="p")
    r.zadd(keys.retry, {"bad": 1})
    schedule_directly(r, keys, 50, due_in_ms=0)

    wait_for(lambda: r.llen("q:work") == 50, what="the good entries")
    assert r.zscore(keys.dead, "bad") is not None
    assert b"not a list" in task_of(r, keys, "bad").get(b"reason")
    assert r.zcard("not-a-list") == 1
    wait_for(lambda: "queue that is not a list" in daemon.log(), what="the warning")
    # The admin hears at once, not at the next periodic scan.
    alerts = daemon.config.parent / "state" / "admin_alerts.log"
    wait_for(
        lambda: alerts.exists() and '"task_id":"bad"' in alerts.read_text(),
        what="the dead task's alert",
    )
