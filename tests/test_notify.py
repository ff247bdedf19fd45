"""Routing, grouping and the delivery loops, in process against a real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import msgspec
import pytest
from redis.asyncio import Redis

from recoveryd.categories import BUILTIN_CATEGORIES, BUSINESS, CONFIG, DATA
from recoveryd.config import InboxSettings
from recoveryd.connection import Link
from recoveryd.grouping import GroupState
from recoveryd.keys import Keys
from recoveryd.notification import ADMIN, DIGEST, SUMMARY, USER, Delivery, Notification
from recoveryd.notifiers import Channel, DeliveryError
from recoveryd.notifiers.inbox import InboxChannel
from recoveryd.notify import (
    DELIVERY_TAIL,
    DeliveryLoop,
    GroupFlusher,
    Limits,
    count_grouped,
    delivery_head,
    enqueue,
    route,
)
from recoveryd.records import User
from recoveryd.scripts import Scripts
from recoveryd.wake import Alarm
from recoveryd.writes import Writes
from tests.test_notifiers import notification

ALL = ("alert_log", "email", "sms", "inbox", "push")
WINDOW_MS = 60_000
T0 = 1_700_000_000_000


def test_data_failure_goes_to_the_admin_by_alert_log_and_email():
    routes = route(BUILTIN_CATEGORIES[DATA], user=None, enabled=ALL)
    assert routes == {ADMIN: ["alert_log", "email"]}


def test_config_failure_goes_to_the_admin_by_alert_log_and_sms():
    routes = route(BUILTIN_CATEGORIES[CONFIG], user=User(id="u"), enabled=ALL)
    assert routes == {ADMIN: ["alert_log", "sms"]}


def test_business_failure_goes_to_the_users_inbox_and_push():
    user = User(id="u-1", push="u1_topic")
    routes = route(BUILTIN_CATEGORIES[BUSINESS], user=user, enabled=ALL)
    assert routes == {USER: ["alert_log", "inbox", "push"]}


def test_business_failure_without_a_user_goes_to_the_admin():
    routes = route(BUILTIN_CATEGORIES[BUSINESS], user=None, enabled=ALL)
    assert routes == {ADMIN: ["alert_log", "email"]}


def test_push_without_a_usable_topic_falls_back_to_the_admin():
    user = User(id="u-1", push="https://elsewhere.test/x")
    routes = route(BUILTIN_CATEGORIES[BUSINESS], user=user, enabled=ALL)
    assert routes == {USER: ["alert_log", "inbox"], ADMIN: ["alert_log", "email"]}


def test_dead_task_goes_to_the_admin():
    user = User(id="u-1", push="t")
    routes = route(BUILTIN_CATEGORIES[BUSINESS], user=user, enabled=ALL, dead=True)
    assert routes == {ADMIN: ["alert_log", "email", "sms"]}


def test_a_channel_that_is_off_is_left_out_but_the_alert_log_stays():
    routes = route(BUILTIN_CATEGORIES[DATA], user=None, enabled=["alert_log"])
    assert routes == {ADMIN: ["alert_log"]}


@pytest.fixture
async def client(redis_server) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_server.url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def scripts(client) -> Scripts:
    loaded = Scripts(client)
    await loaded.load(client)
    return loaded


async def submit(
    client: Redis,
    scripts: Scripts,
    message: Notification,
    now_ms: int,
    channels: tuple[str, ...] = ("alert_log", "email"),
) -> None:
    writes = Writes()
    enqueue(writes, Keys(), message, channels, now_ms, window_ms=WINDOW_MS)
    assert await writes.commit(scripts)


def outbox(r, channel: str) -> list[Notification]:
    members = r.zrange(Keys().outbox(channel), 0, -1)
    return [msgspec.json.decode(m)["notification"] for m in members]


async def test_first_of_a_group_is_sent_and_the_rest_only_counted(client, scripts, r):
    for i in range(10):
        message = notification(task_id=f"t{i}", error=f"row {i}: bad sku")
        await submit(client, scripts, message, T0 + i)

    assert [n["task_id"] for n in outbox(r, "email")] == ["t0"]
    assert len(outbox(r, "alert_log")) == 1
    [group] = r.zrange(Keys().groups, 0, -1, withscores=True)
    assert group[1] == T0 + WINDOW_MS
    fields = r.hgetall(Keys().group(group[0].decode()))
    assert fields[b"pending"] == b"9"
    assert json.loads(fields[b"samples"]) == ["t1", "t2", "t3", "t4", "t5"]


@pytest.mark.parametrize("channel", ["alert_log", "email", "inbox", 'od"d'])
def test_a_delivery_joined_from_its_parts_is_the_delivery_encoded(channel):
    message = notification(error='line 1\n"quoted" \u2603')
    joined = delivery_head(channel) + msgspec.json.encode(message) + DELIVERY_TAIL
    assert joined == msgspec.json.encode(
        Delivery(channel=channel, notification=message)
    )


async def test_a_group_counted_later_in_the_same_commit_is_one_notification(
    client, scripts, r
):
    writes = Writes()
    first = notification(task_id="t0")
    enqueue(writes, Keys(), first, ("alert_log",), T0, window_ms=WINDOW_MS)
    assert first.group is not None
    for i in range(1, 4):
        count_grouped(writes, Keys(), first.group, f"t{i}", T0 + i)
    # A count for a group that no write opened is dropped, not half-made.
    count_grouped(writes, Keys(), "no-such-group", "t9", T0)
    assert await writes.commit(scripts)

    [sent] = outbox(r, "alert_log")
    assert sent["task_id"] == "t0"
    fields = r.hgetall(Keys().group(first.group))
    assert fields[b"pending"] == b"3"
    assert json.loads(fields[b"samples"]) == ["t1", "t2", "t3"]
    assert fields[b"last_id"] == b"t3"
    assert not r.exists(Keys().group("no-such-group"))


async def test_a_commit_opening_many_groups_wakes_each_loop_once(client, scripts, r):
    wake = r.pubsub()
    wake.subscribe(Keys().wake)
    assert wake.get_message(timeout=5)["type"] == "subscribe"
    writes = Writes()
    for i, task in enumerate(("a", "b", "c")):
        message = notification(task=task, task_id=f"t{i}")
        enqueue(
            writes, Keys(), message, ("alert_log", "email"), T0 + i, window_ms=WINDOW_MS
        )

    assert await writes.commit(scripts)
    r.publish(Keys().wake, "end")

    heard = []
    while (message := wake.get_message(timeout=5)) and message["data"] != b"end":
        heard.append(message["data"].decode())
    wake.close()
    assert sorted(heard) == [
        f"groups {T0 + WINDOW_MS}",
        f"outbox:alert_log {T0}",
        f"outbox:email {T0}",
    ]
    assert len(outbox(r, "email")) == 3


async def test_sample_ids_keep_any_character(client, scripts, r):
    odd = ["a\nb", "[x]", 'q"uote', "c d", "é/ü"]
    writes = Writes()
    first = notification(task_id="t0")
    enqueue(writes, Keys(), first, ("alert_log",), T0, window_ms=WINDOW_MS)
    assert first.group is not None
    for task_id in odd:
        count_grouped(writes, Keys(), first.group, task_id, T0)
    assert await writes.commit(scripts)

    fields = r.hgetall(Keys().group(first.group))
    assert GroupState.from_hash(fields).sample_ids == odd


async def test_a_group_an_older_daemon_opened_keeps_its_samples(client, scripts, r):
    key = Keys().group("old")
    r.hset(key, mapping={"template": "{}", "samples": "t1\nt2", "kept": 2})
    writes = Writes()
    count_grouped(writes, Keys(), "old", "t3", T0)
    assert await writes.commit(scripts)

    assert json.loads(r.hget(key, "samples")) == ["t1", "t2", "t3"]


def test_sample_ids_an_older_daemon_wrote_one_a_line_are_read():
    fields = {b"template": b"{}", b"samples": b"t1\nt2"}
    assert GroupState.from_hash(fields).sample_ids == ["t1", "t2"]


async def test_window_end_sends_one_summary_then_a_quiet_window_closes(
    client, scripts, r
):
    for i in range(10):
        await submit(client, scripts, notification(task_id=f"t{i}"), T0 + i)
    flusher = GroupFlusher(
        client, Keys(), Alarm("groups"), Link(), window_s=60, repeat_s=3600
    )

    _, next_ms = await flusher.flush_due(T0 + WINDOW_MS - 1)
    assert next_ms == T0 + WINDOW_MS and len(outbox(r, "email")) == 1

    await flusher.flush_due(T0 + WINDOW_MS)
    summary = outbox(r, "email")[-1]
    assert summary["type"] == SUMMARY
    assert summary["count"] == 9
    assert summary["task_id"] == "t9", "the summary names the last failure"
    assert summary["sample_ids"] == ["t1", "t2", "t3", "t4", "t5"]
    assert summary["title"] == "orders.import failed 9 more times: unrecoverable data"

    await flusher.flush_due(T0 + 2 * WINDOW_MS)
    assert r.zcard(Keys().groups) == 0
    assert not r.keys("recoveryd:group:*")
    assert len(outbox(r, "email")) == 2

    await submit(client, scripts, notification(task_id="again"), T0 + 3 * WINDOW_MS)
    assert outbox(r, "email")[-1]["task_id"] == "again"


async def test_a_failure_that_keeps_coming_is_summarised_once_per_repeat(
    client, scripts, r
):
    flusher = GroupFlusher(
        client, Keys(), Alarm("groups"), Link(), window_s=60, repeat_s=300
    )
    now_ms = T0
    for _ in range(12):  # twelve one-minute windows, each with failures
        for i in range(3):
            await submit(client, scripts, notification(task_id=f"t{i}"), now_ms + i)
        now_ms += WINDOW_MS
        await flusher.flush_due(now_ms)

    counts = [n.get("count", 1) for n in outbox(r, "email")]
    # The first at once, the first window's summary, then one per 5 minutes.
    assert counts == [1, 2, 15, 15]
    [group] = r.zrange(Keys().groups, 0, -1)
    pending = int(r.hget(Keys().group(group.decode()), "pending"))
    assert sum(counts) + pending == 36


async def test_daemons_racing_on_one_group_send_it_once(redis_server, scripts, r):
    clients = [Redis.from_url(redis_server.url) for _ in range(4)]

    async def report(redis: Redis, n: int) -> None:
        for i in range(25):
            await submit(redis, scripts, notification(task_id=f"d{n}-{i}"), T0 + i)

    async with anyio.create_task_group() as tg:
        for n, redis in enumerate(clients):
            tg.start_soon(report, redis, n)
    for redis in clients:
        await redis.aclose()

    assert len(outbox(r, "email")) == 1
    [group] = r.zrange(Keys().groups, 0, -1)
    assert r.hget(Keys().group(group.decode()), "pending") == b"99"


@dataclass
class Recorder:
    """A channel that keeps what it is sent, or fails, or never answers."""

    name: str
    fail: bool = False
    stall: bool = False
    sent: list[Notification] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def send(self, notification: Notification) -> None:
        if self.stall:
            await anyio.sleep_forever()
        if self.fail:
            raise DeliveryError(f"{self.name} is down")
        self.sent.append(notification)
        self.changed.set()
        self.changed = anyio.Event()

    async def aclose(self) -> None:
        return None

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(10):
            while len(self.sent) < count:
                await self.changed.wait()


def loop_for(
    client: Redis, scripts: Scripts, channel: Channel, **limits: object
) -> DeliveryLoop:
    return DeliveryLoop(
        client,
        scripts,
        Keys(),
        channel,
        Alarm(f"outbox:{channel.name}"),
        Link(),
        limits=Limits(**limits),  # type: ignore[arg-type]
        fallback=None,
    )


async def put(client: Redis, channel: str, messages: list[Notification]) -> None:
    async with client.pipeline(transaction=True) as pipe:
        for message in messages:
            enqueue(pipe, Keys(), message, [channel], 0)
        await pipe.execute()


async def drained(client: Redis, channel: str) -> None:
    """Wait until the loop has settled everything it sent (a Redis condition)."""
    with anyio.fail_after(10):
        while await client.zcard(Keys().outbox(channel)):
            await anyio.sleep(0.01)


async def test_rate_limit_folds_the_overflow_into_one_digest(client, scripts, r):
    email = Recorder("email")
    await put(client, "email", [notification(task_id=f"t{i}") for i in range(10)])

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop_for(client, scripts, email, max_per_hour=3).run)
        await email.wait_for(3)
        await drained(client, "email")
        tg.cancel_scope.cancel()

    singles = [n for n in email.sent if n.type != DIGEST]
    [digest] = [n for n in email.sent if n.type == DIGEST]
    assert len(singles) == 2
    assert digest.count == 8
    assert digest.title == "8 failures held back by the email rate limit"
    assert r.zcard(Keys().outbox("email")) == 0
    assert r.zcard(Keys().sent("email")) == 3


async def test_with_the_limit_reached_deliveries_wait_for_a_free_place(
    client, scripts, r
):
    email = Recorder("email")
    await put(client, "email", [notification(task_id="first")])
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop_for(client, scripts, email, max_per_hour=1).run)
        await email.wait_for(1)
        await drained(client, "email")
        tg.cancel_scope.cancel()
    await put(client, "email", [notification(task_id="second")])

    keys = Keys()
    reply = await scripts.claim(
        keys=[keys.outbox("email"), keys.sent("email")],
        args=[50, 120_000, 1, 3_600_000, 5000, "probe"],
    )
    now_ms, next_ms, room, *claimed = reply
    assert room == 0 and not claimed
    assert 3_599_000 < int(next_ms) - now_ms <= 3_600_000
    assert [n.task_id for n in email.sent] == ["first"]
    assert r.zcard(keys.outbox("email")) == 1


async def until_undeliverable(
    client: Redis, scripts: Scripts, channel: Recorder, max_attempts: int
) -> Notification:
    """Run ``channel``'s loop on one delivery until it is given up; the notice."""
    alert_log = Recorder("alert_log")
    await put(client, channel.name, [notification(task_id=f"t-{channel.name}")])
    loop = DeliveryLoop(
        client,
        scripts,
        Keys(),
        channel,
        Alarm(f"outbox:{channel.name}"),
        Link(),
        limits=Limits(max_attempts=max_attempts, base_delay_s=0.05, max_delay_s=0.1),
        fallback=alert_log,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop.run)
        await alert_log.wait_for(1)
        await drained(client, channel.name)
        tg.cancel_scope.cancel()
    [notice] = alert_log.sent
    return notice


async def test_failed_delivery_is_retried_then_recorded_as_undeliverable(
    client, scripts, r
):
    notice = await until_undeliverable(
        client, scripts, Recorder("sms", fail=True), max_attempts=3
    )
    assert notice.type == "undeliverable"
    assert "3 tries" in notice.description and "sms is down" in notice.description
    assert r.zcard(Keys().outbox("sms")) == 0


async def test_a_stalled_channel_delays_no_other(client, scripts):
    email = Recorder("email", stall=True)
    push = Recorder("push")
    message = notification(audience=USER, user=User(id="u", push="t"))
    await put(client, "email", [message])
    await put(client, "push", [message])
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop_for(client, scripts, email, timeout_s=30).run)
        tg.start_soon(loop_for(client, scripts, push).run)
        with anyio.fail_after(2):
            await push.wait_for(1)
        tg.cancel_scope.cancel()
    assert not email.sent


class Buggy(Recorder):
    """A channel with a bug: it raises what no channel should."""

    async def send(self, notification: Notification) -> None:
        raise ValueError("Header values may not contain linefeed")


async def test_a_channel_bug_ends_as_undeliverable_not_a_stuck_loop(client, scripts, r):
    notice = await until_undeliverable(client, scripts, Buggy("email"), max_attempts=2)
    assert notice.type == "undeliverable" and "linefeed" in notice.description
    assert r.zcard(Keys().outbox("email")) == 0


async def test_a_batched_channel_settles_each_delivery_on_its_own(client, scripts, r):
    keys = Keys()
    inbox = InboxChannel(client, keys, InboxSettings())
    r.set(keys.inbox("broken"), "not a list")
    users = ["a", "broken", "b"]
    await put(
        client,
        "inbox",
        [notification(audience=USER, user=User(id=u), task_id=u) for u in users],
    )
    loop = loop_for(client, scripts, inbox, base_delay_s=3600)

    def outbox() -> list[dict]:
        return [msgspec.json.decode(m) for m in r.zrange(keys.outbox("inbox"), 0, -1)]

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop.run)
        with anyio.fail_after(10):
            # Settled: the two sent are gone, the third waits for its next try.
            while [d.get("tries") for d in outbox()] != [1]:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()

    assert r.llen(keys.inbox("a")) == r.llen(keys.inbox("b")) == 1
    [left] = outbox()
    assert left["notification"]["task_id"] == "broken"
    assert "WRONGTYPE" in left["last_error"]
