"""`recoveryd status`: what is waiting, in flight, scheduled, dead and invalid.

Read straight from Redis, so it works whether or not a daemon is running,
and says which daemons are alive.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
import redis

from recoveryd.consumers import is_dead
from recoveryd.keys import Keys

__all__ = ["Status", "read_status", "render_status"]


class Status(msgspec.Struct, kw_only=True):
    waiting: int
    in_flight: int
    scheduled: int
    due_next_minute: int
    dead: int
    invalid: int
    daemons: list[str]
    by_category: dict[str, int]
    counters: dict[str, int]


def read_status(client: redis.Redis, keys: Keys) -> Status:
    seconds, micros = cast(tuple[int, int], client.time())
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    beats = cast(dict[bytes, bytes], client.hgetall(keys.consumers))
    consumers = {k.decode(): int(v) for k, v in beats.items()}
    alive = sorted(c for c, beat in consumers.items() if not is_dead(c, beat, now_ms))

    pipe = client.pipeline(transaction=False)
    pipe.llen(keys.failures)
    for consumer in consumers:
        pipe.llen(keys.inflight(consumer))
    pipe.zcard(keys.retry)
    pipe.zcount(keys.retry, "-inf", now_ms + 60_000)
    pipe.zcard(keys.dead)
    pipe.llen(keys.invalid)
    pipe.hgetall(keys.stats)
    replies: list[Any] = pipe.execute()

    waiting = replies[0]
    in_flight = sum(replies[1 : 1 + len(consumers)])
    scheduled, due, dead, invalid, stats = replies[1 + len(consumers) :]
    counters = {k.decode(): int(v) for k, v in stats.items()}
    by_category = {
        name.removeprefix("category:"): count
        for name, count in sorted(counters.items())
        if name.startswith("category:")
    }
    plain = {k: v for k, v in sorted(counters.items()) if not k.startswith("category:")}
    return Status(
        waiting=waiting,
        in_flight=in_flight,
        scheduled=scheduled,
        due_next_minute=due,
        dead=dead,
        invalid=invalid,
        daemons=alive,
        by_category=by_category,
        counters=plain,
    )


def render_status(status: Status) -> str:
    lines = [
        f"daemons alive     {len(status.daemons)}"
        + (
            f"  ({', '.join(status.daemons)})" if status.daemons else "  (none running)"
        ),
        f"waiting           {status.waiting}",
        f"in flight         {status.in_flight}",
        f"scheduled         {status.scheduled}"
        f"  ({status.due_next_minute} due in the next minute)",
        f"dead              {status.dead}",
        f"invalid           {status.invalid}",
    ]
    if status.by_category:
        lines.append("received by category:")
        width = max(len(name) for name in status.by_category)
        lines += [f"  {n:<{width}}  {c}" for n, c in status.by_category.items()]
    if status.counters:
        lines.append("totals:")
        width = max(len(name) for name in status.counters)
        lines += [f"  {n:<{width}}  {c}" for n, c in status.counters.items()]
    return "\n".join(lines)
