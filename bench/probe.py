"""Reading the benchmark's Redis: its clock, its counters, its memory.

Due times are on Redis's clock (``TIME``), so every instant the benchmark
notes on its own clock is carried over with an offset measured against
``TIME`` by the round trip with the least delay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import redis

__all__ = [
    "Clock",
    "command_delta",
    "command_stats",
    "info",
    "redis_now_ms",
    "wait_until",
]

POLL_S = 0.005


def redis_now_ms(client: redis.Redis) -> int:
    seconds, micros = cast(tuple[int, int], client.time())
    return seconds * 1000 + micros // 1000


class Clock:
    """This process's clock carried over to Redis's (milliseconds)."""

    def __init__(self, client: redis.Redis, samples: int = 25) -> None:
        best_rtt = float("inf")
        self.offset_ms = 0.0
        for _ in range(samples):
            before = time.time()
            seconds, micros = cast(tuple[int, int], client.time())
            after = time.time()
            if after - before < best_rtt:
                best_rtt = after - before
                remote_ms = seconds * 1000 + micros / 1000
                self.offset_ms = remote_ms - 500 * (before + after)
        self.rtt_ms = 1000 * best_rtt

    def now_ms(self) -> float:
        """Now, on Redis's clock."""
        return 1000 * time.time() + self.offset_ms

    def to_redis_ms(self, local_s: float) -> float:
        return 1000 * local_s + self.offset_ms


def info(client: redis.Redis) -> dict[str, Any]:
    """Every INFO section, commandstats included, in one call."""
    return cast(dict[str, Any], client.info("all"))


def command_stats(snapshot: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Calls and microseconds per command, from an `info` snapshot."""
    return {
        name.removeprefix("cmdstat_"): (int(stats["calls"]), int(stats["usec"]))
        for name, stats in snapshot.items()
        if name.startswith("cmdstat_")
    }


def command_delta(
    before: dict[str, Any], after: dict[str, Any], own: dict[str, int] | None = None
) -> dict[str, dict[str, int]]:
    """Commands run between two snapshots, less the benchmark's own.

    The first snapshot's INFO is counted by the second; the second's is not
    counted yet. ``own`` names any other calls the benchmark made meanwhile.
    """
    own = {"info": 1, **(own or {})}
    old, new = command_stats(before), command_stats(after)
    delta: dict[str, dict[str, int]] = {}
    for name, (calls, usec) in new.items():
        was_calls, was_usec = old.get(name, (0, 0))
        calls -= was_calls + own.get(name, 0)
        if calls > 0:
            delta[name] = {"calls": calls, "usec": usec - was_usec}
    return dict(sorted(delta.items(), key=lambda item: -item[1]["usec"]))


def wait_until(
    done: Callable[[], bool],
    timeout_s: float,
    alive: Callable[[], None] = lambda: None,
) -> tuple[bool, float]:
    """Poll ``done`` until true or timed out: (whether it came true, when, local s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if done():
            return True, time.time()
        if time.monotonic() > deadline:
            return False, time.time()
        alive()
        time.sleep(POLL_S)
