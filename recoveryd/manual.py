"""Manual recovery: an operator makes tasks due now, ahead of everything else.

A manual retry is scheduled at the earliest possible score, so the dispatch
loop, which always takes the lowest scores first, sends it in its very next
batch, before any backlog of ordinary due entries.

`retry_dead` requeues many dead tasks (filtered by category, task name and
when they died) at a rate the operator sets, so that a requeue does not
flatten a service that has just recovered: a chunk at a time, paced on a
monotonic clock. A retry whose category or task is paused is held by the
dispatch loop like any other (see `recoveryd.pause`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from recoveryd import tasks
from recoveryd.keys import Keys
from recoveryd.pause import compile_glob
from recoveryd.scripts import RETRY_NOW

__all__ = ["MANUAL_SCORE", "Retried", "retry_dead", "retry_task", "select_dead"]

# Score of a manual retry: before every real due time.
MANUAL_SCORE = 0
# Most retries made due in one round trip; with a rate, a chunk is what
# that rate allows in a tenth of a second, so the stream stays smooth.
CHUNK = 500
TICK_S = 0.1

Progress = Callable[[int, int], None]

_RESULTS = {
    0: "not found among scheduled or dead tasks",
    -1: "has no queue to go back to; not requeued",
    1: "scheduled; now due",
    2: "was dead; now due",
}


@dataclass(frozen=True, slots=True)
class Retried:
    """What `retry_task` did: whether the task is now due, in words."""

    due: bool
    message: str


def retry_task(client: redis.Redis, keys: Keys, task_id: str) -> Retried:
    """Make one scheduled or dead task due now; says what happened."""
    reply = client.eval(
        RETRY_NOW, 3, keys.retry, keys.dead, keys.tasks, task_id, str(MANUAL_SCORE)
    )
    result = int(cast(int, reply))
    if result > 0:
        client.publish(keys.wake, f"retry {MANUAL_SCORE}")
    note = _pause_note(client, keys, task_id, result)
    if result == 0 and note:
        # Found after all: held, and a pause decides when it goes.
        return Retried(due=False, message=f"is held by a pause{note}")
    return Retried(due=result > 0, message=_RESULTS[result] + note)


def _pause_note(client: redis.Redis, keys: Keys, task_id: str, result: int) -> str:
    """Why a retry will not go out yet, when a pause holds it."""
    wanted = ("state", "held", "category", "task")
    fields = tasks.read_sync(client, keys, [task_id], wanted)[0] or {}
    state, held, category, task = (fields.get(name) for name in wanted)
    if result == 0 and state == b"held" and held:
        matcher = held.decode()
        return f"; `recoveryd resume {matcher}` releases it"
    if result <= 0:
        return ""
    paused = {m.decode() for m in cast(list[bytes], client.hkeys(keys.paused))}
    for kind, name in (("task", task), ("category", category)):
        if name and f"{kind}:{name.decode()}" in paused:
            return f" (held while {kind}:{name.decode()} is paused)"
    return ""


def select_dead(
    client: redis.Redis,
    keys: Keys,
    *,
    category: str | None = None,
    task: str | None = None,
    since_ms: int | None = None,
) -> list[str]:
    """Ids of dead tasks, oldest death first, that match every filter given.

    ``task`` is a task name in which ``*`` matches any run of characters;
    ``since_ms`` keeps the tasks that died at or after it.
    """
    low = "-inf" if since_ms is None else since_ms
    ids = [
        raw.decode()
        for raw in cast(list[bytes], client.zrangebyscore(keys.dead, low, "+inf"))
    ]
    if category is None and task is None:
        return ids
    task_rule = compile_glob(task) if task is not None else None
    chosen: list[str] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        found = tasks.read_sync(client, keys, chunk, ("category", "task"))
        for task_id, fields in zip(chunk, found, strict=True):
            found_category = fields and fields["category"]
            found_task = fields and fields["task"]
            if category is not None and found_category != category.encode():
                continue
            if task_rule is not None and (
                found_task is None or task_rule.fullmatch(found_task) is None
            ):
                continue
            chosen.append(task_id)
    return chosen


def retry_dead(
    client: redis.Redis,
    keys: Keys,
    *,
    category: str | None = None,
    task: str | None = None,
    since_ms: int | None = None,
    rate: float | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Make matching dead tasks due now, ``rate`` a second (None: no limit).

    Returns how many were requeued; ``progress(done, total)`` is called
    after each chunk.
    """
    ids = select_dead(client, keys, category=category, task=task, since_ms=since_ms)
    size = CHUNK if rate is None else max(1, min(CHUNK, int(rate * TICK_S)))
    script = client.register_script(RETRY_NOW)
    started = clock()
    requeued = 0
    if progress is not None:
        progress(0, len(ids))
    for start in range(0, len(ids), size):
        if rate is not None:
            # Chunk n may start once n chunks' worth of the rate has passed.
            sleep(max(0.0, started + start / rate - clock()))
        requeued += _requeue(client, keys, script, ids[start : start + size])
        if progress is not None:
            progress(min(start + size, len(ids)), len(ids))
    return requeued


def _requeue(client: redis.Redis, keys: Keys, script: Any, ids: Sequence[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        script(
            keys=[keys.retry, keys.dead, keys.tasks],
            args=[task_id, MANUAL_SCORE],
            client=pipe,
        )
    replies = pipe.execute()
    done = sum(1 for reply in replies if int(reply) > 0)
    if done:
        client.publish(keys.wake, f"retry {MANUAL_SCORE}")
    return done
