"""Manual recovery, pauses and silences against a real Redis, and their commands."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from recoveryd.config import parse_config
from recoveryd.connection import Link, time_ms_sync
from recoveryd.dispatch import DispatchLoop
from recoveryd.intake import Intake
from recoveryd.manual import retry_dead, retry_task, select_dead
from recoveryd.notification import Analysis, Notification
from recoveryd.pause import (
    PAUSE_KINDS,
    SILENCE_KINDS,
    PauseError,
    Silence,
    Silences,
    parse_matcher,
    pause,
    resume,
    silence,
)
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts
from recoveryd.wake import Alarm
from tests.conftest import put_task, put_tasks, task_of, write_config

NETWORK = "recoverable_network"


def dispatcher(ar, keys, batch: int = 1000) -> DispatchLoop:
    return DispatchLoop(ar, Scripts(ar), keys, Alarm("retry"), Link(), batch=batch)


def task_fields(task_id, *, queue="q:work", category=NETWORK, task="t"):
    return {"queue": queue, "payload": task_id, "category": category, "task": task}


def add_task(client, keys, task_id, **fields):
    put_task(client, keys, task_id, **task_fields(task_id, **fields))


def backlog(r, keys, count: int, due_ms: int) -> None:
    put_tasks(r, keys, {f"b{i}": task_fields(f"b{i}") for i in range(count)})
    scores = {f"b{i}": due_ms + i % 1000 for i in range(count)}
    for start in range(0, count, 20_000):
        part = dict(list(scores.items())[start : start + 20_000])
        r.zadd(keys.retry, part)


async def test_a_manual_retry_overtakes_a_backlog_of_100000(r, ar, keys):
    now_ms = time_ms_sync(r)
    backlog(r, keys, 100_000, now_ms - 60_000)
    add_task(r, keys, "urgent", queue="q:urgent")
    r.zadd(keys.dead, {"urgent": now_ms - 3_600_000})
    loop = dispatcher(ar, keys)

    # The backlog is being dispatched when the operator steps in.
    first = await loop.dispatch_due()
    assert first.dispatched == 1000
    assert retry_task(r, keys, "urgent").message == "was dead; now due"
    after = await loop.dispatch_due()

    assert after.dispatched == 1000
    assert r.lrange("q:urgent", 0, -1) == [b"urgent"]
    assert r.zcard(keys.retry) == 100_000 - 2000 + 1


def died(r, keys, task_id: str, at_ms: int, **fields) -> None:
    put_task(r, keys, task_id, **task_fields(task_id, **fields), state="dead")
    r.zadd(keys.dead, {task_id: at_ms})


def test_dead_tasks_are_chosen_by_category_task_and_time(r, keys):
    died(r, keys, "a", 1_000, category=NETWORK, task="payments.charge")
    died(r, keys, "b", 2_000, category="unrecoverable_data", task="payments.refund")
    died(r, keys, "c", 3_000, category=NETWORK, task="orders.sync")
    died(r, keys, "d", 4_000, category=NETWORK, task="payments.charge")

    assert select_dead(r, keys) == ["a", "b", "c", "d"]
    assert select_dead(r, keys, category=NETWORK) == ["a", "c", "d"]
    assert select_dead(r, keys, task="payments.*") == ["a", "b", "d"]
    assert select_dead(r, keys, category=NETWORK, task="pay*", since_ms=2_000) == ["d"]


class FakeTime:
    """A monotonic clock that sleeping moves, and nothing else."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_retry_dead_is_paced_at_the_rate_asked(r, keys):
    for i in range(250):
        died(r, keys, f"d{i}", 1_000 + i)
    time = FakeTime()
    seen: list[tuple[int, int]] = []

    count = retry_dead(
        r,
        keys,
        rate=100,
        progress=lambda done, total: seen.append((done, total)),
        clock=time.clock,
        sleep=time.sleep,
    )

    assert count == 250
    assert r.zcard(keys.dead) == 0
    assert r.zcard(keys.retry) == 250
    # 10 a chunk at 100/s: the last chunk starts 2.4 s after the first.
    assert time.now - 100.0 == pytest.approx(2.4)
    assert seen[0] == (0, 250) and seen[-1] == (250, 250)
    assert len(seen) == 26


async def test_a_paused_category_is_held_then_released_paced(r, ar, keys):
    now_ms = time_ms_sync(r)
    for i in range(5):
        add_task(r, keys, f"n{i}")
        r.zadd(keys.retry, {f"n{i}": now_ms - 1_000 + i})
    add_task(r, keys, "other", category="recoverable_system", queue="q:other")
    r.zadd(keys.retry, {"other": now_ms - 1_000})
    assert pause(r, keys, f"category:{NETWORK}", "payments outage")

    result = await dispatcher(ar, keys).dispatch_due()

    assert result.dispatched == 1
    assert r.llen("q:work") == 0 and r.llen("q:other") == 1
    held = keys.held(f"category:{NETWORK}")
    assert r.zcard(held) == 5 and r.zcard(keys.retry) == 0
    assert task_of(r, keys, "n0").get(b"state") == b"held"
    assert retry_task(r, keys, "n0").message == (
        f"is held by a pause; `recoveryd resume category:{NETWORK}` releases it"
    )

    released = resume(r, keys, f"category:{NETWORK}", rate=10)

    assert (released.released, released.dropped) == (5, 0)
    scores = [s for _, s in r.zrange(keys.retry, 0, -1, withscores=True)]
    assert [round(b - a) for a, b in pairwise(scores)] == [100] * 4
    assert r.zrange(keys.retry, 0, -1) == [f"n{i}".encode() for i in range(5)]
    assert r.zcard(held) == 0
    assert task_of(r, keys, "n0").get(b"state") == b"scheduled"
    assert not r.hexists(keys.paused, f"category:{NETWORK}")


async def test_a_paused_task_is_held_but_its_category_flows(r, ar, keys):
    now_ms = time_ms_sync(r)
    add_task(r, keys, "x1", task="payments.charge")
    add_task(r, keys, "x2", task="orders.sync")
    r.zadd(keys.retry, {"x1": now_ms - 10, "x2": now_ms - 10})
    pause(r, keys, "task:payments.charge")

    await dispatcher(ar, keys).dispatch_due()

    assert r.lrange("q:work", 0, -1) == [b"x2"]
    assert r.zrange(keys.held("task:payments.charge"), 0, -1) == [b"x1"]
    with pytest.raises(PauseError, match="not paused"):
        resume(r, keys, "task:nothing", rate=10)


def test_matchers_are_checked():
    assert parse_matcher(NETWORK, PAUSE_KINDS, [NETWORK]) == f"category:{NETWORK}"
    assert parse_matcher("task:a.b", PAUSE_KINDS) == "task:a.b"
    assert parse_matcher("pattern:net.*", SILENCE_KINDS) == "pattern:net.*"
    for bad in ("nonsense", "queue:x", "task:", "task:a*"):
        with pytest.raises(PauseError):
            parse_matcher(bad, PAUSE_KINDS, [NETWORK])


def notice(task: str, category: str, pattern: str = "p") -> Notification:
    return Notification(
        id="n",
        type="task_dead",
        severity="critical",
        audience="admin",
        title="x",
        description="x",
        task=task,
        task_id="i",
        error_message="e",
        analysis=Analysis(
            category=category, recommended_action="a", confidence=1.0, pattern=pattern
        ),
        created_at="2023-11-14T22:13:20.000Z",
    )


def test_a_silence_keeps_only_the_alert_log():
    silences = Silences(
        [
            Silence(matcher="task:payments.*", until_ms=2, since_ms=0),
            Silence(matcher="pattern:network.timeout", until_ms=2, since_ms=0),
        ]
    )
    channels = ["alert_log", "email", "sms"]
    assert silences.quiet(notice("payments.charge", NETWORK), channels) == ["alert_log"]
    assert silences.quiet(notice("orders.sync", NETWORK), channels) == channels
    timed_out = notice("orders.sync", NETWORK, "network.timeout")
    assert silences.match(timed_out) == "pattern:network.timeout"


def test_an_expired_silence_is_not_in_force():
    raw = {
        b"category:x": json.dumps({"until_ms": 1_000, "since_ms": 0}).encode(),
        b"category:y": json.dumps({"until_ms": 3_000, "since_ms": 0}).encode(),
        b"category:z": b"not json",
    }
    assert Silences.from_hash(raw, now_ms=2_000).matchers == {"category:y"}


def feeds_silenced(r, ar, keys, group_window: str) -> Intake:
    """An intake with email on and feeds.* silenced, grouping in this window."""
    config = parse_config(f'[notify]\ngroup_window = "{group_window}"\n')
    runtime = Runtime.from_config(config)
    silence(r, keys, "task:feeds.*", for_s=3600, reason="known bad feed")
    return Intake(
        ar,
        Scripts(ar),
        "me",
        lambda: runtime,
        Link(),
        Alarm("retry"),
        lambda: {"alert_log", "email"},
    )


async def test_intake_sends_a_silenced_notification_to_the_alert_log_only(r, ar, keys):
    intake = feeds_silenced(r, ar, keys, "0s")
    for task in ("feeds.import", "orders.import"):
        record = {"task": task, "id": task, "queue": "q", "error": "malformed JSON"}
        r.lpush(keys.failures, json.dumps(record))

    await intake.step(block_s=0)

    assert task_of(r, keys, "feeds.import").get(b"category") == b"unrecoverable_data"
    emails = [json.loads(m) for m in r.zrange(keys.outbox("email"), 0, -1)]
    assert [e["notification"]["task"] for e in emails] == ["orders.import"]
    alerts = [json.loads(m) for m in r.zrange(keys.outbox("alert_log"), 0, -1)]
    assert {a["notification"]["task"] for a in alerts} == {
        "feeds.import",
        "orders.import",
    }


async def test_a_batchs_repeats_of_one_failure_are_one_notification(r, ar, keys):
    intake = feeds_silenced(r, ar, keys, "1h")
    for task in ("feeds.import", "orders.import"):
        for i in range(4):
            error = f"malformed JSON at row {i * 7}"
            record = {"task": task, "id": f"{task}-{i}", "queue": "q", "error": error}
            r.lpush(keys.failures, json.dumps(record))

    assert await intake.step(block_s=0) == 8

    emails = [json.loads(m) for m in r.zrange(keys.outbox("email"), 0, -1)]
    assert [e["notification"]["task_id"] for e in emails] == ["orders.import-0"]
    alerts = [json.loads(m) for m in r.zrange(keys.outbox("alert_log"), 0, -1)]
    assert sorted(a["notification"]["task_id"] for a in alerts) == [
        "feeds.import-0",
        "orders.import-0",
    ]
    for first in alerts:
        group = keys.group(first["notification"]["group"])
        assert r.hget(group, "pending") == b"3"
    [minute] = r.keys(keys.history("*"))
    assert r.hget(minute, "silenced") == b"4", "each silenced failure is counted"


# The commands, as an operator runs them.


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recoveryd", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def config(tmp_path, redis_server) -> Path:
    return write_config(tmp_path / "c.toml", redis_server.url)


def test_submit_ok_pushes_a_success_report(config, r, keys):
    result = run(config, "submit", "--ok", "inv-1042", "--task", "invoices.send")
    assert result.returncode == 0, result.stderr
    assert json.loads(r.lindex(keys.failures, 0)) == {
        "id": "inv-1042",
        "ok": True,
        "task": "invoices.send",
    }


def test_pause_resume_and_silence_commands(config, r, keys):
    assert run(config, "pause", NETWORK, "--reason", "outage").returncode == 0
    silenced = run(config, "silence", "task:payments.*", "--for", "2h")
    assert silenced.returncode == 0, silenced.stderr

    status = run(config, "status", "--json")
    shown = json.loads(status.stdout)
    assert [p["matcher"] for p in shown["paused"]] == [f"category:{NETWORK}"]
    assert [s["matcher"] for s in shown["silences"]] == ["task:payments.*"]
    assert shown["base_delays"][NETWORK] == {"configured_s": 30.0, "current_s": 30.0}

    resumed = run(config, "resume", f"category:{NETWORK}", "--rate", "20")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"resumed category:{NETWORK}: 0 held")
    assert r.hlen(keys.paused) == 0


def test_mistakes_are_one_line_and_exit_2(config):
    cases = [
        (("pause", "queue:x"), "recoveryd pause: 'queue' is not one of category, task"),
        (("silence", "task:x"), "recoveryd silence: give --for DURATION"),
        (("retry", "x", "--rate", "5"), "recoveryd retry: --rate goes with --dead"),
        (("resume", "task:none"), "recoveryd resume: task:none is not paused"),
    ]
    for args, start in cases:
        result = run(config, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(start), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_scan_and_analyze_print_a_summary_and_the_report(config, tmp_path):
    for command, kind in [
        ("scan", "failure_processing"),
        ("analyze", "failure_analysis"),
    ]:
        result = run(config, command)
        assert result.returncode == 0, result.stderr
        summary, where = result.stdout.splitlines()
        assert summary
        path = Path(where.removeprefix("report: "))
        assert path.parent == tmp_path / "state" / "reports" / kind
        assert json.loads(path.read_text())["type"] == kind
