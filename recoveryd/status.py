"""`recoveryd status`: what is waiting, in flight, scheduled, dead and invalid.

Read straight from Redis, so it works whether or not a daemon is running,
and says which daemons are alive.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
import redis

from recoveryd.adaptive import Delay, current_delays
from recoveryd.config import Config
from recoveryd.connection import time_ms_sync
from recoveryd.consumers import is_dead
from recoveryd.jobs import JOB_NAMES
from recoveryd.keys import Keys
from recoveryd.notification import iso_utc
from recoveryd.pause import Pause, Silence, list_pauses, list_silences

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
    # Issue 4: base delays (configured and adapted), pauses, silences, jobs.
    base_delays: dict[str, Delay] = {}
    paused: list[Pause] = []
    silences: list[Silence] = []
    jobs: dict[str, dict[str, str]] = {}


_JOB_FIELDS = ("last_run", "last_summary", "last_report", "runs", "owner")


def read_status(
    client: redis.Redis, keys: Keys, config: Config | None = None
) -> Status:
    """Everything `recoveryd status` shows; base delays need the ``config``."""
    status = _read_counts(client, keys)
    if config is not None:
        raw = cast(dict[bytes, bytes], client.hgetall(keys.base_delays))
        status.base_delays = current_delays(raw, config)
    status.paused = list_pauses(client, keys)
    status.silences = list_silences(client, keys)
    status.jobs = _read_jobs(client, keys)
    return status


def _read_jobs(client: redis.Redis, keys: Keys) -> dict[str, dict[str, str]]:
    pipe = client.pipeline(transaction=False)
    for name in JOB_NAMES:
        pipe.hmget(keys.job(name), list(_JOB_FIELDS))
    jobs: dict[str, dict[str, str]] = {}
    for name, reply in zip(JOB_NAMES, pipe.execute(), strict=True):
        fields = {
            field: value.decode()
            for field, value in zip(_JOB_FIELDS, reply, strict=True)
            if value is not None
        }
        if "last_run" in fields:
            fields["last_run"] = iso_utc(int(fields["last_run"]))
        if fields:
            jobs[name] = fields
    return jobs


def _read_counts(client: redis.Redis, keys: Keys) -> Status:
    now_ms = time_ms_sync(client)
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
    lines += _render_upkeep(status)
    return "\n".join(lines)


def _render_upkeep(status: Status) -> list[str]:
    lines: list[str] = []
    if status.base_delays:
        lines.append("base delays (configured -> current):")
        width = max(len(name) for name in status.base_delays)
        for name, delay in status.base_delays.items():
            mark = "" if delay.current_s == delay.configured_s else "  (adapted)"
            lines.append(
                f"  {name:<{width}}  {delay.configured_s:g}s -> "
                f"{delay.current_s:g}s{mark}"
            )
    lines.append(f"paused            {len(status.paused) or 'none'}")
    for item in status.paused:
        why = f"  ({item.reason})" if item.reason else ""
        lines.append(
            f"  {item.matcher}  since {iso_utc(item.since_ms)}, {item.held} held{why}"
        )
    lines.append(f"silences          {len(status.silences) or 'none'}")
    for silence in status.silences:
        why = f"  ({silence.reason})" if silence.reason else ""
        lines.append(f"  {silence.matcher}  until {iso_utc(silence.until_ms)}{why}")
    for name, job in status.jobs.items():
        when = job.get("last_run", "never")
        lines.append(f"last {name:<12} {when}  {job.get('last_summary', '')}")
    return lines
