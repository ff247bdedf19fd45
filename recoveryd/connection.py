"""The Redis connection, and waiting out the times Redis is away.

Every long-lived loop runs its steps inside a retry on Redis errors: while
Redis is down or loading, the loop backs off (up to a few seconds) and tries
again; the outage is logged once when it starts and once when it ends, not
once per try.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    ReadOnlyError,
    TimeoutError,
)

from recoveryd.metrics import METRICS

__all__ = [
    "REDIS_AWAY",
    "Link",
    "Replies",
    "connect",
    "exchange",
    "redact_url",
    "time_ms",
    "time_ms_sync",
]

# Errors that mean Redis is away for now (down, unreachable, loading, a
# replica during failover): loops wait these out. Any other Redis error is
# a bug or damaged data, and goes to the loop's supervisor with a traceback.
REDIS_AWAY = (ConnectionError, TimeoutError, ReadOnlyError, OSError)

log = logging.getLogger(__name__)

# Longer than any blocking command recoveryd sends (intake waits 20 s).
READ_TIMEOUT_S = 30.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 5.0


def connect(
    url: str, *, timeout_s: float = 10.0, read_timeout_s: float | None = READ_TIMEOUT_S
) -> Redis:
    """A client for ``url``: bytes in and out, short retries on blips.

    ``read_timeout_s`` is how long a reply may take before the connection is
    judged dead; None (for Pub/Sub, which waits for messages) is no limit.
    It is always given, since redis-py's default differs between versions.
    """
    client: Redis = Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=timeout_s,
        socket_timeout=read_timeout_s,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=2),
        retry_on_error=[ConnectionError, TimeoutError, BusyLoadingError],
    )
    return client


async def time_ms(client: Redis) -> int:
    """Redis's clock (``TIME``) in ms: the one all daemons agree on."""
    return _ms(await client.time())


def time_ms_sync(client: redis.Redis) -> int:
    """`time_ms`, for the command line's synchronous client."""
    return _ms(client.time())


def _ms(reply: tuple[int, int]) -> int:
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


class Replies:
    """The replies to commands sent together, read one at a time, in order."""

    def __init__(self, connection: Any, count: int) -> None:
        self._connection = connection
        self.unread = count

    async def send(self, *commands: Sequence[Any]) -> None:
        """Send more commands on the same connection; their replies follow."""
        self.unread += len(commands)
        await self._connection.send_packed_command(
            self._connection.pack_commands(commands)
        )

    async def next(self) -> Any:
        """The next reply; a reply that is an error is raised."""
        if self.unread == 0:
            raise IndexError("every reply has been read")
        self.unread -= 1
        return await self._connection.read_response()


@asynccontextmanager
async def exchange(
    client: Redis, commands: Sequence[Sequence[Any]]
) -> AsyncIterator[Replies]:
    """Send ``commands`` in one write, and read their replies as they come.

    A pipeline hands back every reply at once. Here the caller can work on
    the first reply while Redis is still running the commands after it.
    Replies left unread are read on the way out; if the block raises, the
    connection is closed instead, since its replies can no longer be
    matched to commands. No command is retried: a Redis error reaches the
    caller as it is.
    """
    pool = client.connection_pool
    connection = await pool.get_connection()
    clean = False
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        replies = Replies(connection, len(commands))
        yield replies
        while replies.unread:
            await replies.next()
        clean = True
    finally:
        # Shielded: a cancelled caller must still hand the connection back.
        with anyio.CancelScope(shield=True):
            if not clean:
                await connection.disconnect(nowait=True)
            await pool.release(connection)


def redact_url(url: str) -> str:
    """``url`` with any password replaced, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Link:
    """Whether Redis is reachable, as the loops find it; says each change once."""

    def __init__(self) -> None:
        self._down: dict[str, str] = {}
        self._delay_s: dict[str, float] = {}

    @property
    def up(self) -> bool:
        return not self._down

    @property
    def problems(self) -> dict[str, str]:
        return dict(self._down)

    def ok(self, who: str) -> None:
        """``who`` reached Redis; if it had not before, say it is back."""
        if who in self._down:
            del self._down[who]
            self._delay_s.pop(who, None)
            if not self._down:
                log.info("redis is reachable again")
                METRICS.redis_up.set(1)

    async def wait_out(self, exc: BaseException, who: str) -> None:
        """Note a failure of ``who`` and back off before its next try."""
        if not self._down:
            log.warning("redis is unreachable (%s: %s); retrying", who, _describe(exc))
            METRICS.redis_up.set(0)
        self._down[who] = _describe(exc)
        delay = self._delay_s.get(who, BACKOFF_MIN_S)
        self._delay_s[who] = min(delay * 2, BACKOFF_MAX_S)
        await anyio.sleep(delay * random.uniform(0.5, 1.0))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
