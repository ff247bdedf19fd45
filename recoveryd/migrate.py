"""Tasks kept by versions before the tasks hash, a hash per key, moved into it.

Earlier versions kept each task in ``<p>:task:<id>`` (and a long payload in
``<p>:payload:<id>``). At start, each such task is moved into ``<p>:tasks``
in one script call: its record as `recoveryd.tasks.record_from` reads the
hash, the old keys deleted. A task the tasks hash already holds keeps its
newer record. Scheduled, dead and watched tasks keep their place in their
sorted sets, which did not change; a recovered or succeeded one is given
its time in ``<p>:done``. When no old key is left, ``<p>:names`` notes it,
and later starts skip the walk over the keyspace.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from recoveryd import tasks
from recoveryd.keys import Keys

__all__ = ["move_legacy_tasks"]

log = logging.getLogger(__name__)

# The field of the names hash that says no old task key is left.
MOVED = "legacy_moved"
# Old task keys moved per round of pipelined calls.
CHUNK = 1000

Progress = Callable[[int], None]

# KEYS: tasks, names, old task key, its payload key, done.  ARGV: task id,
# record (MessagePack, names as text), when a recovered task is forgotten.
# Returns 1 if the task was moved, 0 if its key was gone.
_MOVE = (
    tasks.LUA
    + """
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
    local t = cmsgpack.unpack(ARGV[2])
    store_new(KEYS[1], KEYS[2], ARGV[1], t)
    if t[STATE] == RECOVERED or t[STATE] == SUCCEEDED then
        redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
    end
end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
"""
)


async def move_legacy_tasks(
    redis: Redis,
    keys: Keys,
    now_ms: int,
    keep_ms: int,
    progress: Progress | None = None,
) -> int:
    """Move every task an earlier version kept in a key of its own; how many.

    ``progress(moved)`` is called after each chunk. With the tasks or names
    hash not a hash, nothing is moved: the error is logged, and the next
    start tries again.
    """
    try:
        return await _move(redis, keys, now_ms, keep_ms, progress)
    except ResponseError as exc:
        log.error("cannot move the tasks an earlier version kept: %s", exc)
        return 0


async def _move(
    redis: Redis, keys: Keys, now_ms: int, keep_ms: int, progress: Progress | None
) -> int:
    if await _call(redis.hexists(keys.names, MOVED)):
        return 0
    pattern = _glob_escape(keys.legacy_task_prefix) + "*"
    script = redis.register_script(_MOVE)
    moved = 0
    chunk: list[str] = []
    async for raw in redis.scan_iter(match=pattern, count=CHUNK):
        chunk.append(raw.decode(errors="replace"))
        if len(chunk) == CHUNK:
            moved += await _move_chunk(redis, keys, script, chunk, now_ms + keep_ms)
            chunk = []
            if progress is not None:
                progress(moved)
    if chunk:
        moved += await _move_chunk(redis, keys, script, chunk, now_ms + keep_ms)
    await _call(redis.hset(keys.names, MOVED, now_ms))
    if moved:
        log.info("moved %d tasks kept by an earlier version into %s", moved, keys.tasks)
    return moved


async def _move_chunk(
    redis: Redis, keys: Keys, script: Any, old_keys: list[str], forget_at: int
) -> int:
    """Move the tasks of ``old_keys``, in two pipelined round trips."""
    ids = [key[len(keys.legacy_task_prefix) :] for key in old_keys]
    payload_keys = [keys.legacy_payload(task_id) for task_id in ids]
    async with redis.pipeline(transaction=False) as pipe:
        for key, payload_key in zip(old_keys, payload_keys, strict=True):
            pipe.hgetall(key)
            pipe.get(payload_key)
        replies = await pipe.execute(raise_on_error=False)
    async with redis.pipeline(transaction=False) as pipe:
        for i, (key, task_id, payload_key) in enumerate(
            zip(old_keys, ids, payload_keys, strict=True)
        ):
            flat, payload = replies[2 * i], replies[2 * i + 1]
            if isinstance(flat, Exception):  # another type: not ours to move
                log.warning("left %s where it is: %s", key, flat)
                continue
            fields: dict[str, Any] = {name.decode(): v for name, v in flat.items()}
            if "payload" not in fields and isinstance(payload, bytes):
                fields["payload"] = payload
            record = tasks.pack(tasks.record_from(fields))
            await script(
                keys=[keys.tasks, keys.names, key, payload_key, keys.done],
                args=[task_id, record, forget_at],
                client=pipe,
            )
        done = await pipe.execute()
    return sum(int(n) for n in done)


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a SCAN pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


async def _call(reply: Any) -> Any:
    # redis-py types its commands for both clients at once; these are async.
    return await cast(Awaitable[Any], reply)
