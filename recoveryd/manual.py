"""Manual recovery: an operator makes tasks due now, ahead of everything else.

A manual retry is scheduled at the earliest possible score, so the dispatch
loop, which always takes the lowest scores first, sends it before any
backlog of ordinary due entries.
"""

from __future__ import annotations

from typing import cast

import redis

from recoveryd.keys import Keys
from recoveryd.scripts import RETRY_NOW

__all__ = ["MANUAL_SCORE", "retry_dead", "retry_task"]

# Score of a manual retry: before every real due time.
MANUAL_SCORE = 0

_RESULTS = {
    0: "not found among scheduled or dead tasks",
    -1: "has no queue to go back to; not requeued",
    1: "scheduled; now due",
    2: "was dead; now due",
}


def retry_task(client: redis.Redis, keys: Keys, task_id: str, ttl_ms: int) -> str:
    """Make one scheduled or dead task due now; says what happened."""
    reply = client.eval(
        RETRY_NOW,
        3,
        keys.retry,
        keys.dead,
        keys.task(task_id),
        task_id,
        str(MANUAL_SCORE),
        str(ttl_ms),
    )
    result = int(cast(int, reply))
    if result > 0:
        client.publish(keys.wake, f"retry {MANUAL_SCORE}")
    return _RESULTS[result]


def retry_dead(
    client: redis.Redis, keys: Keys, ttl_ms: int, *, category: str | None = None
) -> int:
    """Make every dead task (of one category, if named) due now; returns how many."""
    requeued = 0
    for raw_id in cast(list[bytes], client.zrange(keys.dead, 0, -1)):
        task_id = raw_id.decode()
        if category is not None:
            found = cast(bytes | None, client.hget(keys.task(task_id), "category"))
            if found is None or found.decode() != category:
                continue
        if retry_task(client, keys, task_id, ttl_ms).endswith("now due"):
            requeued += 1
    return requeued
