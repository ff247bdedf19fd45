"""Notification delivery: routing, grouping, the durable outbox and its loops.

A notification is written to the outbox in the same step that commits the
failure's outcome (see `recoveryd.writes`), one entry per channel, so it
can never be lost between the two; with grouping on, that step sends the
first of a group and only counts the rest (see `recoveryd.grouping`),
and `GroupFlusher` sends the summaries when windows end. Each channel has
its own outbox and its own loop: a stalled or failing channel delays only
itself. A delivery is claimed with a lease; a daemon killed mid-send leaves
it to be claimed again. A failed delivery is retried with backoff and, after
the configured attempts, is recorded as undeliverable in the admin alert
log. A channel's rate limit (`max_per_hour`) caps what it sends; what is due
beyond the cap is folded into one digest notification.
"""

from __future__ import annotations

import functools
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import anyio
import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from recoveryd.categories import CategorySettings
from recoveryd.config import Config, NotifySettings
from recoveryd.connection import REDIS_AWAY, Link, time_ms
from recoveryd.grouping import SAMPLE_IDS, GroupState, fingerprint, plan
from recoveryd.keys import Keys
from recoveryd.notification import (
    ADMIN,
    USER,
    Analysis,
    Delivery,
    Notification,
    digest_of,
    iso_utc,
    summary_of,
)
from recoveryd.notifiers import BatchChannel, Channel, DeliveryError
from recoveryd.notifiers.alert_log import AlertLog
from recoveryd.notifiers.email import EmailChannel
from recoveryd.notifiers.inbox import InboxChannel
from recoveryd.notifiers.push import PushChannel, valid_target
from recoveryd.notifiers.secrets import missing_secrets
from recoveryd.notifiers.sms import SmsChannel
from recoveryd.pause import KEPT_CHANNEL, Silences
from recoveryd.records import User
from recoveryd.scripts import Scripts
from recoveryd.wake import Alarm
from recoveryd.writes import Writes

__all__ = [
    "DELIVERY_TAIL",
    "DeliveryLoop",
    "GroupFlusher",
    "Limits",
    "count_grouped",
    "delivery_head",
    "enqueue",
    "limits_for",
    "open_channels",
    "route",
]

log = logging.getLogger(__name__)

ALERT_LOG = "alert_log"
ADMIN_CHANNELS = ("email", "sms")
USER_CHANNELS = ("inbox", "push")
AUDIENCES = {ADMIN: ("alert_log", *ADMIN_CHANNELS), USER: ("alert_log", *USER_CHANNELS)}
DEAD_CHANNELS = ("alert_log", "email", "sms")
# With no user to tell, the admin hears instead, on the nearest channel.
ADMIN_STAND_IN = {"inbox": "alert_log", "push": "email"}

LEASE_MS = 120_000
BATCH = 50
# Deliveries sent at once by one channel's loop: enough to drain a burst,
# few enough not to open a hundred SMTP connections.
CONCURRENCY = 8
# Most deliveries folded into one digest per claim.
DIGEST_MAX = 5000
RATE_WINDOW_MS = 3_600_000
GROUP_BATCH = 100
# A group is re-read this many times when intake keeps changing it under
# the flusher's feet; the next wake-up tries again.
FLUSH_TRIES = 20

# Sends notifications; one result each, None when sent.
_Sender = Callable[[Sequence[Notification]], Awaitable[list[DeliveryError | None]]]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Delivery)
_notification = msgspec.json.Decoder(Notification)


def route(
    category: CategorySettings,
    *,
    user: User | None,
    enabled: Iterable[str],
    dead: bool = False,
) -> dict[str, list[str]]:
    """Channels per audience for one failure: ``{"admin": [...], "user": [...]}``.

    User channels go to the record's user when it names the target each
    needs (``id`` for the inbox, ``push`` for push); otherwise the admin
    hears instead (inbox → alert log, push → email). The alert log of each
    audience is always written.
    """
    wanted = DEAD_CHANNELS if dead else _expand(category.notify)
    on = set(enabled) | {ALERT_LOG}
    routes: dict[str, list[str]] = {}
    for channel in wanted:
        audience = USER if channel in USER_CHANNELS else ADMIN
        if audience == USER and not _reaches(user, channel):
            audience, channel = ADMIN, ADMIN_STAND_IN[channel]
        if channel in on:
            targets = routes.setdefault(audience, [ALERT_LOG])
            if channel not in targets:
                targets.append(channel)
    if not routes:
        routes[ADMIN] = [ALERT_LOG]
    return routes


def _expand(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        out.extend(AUDIENCES.get(name, (name,)))
    return out


def _reaches(user: User | None, channel: str) -> bool:
    if user is None:
        return False
    if channel == "inbox":
        return user.id is not None and str(user.id) != ""
    return valid_target(user.push)


def enqueue(
    out: Pipeline | Writes,
    keys: Keys,
    notification: Notification,
    channels: Sequence[str],
    now_ms: int,
    *,
    window_ms: int = 0,
    group: str | None = None,
) -> None:
    """Add one delivery per channel to the outbox, with ``out``'s other writes.

    Given a window, the notification is grouped: it is sent only if it is
    the first of its group within the window. Grouping is decided in Redis,
    so it needs a `Writes` batch. ``group``: the notification's
    fingerprint, if it is known already.
    """
    if not channels:
        return
    if window_ms > 0:
        if not isinstance(out, Writes):
            raise TypeError("a grouped notification is written with a Writes batch")
        _enqueue_grouped(out, keys, notification, channels, now_ms, window_ms, group)
        return
    for channel in channels:
        member = _encoder.encode(Delivery(channel=channel, notification=notification))
        out.zadd(keys.outbox(channel), {member: now_ms})
        out.publish(keys.wake, f"outbox:{channel} {now_ms}")


def _enqueue_grouped(
    writes: Writes,
    keys: Keys,
    notification: Notification,
    channels: Sequence[str],
    now_ms: int,
    window_ms: int,
    group: str | None,
) -> None:
    group = group or fingerprint(notification)
    notification.group = group
    writes.group(
        [keys.group(group), keys.groups, keys.wake],
        now_ms=now_ms,
        window_ms=window_ms,
        group_id=group,
        task_id=notification.task_id,
        samples=SAMPLE_IDS,
        template=_encoder.encode(notification),
        deliveries=[
            (channel, keys.outbox(channel), delivery_head(channel))
            for channel in channels
        ],
        tail=DELIVERY_TAIL,
    )


def count_grouped(
    writes: Writes, keys: Keys, group: str, task_id: str, now_ms: int
) -> None:
    """Count a failure in ``group``, which an earlier write of ``writes`` named."""
    writes.count(keys.group(group), now_ms=now_ms, task_id=task_id, samples=SAMPLE_IDS)


# A delivery encoded is a head naming its channel, the notification, and
# this tail (its defaults). A grouped notification is sent once, and COMMIT
# joins the parts for each channel; tests check they equal the whole.
DELIVERY_TAIL = b',"tries":0,"last_error":null}'


@functools.cache
def delivery_head(channel: str) -> bytes:
    """What comes before the notification in ``channel``'s encoded delivery."""
    return b'{"channel":' + _encoder.encode(channel) + b',"notification":'


def open_channels(config: Config, redis: Redis, keys: Keys) -> dict[str, Channel]:
    """The channels the config turns on; the alert logs always."""
    notify = config.notify
    admin = notify.admin
    channels: list[Channel] = [AlertLog(config.state_dir)]
    if notify.inbox.enabled:
        channels.append(InboxChannel(redis, keys, notify.inbox))
    if notify.email is not None:
        channels.append(EmailChannel(notify.email, admin.email))
    if notify.sms is not None:
        channels.append(SmsChannel(notify.sms, admin.phone))
    if notify.push is not None:
        channels.append(PushChannel(notify.push))
    for problem in missing_secrets(config):
        log.error("%s; its channel fails until the secret is there", problem)
    return {channel.name: channel for channel in channels}


@dataclass(frozen=True, slots=True)
class Limits:
    """How one channel's loop treats its deliveries."""

    timeout_s: float = 30.0
    max_per_hour: int = 0
    max_attempts: int = 10
    base_delay_s: float = 5.0
    max_delay_s: float = 3600.0


def limits_for(settings: NotifySettings, channel: str) -> Limits:
    """The timeout, rate limit and retry policy of ``channel`` from the config."""
    section = {"email": settings.email, "sms": settings.sms, "push": settings.push}
    configured = section.get(channel)
    return Limits(
        timeout_s=configured.timeout_s if configured else 10.0,
        max_per_hour=configured.max_per_hour if configured else 0,
        max_attempts=settings.max_attempts,
        base_delay_s=settings.base_delay_s,
        max_delay_s=settings.max_delay_s,
    )


class GroupFlusher:
    """Ends grouping windows as they fall due: summaries out, quiet groups closed.

    Any daemon may end any window: each group is read and rewritten under
    WATCH, so a failure counted by intake in between makes the rewrite fail
    and start over instead of losing the count.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        alarm: Alarm,
        link: Link,
        *,
        window_s: float,
        repeat_s: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._alarm = alarm
        self._link = link
        self._window_ms = round(window_s * 1000)
        self._repeat_ms = round(repeat_s * 1000)
        self.summaries = 0

    async def run(self) -> None:
        while True:
            try:
                now_ms, next_ms = await self.flush_due()
                self._link.ok("groups")
            except REDIS_AWAY as exc:
                await self._link.wait_out(exc, "groups")
                continue
            await self._alarm.sleep_until(next_ms, now_ms)

    async def flush_due(self, now_ms: int | None = None) -> tuple[int, float]:
        """End every window due by ``now_ms`` (Redis's clock when not given).

        Returns the time used and when the next window ends (inf: none open).
        """
        if now_ms is None:
            now_ms = await time_ms(self._redis)
        due = await self._redis.zrangebyscore(
            self._keys.groups, "-inf", now_ms, start=0, num=GROUP_BATCH
        )
        for group in due:
            await self._flush(group.decode(), now_ms)
        if len(due) == GROUP_BATCH:
            return now_ms, now_ms
        head = await self._redis.zrange(self._keys.groups, 0, 0, withscores=True)
        return now_ms, (float(head[0][1]) if head else math.inf)

    async def _flush(self, group: str, now_ms: int) -> None:
        key = self._keys.group(group)
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(FLUSH_TRIES):
                try:
                    await pipe.watch(key)
                    fields = await pipe.hgetall(key)
                    pipe.multi()
                    self._end_window(pipe, group, fields, now_ms)
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        log.debug("group %s kept changing; its window ends at the next wake", group)

    def _end_window(
        self, pipe: Pipeline, group: str, fields: dict[bytes, bytes], now_ms: int
    ) -> None:
        keys = self._keys
        if b"template" not in fields:
            pipe.zrem(keys.groups, group)
            return
        state = GroupState.from_hash(fields)
        if state.window_end_ms > now_ms:
            # Another daemon ended this window already; keep the index right.
            pipe.zadd(keys.groups, {group: state.window_end_ms})
            return

        decision = plan(state, now_ms, self._window_ms, self._repeat_ms)
        if decision.summarise:
            self._summarise(pipe, group, state, now_ms)
        if decision.close:
            pipe.delete(keys.group(group))
            pipe.zrem(keys.groups, group)
            return
        pipe.hset(
            keys.group(group), mapping={"window_end": decision.next_end_ms, "seen": 0}
        )
        pipe.zadd(keys.groups, {group: decision.next_end_ms})

    def _summarise(
        self, pipe: Pipeline, group: str, state: GroupState, now_ms: int
    ) -> None:
        first = _notification.decode(state.template)
        summary = summary_of(
            first,
            count=state.pending,
            sample_ids=state.sample_ids,
            since_ms=state.since_ms,
            last_ms=state.last_ms,
            now_ms=now_ms,
            last_id=state.last_id,
        )
        enqueue(pipe, self._keys, summary, state.channels, now_ms)
        pipe.hset(
            self._keys.group(group),
            mapping={
                "pending": 0,
                "kept": 0,
                "samples": "",
                "last_sent": now_ms,
                "summaries": state.summaries + 1,
            },
        )
        self.summaries += 1
        log.info(
            "summary of %d more failures of task %s (group %s)",
            state.pending,
            first.task,
            group,
        )


class DeliveryLoop:
    """Delivers one channel's outbox, as deliveries fall due."""

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        keys: Keys,
        channel: Channel,
        alarm: Alarm,
        link: Link,
        *,
        limits: Limits,
        fallback: Channel | None = None,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._key = keys.outbox(channel.name)
        self._sent_key = keys.sent(channel.name)
        self._silences_key = keys.silences
        self._channel = channel
        self._batched = channel if isinstance(channel, BatchChannel) else None
        self._alarm = alarm
        self._link = link
        self._limits = limits
        self._fallback = fallback
        self._who = f"outbox:{channel.name}"
        self._failing = False
        self._capped = False
        self._slots = anyio.CapacityLimiter(CONCURRENCY)
        # Claimed and not yet settled: handed back when the loop stops.
        self._held: set[bytes] = set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    now_ms, next_ms, room, members = await self._claim()
                    self._link.ok(self._who)
                except REDIS_AWAY as exc:
                    await self._link.wait_out(exc, self._who)
                    continue
                if members:
                    members = await self._drop_silenced(members, now_ms)
                    await self._deliver_claimed(members, room, now_ms)
                    continue
                await self._alarm.sleep_until(next_ms, now_ms)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._release()

    async def _release(self) -> None:
        """Make the deliveries this loop holds due again, for the next daemon.

        A daemon killed outright cannot; its deliveries wait out the lease.
        """
        if not self._held:
            return
        held, self._held = self._held, set()
        try:
            await self._redis.zadd(self._key, dict.fromkeys(held, 0), xx=True)
        except (RedisError, OSError) as exc:
            log.warning(
                "%d %s deliveries wait out their lease: %s",
                len(held),
                self._channel.name,
                exc,
            )

    async def _claim(self) -> tuple[int, float, int, list[bytes]]:
        reply = await self._scripts.claim(
            keys=[self._key, self._sent_key],
            args=[
                BATCH,
                LEASE_MS,
                self._limits.max_per_hour,
                RATE_WINDOW_MS,
                DIGEST_MAX,
                uuid.uuid4().hex,
            ],
        )
        now_ms, head, room = int(reply[0]), float(reply[1]), int(reply[2])
        members = list(reply[3:])
        self._held.update(members)
        return now_ms, (math.inf if head < 0 else head), room, members

    async def _deliver_claimed(
        self, members: list[bytes], room: int, now_ms: int
    ) -> None:
        if 0 < room < len(members):
            # More is due than the rate limit lets out: all but one place
            # go to single deliveries, the last to a digest of the rest.
            single, held = members[: room - 1], members[room - 1 :]
            self._say_capped(len(held))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._deliver_all, single, now_ms)
                tg.start_soon(self._digest, held, now_ms)
            return
        if room < 0 or room > len(members):
            self._capped = False
        await self._deliver_all(members, now_ms)

    async def _drop_silenced(self, members: list[bytes], now_ms: int) -> list[bytes]:
        """Settle unsent the deliveries a silence now covers; the rest go on.

        Checked here too, not only when the notification was queued, so a
        silence set during an incident also quiets what was already waiting.
        The alert log is never silenced.
        """
        if self._channel.name == KEPT_CHANNEL:
            return members
        pending = self._redis.hgetall(self._silences_key)
        raw = await cast(Awaitable[dict[bytes, bytes]], pending)
        silences = Silences.from_hash(raw, now_ms)
        if not silences:
            return members
        keep: list[bytes] = []
        quiet: list[bytes] = []
        for member in members:
            delivery = await self._decode(member)
            if delivery is not None and silences.match(delivery.notification):
                quiet.append(member)
            elif delivery is not None:
                keep.append(member)
        if quiet:
            log.info("%d %s deliveries silenced", len(quiet), self._channel.name)
            await self._settle(quiet, None)
        return keep

    def _say_capped(self, held: int) -> None:
        if not self._capped:
            self._capped = True
            log.warning(
                "channel %s reached its limit of %d an hour; %d held for a digest",
                self._channel.name,
                self._limits.max_per_hour,
                held,
            )

    async def _deliver_all(self, members: list[bytes], now_ms: int) -> None:
        delivered: list[bytes] = []
        if self._batched is not None:
            await self._send(members, now_ms, delivered, self._send_at_once)
        else:
            async with anyio.create_task_group() as tg:
                for member in members:
                    tg.start_soon(self._send, [member], now_ms, delivered)
        if delivered:
            # One round trip for the batch: under a burst this was one
            # transaction per notification.
            await self._settle(delivered, None)

    async def _deliver(self, member: bytes, now_ms: int) -> None:
        delivered: list[bytes] = []
        await self._send([member], now_ms, delivered)
        if delivered:
            await self._settle(delivered, None)

    async def _send(
        self,
        members: list[bytes],
        now_ms: int,
        delivered: list[bytes],
        send: _Sender | None = None,
    ) -> None:
        """Send deliveries, one at a time unless ``send`` takes them at once.

        Each one sent joins ``delivered``, to be settled; each one that was
        not is a failed try.
        """
        batch = [(m, d) for m in members if (d := await self._decode(m)) is not None]
        if not batch:
            return
        notifications = [delivery.notification for _, delivery in batch]
        results: list[BaseException | None]
        try:
            results = list(await (send or self._send_one)(notifications))
        except (DeliveryError, TimeoutError, OSError) as exc:
            results = [exc] * len(batch)
        except Exception as exc:
            # A bug in the channel, or a notification it cannot render: a
            # failed try like any other, so it ends as undeliverable instead
            # of failing the loop, and the deliveries behind it, for ever.
            log.exception(
                "channel %s could not send %s", self._channel.name, batch[0][0][:80]
            )
            results = [exc] * len(batch)
        sent = False
        for (member, delivery), error in zip(batch, results, strict=True):
            if error is None:
                delivered.append(member)
                sent = True
            else:
                await self._failed(member, delivery, error, now_ms)
        if sent and self._failing:
            self._failing = False
            log.info("channel %s is delivering again", self._channel.name)

    async def _send_one(
        self, notifications: Sequence[Notification]
    ) -> list[DeliveryError | None]:
        [notification] = notifications
        async with self._slots:
            with anyio.fail_after(self._limits.timeout_s):
                await self._channel.send(notification)
        return [None]

    async def _send_at_once(
        self, notifications: Sequence[Notification]
    ) -> list[DeliveryError | None]:
        assert self._batched is not None
        with anyio.fail_after(self._limits.timeout_s):
            return await self._batched.send_many(notifications)

    async def _decode(self, member: bytes) -> Delivery | None:
        try:
            return _decoder.decode(member)
        except msgspec.DecodeError:
            log.error("dropping an outbox entry that does not decode: %r", member[:200])
            await self._settle([member], None)
            return None

    async def _digest(self, members: list[bytes], now_ms: int) -> None:
        """Fold held deliveries for one recipient into one digest and send it.

        Deliveries for other recipients (push to other users) stay in the
        outbox, due now, for the next free place.
        """
        held: dict[str, list[tuple[bytes, Delivery]]] = {}
        for member in members:
            delivery = await self._decode(member)
            if delivery is not None:
                recipient = _recipient(delivery.notification)
                held.setdefault(recipient, []).append((member, delivery))
        if not held:
            return
        first, *others = held.values()
        digest = Delivery(
            channel=self._channel.name,
            notification=digest_of(
                [d.notification for _, d in first],
                channel=self._channel.name,
                now_ms=now_ms,
            ),
        )
        member = _encoder.encode(digest)
        later = [m for group in others for m, _ in group]
        await self._replace([m for m, _ in first], later, member, now_ms)
        await self._deliver(member, now_ms)

    async def _replace(
        self, folded: list[bytes], later: list[bytes], digest: bytes, now_ms: int
    ) -> None:
        """Swap folded deliveries for their digest, itself claimed by this loop."""
        while True:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(self._key, *folded)
                    pipe.zadd(self._key, {digest: now_ms + LEASE_MS})
                    if later:
                        pipe.zadd(self._key, dict.fromkeys(later, now_ms))
                    await pipe.execute()
                self._held.difference_update([*folded, *later])
                self._held.add(digest)
                return
            except REDIS_AWAY as exc:
                await self._link.wait_out(exc, self._who)

    async def _failed(
        self, member: bytes, delivery: Delivery, exc: BaseException, now_ms: int
    ) -> None:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self._limits.timeout_s:g}s"
        if not self._failing:
            self._failing = True
            log.warning("channel %s is failing: %s", self._channel.name, reason)
        delivery.tries += 1
        delivery.last_error = reason[:500]
        if delivery.tries >= self._limits.max_attempts:
            await self._undeliverable(delivery, now_ms)
            await self._settle([member], None)
            return
        delay_s = min(
            self._limits.base_delay_s * 2 ** (delivery.tries - 1),
            self._limits.max_delay_s,
        )
        again = (_encoder.encode(delivery), now_ms + round(delay_s * 1000))
        await self._settle([member], again)

    async def _settle(
        self, members: list[bytes], again: tuple[bytes, int] | None
    ) -> None:
        """Remove claimed deliveries, putting back a next try if there is one."""
        while True:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(self._key, *members)
                    if again is not None:
                        pipe.zadd(self._key, {again[0]: again[1]})
                    await pipe.execute()
                self._held.difference_update(members)
                return
            except REDIS_AWAY as exc:
                await self._link.wait_out(exc, self._who)

    async def _undeliverable(self, delivery: Delivery, now_ms: int) -> None:
        original = delivery.notification
        log.error(
            "notification %s for task %s could not be sent by %s after %d tries: %s",
            original.id,
            original.task_id,
            delivery.channel,
            delivery.tries,
            delivery.last_error,
        )
        if self._fallback is None or self._fallback is self._channel:
            return
        notice = undeliverable_notice(delivery, now_ms)
        try:
            await self._fallback.send(notice)
        except DeliveryError as exc:
            log.error("cannot record the undeliverable notification: %s", exc)


def _recipient(notification: Notification) -> str:
    user = notification.user
    if notification.audience != USER or user is None:
        return notification.audience
    return f"{notification.audience}:{user.id}:{user.push}"


def undeliverable_notice(delivery: Delivery, now_ms: int) -> Notification:
    """An admin notice that a notification could not be sent on its channel."""
    original = delivery.notification
    return Notification(
        id=uuid.uuid4().hex,
        type="undeliverable",
        severity="error",
        audience=ADMIN,
        title=f"{delivery.channel} notification for {original.task} was not delivered",
        description=(
            f"{delivery.tries} tries to send notification {original.id} by "
            f"{delivery.channel} failed; the last said: {delivery.last_error}"
        ),
        task=original.task,
        task_id=original.task_id,
        error_message=original.error_message,
        analysis=Analysis(
            category=original.analysis.category,
            recommended_action=f"check the {delivery.channel} channel's settings",
            confidence=original.analysis.confidence,
            pattern=original.analysis.pattern,
        ),
        created_at=iso_utc(now_ms),
        attempt=original.attempt,
        queue=original.queue,
        meta={"undelivered": msgspec.to_builtins(original)},
    )
