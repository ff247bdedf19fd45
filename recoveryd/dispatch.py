"""Re-dispatch: putting due retries back on the queues they came from.

One script pops a batch of due entries and pushes each task's payload onto
its queue, atomically, so two daemons on one Redis never dispatch the same
entry twice. Between batches the loop sleeps until the next due time, on a
timer in this process, and is woken when an earlier entry is scheduled.
Due entries of a paused task or category are held, not sent, and every task
sent is watched until it is judged recovered (see `recoveryd.pause` and
`recoveryd.history`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import anyio
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from recoveryd.connection import REDIS_AWAY, Link
from recoveryd.history import KEEP_MS
from recoveryd.keys import Keys
from recoveryd.metrics import METRICS
from recoveryd.scripts import Scripts
from recoveryd.wake import Alarm

__all__ = ["DispatchLoop", "DispatchResult"]

log = logging.getLogger(__name__)

# How long dispatch waits before trying again after Redis refused its script
# (a key of the wrong type): long enough not to flood the log.
STUCK_S = 10.0


class DispatchResult:
    """One script call: how many went out, and when the next one is due."""

    __slots__ = (
        "dispatched",
        "lateness_ms",
        "next_due_ms",
        "now_ms",
        "orphans",
        "popped",
        "unpushable",
    )

    def __init__(self, reply: list[bytes | int]) -> None:
        self.dispatched = int(reply[0])
        self.popped = int(reply[1])
        self.now_ms = int(reply[2])
        head = float(reply[3])
        self.next_due_ms = math.inf if head < 0 else head
        self.orphans = int(reply[4])
        self.unpushable = int(reply[5])
        self.lateness_ms = [int(ms) for ms in reply[6:]]


class DispatchLoop:
    """Dispatches due retries as they fall due, until cancelled."""

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        keys: Keys,
        alarm: Alarm,
        link: Link,
        *,
        batch: int,
        on_dead: Callable[[], None] = lambda: None,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self.keys = keys
        self._alarm = alarm
        self._link = link
        self.batch = batch
        # Called when the script moved tasks to the dead set: the script
        # cannot queue their notifications itself, the scan can.
        self._on_dead = on_dead
        self.dispatched = 0

    async def run(self) -> None:
        while True:
            try:
                result = await self.dispatch_due()
                self._link.ok("dispatch")
            except REDIS_AWAY as exc:
                await self._link.wait_out(exc, "dispatch")
                continue
            except ResponseError as exc:
                # A key of the wrong type: nothing was dispatched or lost.
                log.error("cannot dispatch: %s; trying again in %gs", exc, STUCK_S)
                await anyio.sleep(STUCK_S)
                continue
            if result.popped >= self.batch:
                continue
            await self._alarm.sleep_until(result.next_due_ms, result.now_ms)

    async def dispatch_due(self) -> DispatchResult:
        """Dispatch up to one batch of due entries."""
        reply = await self._scripts.dispatch(
            keys=[
                self.keys.retry,
                self.keys.stats,
                self.keys.paused,
                self.keys.watch,
                self.keys.dead,
                self.keys.tasks,
                self.keys.names,
            ],
            args=[
                self.batch,
                self.keys.history_prefix,
                KEEP_MS,
                self.keys.held_prefix,
            ],
        )
        result = DispatchResult(reply)
        if result.dispatched:
            self.dispatched += result.dispatched
            METRICS.count_dispatch(result.dispatched, result.lateness_ms)
            log.debug("dispatched %d due retries", result.dispatched)
        if result.orphans:
            log.warning(
                "%d due entries had no task record, or one recoveryd could not "
                "read, and were dropped",
                result.orphans,
            )
        if result.unpushable:
            log.warning(
                "%d due tasks name a queue that is not a list; moved to the dead set",
                result.unpushable,
            )
            self._on_dead()
        return result
