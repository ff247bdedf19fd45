"""Intake against a real Redis: nothing lost, nothing handled twice."""

from __future__ import annotations

import dataclasses
import json
import threading

import anyio

from recoveryd import intake as intake_module
from recoveryd.config import parse_config
from recoveryd.connection import Link
from recoveryd.intake import Intake
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts
from recoveryd.wake import Wakeup
from tests.conftest import task_of, wait_for

SLOW_RETRIES = """
[intake]
batch = 16

[categories.recoverable_network]
base_delay = "1h"
"""


def in_process(ar, keys, runtime: Runtime, consumer: str) -> Intake:
    """An intake run step by step in the test, as ``consumer``."""
    wake = Wakeup(ar, keys.wake, Link())
    return Intake(
        ar, Scripts(ar), consumer, lambda: runtime, Link(), wake.alarm("retry"), set
    )


def burst(client, keys, count: int) -> dict[str, str]:
    """Push ``count`` records: mostly network, some data failures, some junk."""
    expected: dict[str, str] = {}
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        task_id = f"job-{i}"
        if i % 25 == 0:
            pipe.lpush(keys.failures, f"broken record {i}")
            expected[task_id] = "invalid"
            continue
        error = "ECONNREFUSED 10.0.0.7:5432" if i % 10 else "malformed JSON in payload"
        pipe.lpush(
            keys.failures,
            json.dumps(
                {"task": "t", "id": task_id, "queue": "q", "payload": i, "error": error}
            ),
        )
        expected[task_id] = "scheduled" if i % 10 else "dead"
        if i % 50 == 49:
            pipe.execute()
    pipe.execute()
    return expected


def test_kill_9_mid_burst_loses_and_repeats_nothing(r, keys, start_daemon):
    first = start_daemon(SLOW_RETRIES)
    pusher = threading.Thread(target=burst, args=(r, keys, 1000))
    pusher.start()
    wait_for(
        lambda: int(r.hget(keys.stats, "received") or 0) >= 100,
        what="the daemon to be mid-burst",
    )
    first.kill()
    pusher.join()
    assert int(r.hget(keys.stats, "received") or 0) < 1000

    start_daemon(SLOW_RETRIES)
    counted = lambda: (  # noqa: E731
        int(r.hget(keys.stats, "received") or 0) + r.llen(keys.invalid)
    )
    wait_for(lambda: counted() >= 1000, what="every record to be handled")

    assert counted() == 1000, "a record was handled twice"
    assert r.llen(keys.invalid) == 40
    assert r.zcard(keys.retry) == 880
    assert r.zcard(keys.dead) == 80
    attempts = {
        int(task_of(r, keys, f"job-{i}").get(b"attempt") or 0)
        for i in range(1000)
        if i % 25
    }
    assert attempts == {1}, "some record was counted as a second failure"
    assert r.llen(keys.failures) == 0
    assert not any(r.llen(k) for k in r.scan_iter(match=keys.inflight("*")))


def test_oversized_record_is_parked_not_processed(r, keys, start_daemon):
    start_daemon('[intake]\nmax_record_size = "4KiB"\n')
    big = json.dumps({"task": "t", "error": "x" * 10_000})
    r.lpush(keys.failures, big)
    wait_for(lambda: r.llen(keys.invalid), what="the big record to be parked")
    parked = json.loads(r.lindex(keys.invalid, 0))
    assert "over the 4096 limit" in parked["reason"]
    assert parked["size"] == len(big)
    assert parked["truncated"] is True


def test_enormous_error_text_is_classified_and_kept_small(r, keys, start_daemon):
    start_daemon('[intake]\nmax_record_size = "8MiB"\n')
    error = "Traceback (most recent call last):\n" + "  frame\n" * 600_000
    error += "ConnectionResetError: [Errno 104] Connection reset by peer"
    r.lpush(
        keys.failures,
        json.dumps({"task": "t", "id": "huge", "queue": "q", "error": error}),
    )
    wait_for(lambda: task_of(r, keys, "huge").get(b"category"), what="classification")
    assert task_of(r, keys, "huge").get(b"category") == b"recoverable_network"
    assert len(task_of(r, keys, "huge").get(b"error")) <= 1000


def test_a_queue_naming_recoveryds_own_keys_is_parked(r, keys, start_daemon):
    start_daemon()
    for queue in (keys.failures, keys.retry):
        r.lpush(
            keys.failures,
            json.dumps({"task": "t", "queue": queue, "error": "connection refused"}),
        )
    wait_for(lambda: r.llen(keys.invalid) == 2, what="both parked")
    reasons = [json.loads(p)["reason"] for p in r.lrange(keys.invalid, 0, -1)]
    assert all("one of recoveryd's own keys" in reason for reason in reasons)
    assert r.zcard(keys.retry) == 0


class _PoisonedClassifier:
    """Classifies as usual, except that one text trips a bug."""

    def __init__(self, real):
        self.real = real

    def classify(self, record):
        if "poison" in record.error:
            raise KeyError("a bug")
        return self.real.classify(record)


async def test_a_record_that_trips_a_bug_is_parked_and_the_rest_flow(
    ar, r, keys, runtime
):
    runtime = dataclasses.replace(
        runtime, classifier=_PoisonedClassifier(runtime.classifier)
    )
    intake = in_process(ar, keys, runtime, "test:1:x")
    for text in ("connection refused", "poison pill", "connection reset"):
        r.lpush(keys.failures, json.dumps({"task": "t", "queue": "q", "error": text}))

    assert await intake.step(block_s=0) == 3

    assert r.zcard(keys.retry) == 2
    [parked] = [json.loads(p) for p in r.lrange(keys.invalid, 0, -1)]
    assert "could not handle it: KeyError" in parked["reason"]
    assert "poison pill" in parked["raw"]
    assert r.llen(keys.inflight("test:1:x")) == 0


async def test_a_record_failing_midway_leaves_its_task_as_it_was(
    ar, r, keys, runtime, monkeypatch
):
    real = intake_module._task_fields

    def failing(record, *args):
        if "poison" in record.error:
            raise KeyError("a bug")
        return real(record, *args)

    monkeypatch.setattr(intake_module, "_task_fields", failing)
    intake = in_process(ar, keys, runtime, "test:1:m")
    for text in ("connection refused", "poison pill", "connection reset"):
        record = {"id": "p", "task": "t", "queue": "q", "error": text}
        r.lpush(keys.failures, json.dumps(record))

    assert await intake.step(block_s=0) == 3

    task = task_of(r, keys, "p")
    assert task[b"attempt"] == b"2", "the parked record is no attempt"
    history = json.loads(task[b"history"])
    assert [h["error"] for h in history] == ["connection refused", "connection reset"]
    stats = r.hgetall(keys.stats)
    assert (stats[b"received"], stats[b"invalid"]) == (b"2", b"1")


def test_a_huge_record_that_is_not_all_text_is_kept_as_json():
    raw = (
        b'{"task": "t", "extra": "\xff", "user": {"id": "u-1"}, "error": "'
        + b"x" * 200_000
        + b'"}'
    )

    kept = json.loads(intake_module._keepable_record(raw))

    assert kept["extra"] == "\ufffd"
    assert kept["user"] == {"id": "u-1"}, "the scan can still tell the user"
    assert len(kept["error"]) < 20_000


async def test_a_flood_of_records_tripping_a_bug_logs_one_traceback(
    ar, r, keys, runtime, caplog
):
    runtime = dataclasses.replace(
        runtime, classifier=_PoisonedClassifier(runtime.classifier)
    )
    intake = in_process(ar, keys, runtime, "test:1:f")
    for _ in range(50):
        r.lpush(keys.failures, json.dumps({"task": "t", "error": "poison"}))

    assert await intake.step(block_s=0) == 50

    assert r.llen(keys.invalid) == 50
    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert len(tracebacks) == 1


async def test_a_batch_stops_at_its_byte_budget(ar, r, keys, tmp_path):
    runtime = Runtime.from_config(
        parse_config('[intake]\nbatch = 100\nbatch_bytes = "1MiB"\n')
    )
    intake = in_process(ar, keys, runtime, "test:1:y")
    big = "x" * 300_000
    for _ in range(10):
        r.lpush(keys.failures, json.dumps({"task": "t", "queue": "q", "error": big}))

    assert await intake.step(block_s=0) == 4
    assert await intake.step(block_s=0) == 4
    assert await intake.step(block_s=0) == 2
    assert int(r.hget(keys.stats, "received")) == 10


class _Reaping:
    """A classifier during whose work another daemon takes the batch back.

    The records go back to the failures list, or with ``to`` straight on to
    another list, as if another daemon took them again at once.
    """

    def __init__(self, real, r, keys, consumer, to=None):
        self.real, self.r, self.keys, self.consumer = real, r, keys, consumer
        self.to = to or keys.failures

    def classify(self, record):
        self.act()
        return self.real.classify(record)

    def act(self):
        inflight = self.keys.inflight(self.consumer)
        while self.r.lmove(inflight, self.to, "LEFT", "RIGHT"):
            pass


class _OnFourth(_Reaping):
    """Acts only while the fourth record, the second batch's first, is classified."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen = 0

    def classify(self, record):
        self.seen += 1
        if self.seen == 4:
            self.act()
        return self.real.classify(record)


async def test_a_batch_taken_back_meanwhile_is_not_committed(ar, r, keys, runtime):
    consumer, other = "test:1:z", "test:2:z"
    reaping = _Reaping(runtime.classifier, r, keys, consumer, keys.inflight(other))
    runtime = dataclasses.replace(runtime, classifier=reaping)
    intake = in_process(ar, keys, runtime, consumer)
    r.lpush(keys.failures, json.dumps({"task": "t", "queue": "q", "error": "timeout"}))

    assert await intake.step(block_s=0) == 1

    assert r.llen(keys.inflight(other)) == 1, "the other daemon has the record"
    assert r.llen(keys.inflight(consumer)) == 0
    assert r.zcard(keys.retry) == 0
    assert r.hget(keys.stats, "received") is None


async def test_a_write_redis_refuses_is_logged_and_the_rest_commit(
    ar, r, keys, runtime, caplog
):
    r.set(keys.dead, "not a sorted set")
    intake = in_process(ar, keys, runtime, "test:1:w")
    for task_id, text in (("a", "malformed JSON in payload"), ("b", "timed out")):
        record = {"id": task_id, "task": "t", "queue": "q", "error": text}
        r.lpush(keys.failures, json.dumps(record))

    assert await intake.step(block_s=0) == 2

    assert r.zrange(keys.retry, 0, -1) == [b"b"]
    assert task_of(r, keys, "a").get(b"state") == b"notified"
    assert r.llen(keys.inflight("test:1:w")) == 0
    [refused] = [m for m in caplog.messages if "Redis refused" in m]
    assert refused.startswith("Redis refused 1 writes; the first: ZADD recoveryd:dead")
    assert "WRONGTYPE" in refused


async def test_take_begins_with_the_oldest_records_in_flight(ar, r):
    take = Scripts(ar).take
    r.lpush("failures", *[f"r{i}" for i in range(10)])  # r0 is the oldest
    r.lpush("inflight", "left1", "left0")  # left from a lost reply, oldest last

    now, length, *batch = await take(keys=["failures", "inflight"], args=[6, 1 << 20])

    assert now > 0
    assert batch == [b"left1", b"left0", b"r0", b"r1", b"r2", b"r3"]
    assert length == 6
    assert r.lrange("inflight", 0, -1)[::-1] == batch
    assert r.lrange("failures", 0, -1) == [f"r{i}".encode() for i in range(9, 3, -1)]


async def test_take_of_a_long_in_flight_list_is_one_batch_of_its_oldest(ar, r):
    take = Scripts(ar).take
    r.lpush("inflight", *[f"left{i}" for i in range(10)])  # left0 the oldest
    r.lpush("failures", "new")

    _, length, *batch = await take(keys=["failures", "inflight"], args=[3, 1 << 20])

    assert batch == [b"left0", b"left1", b"left2"]
    assert length == 10
    assert r.llen("failures") == 1


async def test_take_of_new_records_only_leaves_those_in_flight_out(ar, r):
    take = Scripts(ar).take
    r.lpush("inflight", "older")
    r.lpush("failures", "a", "b")

    _, length, *batch = await take(keys=["failures", "inflight"], args=[5, 1 << 20, 0])

    assert batch == [b"a", b"b"]
    assert length == 3


async def test_take_of_nothing_more_moves_nothing(ar, r):
    take = Scripts(ar).take
    r.lpush("failures", "a", "b")

    reply = await take(keys=["failures", "inflight"], args=[0, 1 << 20, 0])

    assert reply[1:] == [0]
    assert r.llen("failures") == 2


async def test_take_stops_once_the_byte_budget_is_spent(ar, r):
    take = Scripts(ar).take
    r.lpush("failures", "x" * 10, "y" * 10, "z" * 10)

    _, _, *batch = await take(keys=["failures", "inflight"], args=[10, 15])

    assert batch == [b"x" * 10, b"y" * 10]
    assert r.lrange("failures", 0, -1) == [b"z" * 10]


class _ReapingLater(_OnFourth):
    """Takes the records back while the batch after the first is classified."""


def small_batches(ar, r, keys, consumer: str, classifier, count: int) -> Intake:
    """An intake of 3-record batches with ``classifier``, and ``count`` failures."""
    runtime = Runtime.from_config(parse_config("[intake]\nbatch = 3\n"))
    runtime = dataclasses.replace(
        runtime, classifier=classifier(runtime.classifier, r, keys, consumer)
    )
    intake = in_process(ar, keys, runtime, consumer)
    for i in range(count):
        record = {"id": f"t{i}", "task": "t", "queue": "q", "error": "timed out"}
        r.lpush(keys.failures, json.dumps(record))
    return intake


async def test_records_taken_back_with_two_batches_in_flight_are_handled_once(
    ar, r, keys
):
    consumer = "test:1:v"
    intake = small_batches(ar, r, keys, consumer, _ReapingLater, 6)

    steps = 0
    while await intake.step(block_s=0):
        steps += 1

    assert steps > 2, "the records taken back were taken again"
    assert sorted(r.zrange(keys.retry, 0, -1)) == [f"t{i}".encode() for i in range(6)]
    assert int(r.hget(keys.stats, "received")) == 6, "each is handled once"
    assert r.llen(keys.inflight(consumer)) == 0
    assert r.llen(keys.failures) == 0


async def test_a_stop_under_steady_load_takes_effect_between_batches(ar, r, keys):
    runtime = Runtime.from_config(parse_config("[intake]\nbatch = 10\n"))
    intake = in_process(ar, keys, runtime, "test:1:u")
    record = json.dumps({"task": "t", "queue": "q", "error": "timed out"})
    r.lpush(keys.failures, *[record] * 2000)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(intake.run)
            while int(r.hget(keys.stats, "received") or 0) < 50:
                await anyio.sleep(0.001)
            tg.cancel_scope.cancel()

    received = int(r.hget(keys.stats, "received"))
    assert received < 2000
    in_flight = r.llen(keys.inflight("test:1:u"))
    assert in_flight <= 20, "at most the two batches taken ahead are left in flight"
    assert received + in_flight + r.llen(keys.failures) == 2000


class _LostReply(_OnFourth):
    """Moves two records in flight unseen, as a take whose reply was lost."""

    def act(self):
        inflight = self.keys.inflight(self.consumer)
        for _ in range(2):
            self.r.lmove(self.keys.failures, inflight, "RIGHT", "LEFT")


async def test_records_moved_by_a_lost_reply_are_handled_in_batches(ar, r, keys):
    consumer = "test:1:s"
    intake = small_batches(ar, r, keys, consumer, _LostReply, 12)

    sizes = []
    while taken := await intake.step(block_s=0):
        sizes.append(taken)

    assert max(sizes) <= 3
    assert sorted(r.zrange(keys.retry, 0, -1)) == sorted(
        f"t{i}".encode() for i in range(12)
    )
    assert int(r.hget(keys.stats, "received")) == 12, "each is handled once"
    assert r.llen(keys.inflight(consumer)) == 0


async def test_a_task_failing_in_overlapping_batches_sees_each_failure(ar, r, keys):
    runtime = Runtime.from_config(parse_config("[intake]\nbatch = 2\n"))
    intake = in_process(ar, keys, runtime, "test:1:o")
    # Batches of two: a b | a c | a d | d a. The second and third are decided
    # while the one before is committed, from what that one left the task.
    for task_id in "abacadda":
        record = {"id": task_id, "task": "t", "queue": "q", "error": "timed out"}
        r.lpush(keys.failures, json.dumps(record))

    steps = []
    while taken := await intake.step(block_s=0):
        steps.append(taken)

    assert steps == [2, 2, 2, 2]
    assert task_of(r, keys, "a").get(b"attempt") == b"4"
    history = json.loads(task_of(r, keys, "a").get(b"history"))
    assert [entry["attempt"] for entry in history] == [1, 2, 3, 4]
    assert task_of(r, keys, "d").get(b"attempt") == b"2"
    assert r.llen(keys.inflight("test:1:o")) == 0


async def test_a_tasks_fields_are_stored_exactly(ar, r, keys, runtime):
    intake = in_process(ar, keys, runtime, "test:1:e")
    huge = 123_456_789_012_345_678_901  # past what a Lua number holds exactly
    record = {"task": "t", "queue": "q", "error": "timed out"}
    r.lpush(keys.failures, json.dumps(record | {"id": "x", "attempt": huge}))
    r.lpush(keys.failures, json.dumps(record | {"id": "y", "attempt": 2}))

    assert await intake.step(block_s=0) == 2

    dead, scheduled = task_of(r, keys, "x"), task_of(r, keys, "y")
    assert dead[b"state"] == b"dead", "a huge attempt is past every limit"
    assert dead[b"attempt"] == str(huge).encode()
    assert scheduled[b"state"] == b"scheduled"
    assert scheduled[b"attempt"] == b"2"
    for task in (dead, scheduled):
        confidence = task[b"confidence"].decode()
        assert confidence == str(float(confidence)), "written as Python writes it"
