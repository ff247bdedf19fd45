"""Notification delivery: routing, the durable outbox, and the delivery loops.

A notification is written to the outbox in the same Redis transaction that
commits the failure's outcome, one entry per channel, so it can never be
lost between the two. Each channel has its own outbox and its own loop: a
stalled or failing channel delays only itself. A delivery is claimed with a
lease; a daemon killed mid-send leaves it to be claimed again. A failed
delivery is retried with backoff and, after the configured attempts, is
recorded as undeliverable in the admin alert log.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Sequence

import anyio
import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from recoveryd.categories import CategorySettings
from recoveryd.connection import Link
from recoveryd.keys import Keys
from recoveryd.notification import (
    ADMIN,
    USER,
    Analysis,
    Delivery,
    Notification,
    iso_utc,
)
from recoveryd.notifiers import Channel, DeliveryError
from recoveryd.scripts import Scripts
from recoveryd.wake import Alarm

__all__ = ["DeliveryLoop", "enqueue", "route"]

log = logging.getLogger(__name__)

ALERT_LOG = "alert_log"
ADMIN_CHANNELS = ("email", "sms")
USER_CHANNELS = ("inbox", "push")
AUDIENCES = {ADMIN: ("alert_log", *ADMIN_CHANNELS), USER: ("alert_log", *USER_CHANNELS)}
DEAD_CHANNELS = ("alert_log", "email", "sms")

LEASE_MS = 120_000
BATCH = 50
RETRY_BASE_S = 5.0
RETRY_CAP_S = 3600.0

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Delivery)


def route(
    category: CategorySettings,
    *,
    has_user: bool,
    enabled: Iterable[str],
    dead: bool = False,
) -> dict[str, list[str]]:
    """Channels per audience for one failure: ``{"admin": [...], "user": [...]}``.

    User channels go to the record's user; with no user named, the admin
    hears instead. The alert log of each audience is always written.
    """
    wanted = DEAD_CHANNELS if dead else _expand(category.notify)
    on = set(enabled) | {ALERT_LOG}
    routes: dict[str, list[str]] = {}
    for channel in wanted:
        audience = USER if channel in USER_CHANNELS else ADMIN
        if audience == USER and not has_user:
            audience, channel = ADMIN, ALERT_LOG
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


def enqueue(
    pipe: Pipeline,
    keys: Keys,
    notification: Notification,
    channels: Sequence[str],
    now_ms: int,
) -> None:
    """Add one delivery per channel to the outbox, inside ``pipe``'s transaction."""
    for channel in channels:
        member = _encoder.encode(Delivery(channel=channel, notification=notification))
        pipe.zadd(keys.outbox(channel), {member: now_ms})
        pipe.publish(keys.wake, f"outbox:{channel} {now_ms}")


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
        max_attempts: int,
        timeout_s: float,
        fallback: Channel | None = None,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._key = keys.outbox(channel.name)
        self._channel = channel
        self._alarm = alarm
        self._link = link
        self._max_attempts = max_attempts
        self._timeout_s = timeout_s
        self._fallback = fallback
        self._who = f"outbox:{channel.name}"
        self._failing = False

    async def run(self) -> None:
        while True:
            try:
                now_ms, next_ms, members = await self._claim()
                self._link.ok(self._who)
            except (RedisError, OSError) as exc:
                await self._link.wait_out(exc, self._who)
                continue
            if members:
                await self._deliver_all(members, now_ms)
                continue
            await self._alarm.sleep_until(next_ms, now_ms)

    async def _claim(self) -> tuple[int, float, list[bytes]]:
        reply = await self._scripts.claim(keys=[self._key], args=[BATCH, LEASE_MS])
        now_ms, head = int(reply[0]), float(reply[1])
        return now_ms, (math.inf if head < 0 else head), list(reply[2:])

    async def _deliver_all(self, members: list[bytes], now_ms: int) -> None:
        async with anyio.create_task_group() as tg:
            for member in members:
                tg.start_soon(self._deliver, member, now_ms)

    async def _deliver(self, member: bytes, now_ms: int) -> None:
        try:
            delivery = _decoder.decode(member)
        except msgspec.DecodeError:
            log.error("dropping an outbox entry that does not decode: %r", member[:200])
            await self._settle(member, None)
            return
        try:
            with anyio.fail_after(self._timeout_s):
                await self._channel.send(delivery.notification)
        except (DeliveryError, TimeoutError, OSError) as exc:
            await self._failed(member, delivery, exc, now_ms)
            return
        if self._failing:
            self._failing = False
            log.info("channel %s is delivering again", self._channel.name)
        await self._settle(member, None)

    async def _failed(
        self, member: bytes, delivery: Delivery, exc: BaseException, now_ms: int
    ) -> None:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self._timeout_s:g}s"
        if not self._failing:
            self._failing = True
            log.warning("channel %s is failing: %s", self._channel.name, reason)
        delivery.tries += 1
        delivery.last_error = reason[:500]
        if delivery.tries >= self._max_attempts:
            await self._undeliverable(delivery, now_ms)
            await self._settle(member, None)
            return
        delay_ms = round(
            min(RETRY_BASE_S * 2 ** (delivery.tries - 1), RETRY_CAP_S) * 1000
        )
        await self._settle(member, (_encoder.encode(delivery), now_ms + delay_ms))

    async def _settle(self, member: bytes, again: tuple[bytes, int] | None) -> None:
        """Remove a claimed delivery, putting back its next try if there is one."""
        while True:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(self._key, member)
                    if again is not None:
                        pipe.zadd(self._key, {again[0]: again[1]})
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
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
