"""Sleeping until the next due time, and being woken for an earlier one.

Loops that wait for due entries keep their timer here, in the process:
Redis checks blocking timeouts only about every 100 ms, which is no timer
for due times. Whoever schedules an entry publishes its due time on one
Pub/Sub channel; every daemon's `Wakeup` pokes the matching alarm, so an
entry scheduled by another daemon or by the CLI is never slept through.
"""

from __future__ import annotations

import logging
import math

import anyio
from redis.asyncio import Redis

from recoveryd.connection import REDIS_AWAY, Link

__all__ = ["Alarm", "Wakeup"]

log = logging.getLogger(__name__)

# The longest a loop sleeps without being woken. Only a safety net for a
# wake message lost while Pub/Sub was reconnecting; not a polling tick.
MAX_SLEEP_S = 60.0


class Alarm:
    """A timer set to a due time (Redis ms), which an earlier poke cuts short."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._due_ms = math.inf
        self._event = anyio.Event()

    def poke(self, due_ms: float = -math.inf) -> None:
        """Wake the sleeper if ``due_ms`` is earlier than what it waits for."""
        if due_ms < self._due_ms:
            self._event.set()

    async def sleep_until(self, due_ms: float, now_ms: float) -> None:
        """Sleep until ``due_ms`` on the clock that gave ``now_ms``, or a poke."""
        self._due_ms = due_ms
        delay_s = min(max(due_ms - now_ms, 0.0) / 1000.0, MAX_SLEEP_S)
        try:
            with anyio.move_on_after(delay_s):
                await self._event.wait()
        finally:
            self._due_ms = math.inf
            self._event = anyio.Event()


class Wakeup:
    """Listens on the wake channel and pokes the alarm each message names.

    A message is ``"<alarm name> <due ms>"``.
    """

    def __init__(self, redis: Redis, channel: str, link: Link) -> None:
        self._redis = redis
        self._channel = channel
        self._link = link
        self.alarms: dict[str, Alarm] = {}

    def alarm(self, name: str) -> Alarm:
        if name not in self.alarms:
            self.alarms[name] = Alarm(name)
        return self.alarms[name]

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except REDIS_AWAY as exc:
                await self._link.wait_out(exc, "wake channel")

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            self._link.ok("wake channel")
            # Anything scheduled while we were not listening is found now.
            for alarm in self.alarms.values():
                alarm.poke()
            async for message in pubsub.listen():
                self._dispatch(message.get("data"))
        finally:
            await pubsub.aclose()

    def _dispatch(self, data: object) -> None:
        if not isinstance(data, bytes):
            return
        name, _, due = data.decode("utf-8", "replace").partition(" ")
        alarm = self.alarms.get(name)
        if alarm is None:
            return
        try:
            alarm.poke(float(due))
        except ValueError:
            alarm.poke()
