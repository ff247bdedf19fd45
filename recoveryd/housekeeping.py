"""Housekeeping: keeping the dead set and the invalid list within bounds,
and forgetting recovered tasks once their time is up.

What is evicted is counted in the stats hash (``dead_evicted``,
``invalid_evicted``), shown by `recoveryd status`, and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from recoveryd.connection import REDIS_AWAY, Link, time_ms
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts

__all__ = ["Housekeeping"]

log = logging.getLogger(__name__)

EVERY_S = 60.0
# Recovered tasks forgotten in one script call.
FORGET_CHUNK = 1000


class Housekeeping:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        runtime: Callable[[], Runtime],
        link: Link,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._runtime = runtime
        self._link = link

    async def run(self) -> None:
        while True:
            try:
                await self.trim()
                await self.forget_done()
                self._link.ok("housekeeping")
            except REDIS_AWAY as exc:
                await self._link.wait_out(exc, "housekeeping")
                continue
            except ResponseError as exc:
                # A key of the wrong type: said each round, nothing evicted.
                log.error("housekeeping cannot run: %s", exc)
            await anyio.sleep(EVERY_S)

    async def trim(self) -> tuple[int, int, int]:
        """Trim the dead set by age and count, and the invalid list by count."""
        runtime = self._runtime()
        keys, config = runtime.keys, runtime.config
        now_ms = await time_ms(self._redis)
        oldest_ms = now_ms - round(config.dead.max_age_s * 1000)
        by_age, by_count = await self._scripts.trim_dead(
            keys=[keys.dead, keys.stats, keys.tasks],
            args=[oldest_ms, config.dead.max_count],
        )
        invalid = int(
            await self._scripts.trim_invalid(
                keys=[keys.invalid, keys.stats], args=[config.intake.invalid_max]
            )
        )
        if by_age or by_count:
            log.info(
                "evicted %d dead tasks older than %gs and %d over the limit of %d",
                by_age,
                config.dead.max_age_s,
                by_count,
                config.dead.max_count,
            )
        if invalid:
            log.info("evicted %d parked invalid records over the limit", invalid)
        return int(by_age), int(by_count), invalid

    async def forget_done(self) -> int:
        """Forget the recovered and succeeded tasks whose time is up."""
        keys = self._runtime().keys
        now_ms = await time_ms(self._redis)
        total = 0
        while True:
            forgotten, more = await self._scripts.trim_done(
                keys=[keys.done, keys.tasks], args=[now_ms, FORGET_CHUNK]
            )
            total += int(forgotten)
            if not int(more):
                break
        if total:
            log.debug("forgot %d recovered or succeeded tasks", total)
        return total
