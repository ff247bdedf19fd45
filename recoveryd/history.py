"""History: what happened to failures, minute by minute.

Each minute has one small hash of counters (``<p>:hist:<minute>``). It
expires on its own, so history is bounded by age, and reading a window back
costs one round trip, in proportion to its length.

The counters of a minute:

- outcomes: ``received``, ``scheduled``, ``dispatched``, ``dead``,
  ``notified``, ``invalid``, ``recovered``, ``silenced``;
- classification: ``category:<c>``, ``task:<t>``, ``pattern:<p>``, and
  ``host:<h>`` for network failures (the host the error names);
- recovery, per category: ``dispatched:<c>`` (a retry went out),
  ``refailed:<c>`` (a re-dispatched task failed again), ``recovered:<c>``
  (it did not fail again within the recovery window, or its application
  reported success), ``reported_ok:<c>`` (of those, by a report).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import re2
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from recoveryd.keys import Keys
from recoveryd.writes import Writes

__all__ = [
    "BUCKET_MS",
    "KEEP_MS",
    "MAX_WINDOW_MS",
    "bucket_of",
    "by_prefix",
    "network_host",
    "read_counts",
    "read_windows",
    "write",
]

BUCKET_MS = 60_000
# Two days and an hour: the analysis compares a 24 h window with the one
# before it.
KEEP_MS = 49 * 3600 * 1000
# The longest window that can be read back whole, with the one before it.
MAX_WINDOW_MS = 24 * 3600 * 1000

# Only the start of an error is searched for a host, and a host name is cut
# to this length, so a hostile error text costs little and counts little.
_HOST_SEARCH_CHARS = 400
_HOST_CHARS = 100
_HOST = re2.compile(
    # a URL's host, or host='x' (urllib3), or a host after a word that
    # introduces one, or the address Node.js puts after its error code.
    r"(?i)(?:[a-z][a-z0-9+.-]*://(?:[^@/\s]+@)?|host\s*[=:]\s*['\"]?"
    r"|\b(?:to|connect|connecting to|resolve|resolving|lookup|reach|host|server)"
    r"\s+['\"]?"
    r"|\b(?:ECONNREFUSED|ENOTFOUND|ETIMEDOUT|EHOSTUNREACH|ECONNRESET|EAI_AGAIN)\s+)"
    r"([a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)+|localhost|\[[0-9a-f:]+\])"
)


def bucket_of(epoch_ms: int) -> int:
    return epoch_ms // BUCKET_MS


def write(
    pipe: Pipeline | Writes, keys: Keys, now_ms: int, counts: Counter[str]
) -> None:
    """Add one batch's counts to the current minute, in ``pipe``."""
    if not counts:
        return
    counters = keys.history(bucket_of(now_ms))
    for name, number in counts.items():
        pipe.hincrby(counters, name, number)
    pipe.pexpire(counters, KEEP_MS)


def network_host(error: str) -> str | None:
    """The host a network error names, lower-cased, if it names one.

    >>> network_host("HTTPSConnectionPool(host='payments.internal', port=443)")
    'payments.internal'
    """
    # Searched as bytes: the binding maps a str's every match back to
    # character offsets, which costs more than the search itself.
    head = error[:_HOST_SEARCH_CHARS].encode()
    match = _HOST.search(head)
    if match is None:
        return None
    host: str = match.group(1).decode().lower().rstrip(".")
    # "connect to 10.0.0.7:5432" keeps no port: the regex stops at ':'.
    return host[:_HOST_CHARS]


def by_prefix(counts: Counter[str], prefix: str) -> Counter[str]:
    """The counters named ``<prefix>:<x>``, keyed by ``x``."""
    start = f"{prefix}:"
    return Counter(
        {name[len(start) :]: n for name, n in counts.items() if name.startswith(start)}
    )


def _minutes(start_ms: int, end_ms: int) -> Iterable[int]:
    return range(bucket_of(start_ms), bucket_of(end_ms - 1) + 1)


async def read_counts(
    redis: Redis, keys: Keys, start_ms: int, end_ms: int
) -> Counter[str]:
    """Every counter summed over the minutes from ``start_ms`` to ``end_ms``."""
    current, _ = await read_windows(redis, keys, end_ms, end_ms - start_ms, 0)
    return current


async def read_windows(
    redis: Redis, keys: Keys, end_ms: int, window_ms: int, windows: int = 2
) -> tuple[Counter[str], Counter[str]]:
    """The counters of the window ending at ``end_ms`` and of the one before.

    One pipelined round trip, one ``HGETALL`` per minute. With ``windows``
    below 2 the earlier window is not read and comes back empty.
    """
    start_ms = end_ms - window_ms * max(windows, 1)
    split = bucket_of(end_ms - window_ms)
    minutes = list(_minutes(start_ms, end_ms))
    async with redis.pipeline(transaction=False) as pipe:
        for minute in minutes:
            pipe.hgetall(keys.history(minute))
        replies = await pipe.execute()
    current: Counter[str] = Counter()
    previous: Counter[str] = Counter()
    for minute, reply in zip(minutes, replies, strict=True):
        into = current if minute >= split else previous
        for name, number in reply.items():
            into[name.decode()] += int(number)
    return current, previous
