"""arq as a benchmark peer: how to enqueue deferred jobs and run its worker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version

import redis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import default_queue_name, health_check_key_suffix

from bench.peers.common import JobArgs, Payload, Sizes, Variant, job_args

__all__ = ["ArqPeer"]

TUNED_POLL_DELAY_S = 0.05
ENQUEUE_CONCURRENCY = 32  # each arq enqueue is a WATCH/MULTI round trip


class ArqPeer:
    """arq's worker, default settings and then ``poll_delay`` 0.05 s."""

    name = "arq"

    def version(self) -> str:
        return version("arq")

    def variants(self, sizes: Sizes) -> list[Variant]:
        worker = "asyncio task"
        return [
            Variant("default", "poll_delay=0.5s", worker, ()),
            Variant(
                "tuned",
                f"poll_delay={TUNED_POLL_DELAY_S}s",
                worker,
                ("--poll-delay-s", str(TUNED_POLL_DELAY_S)),
            ),
        ]

    def worker_argv(self, port: int, variant: Variant) -> list[str]:
        return ["-m", "bench.peers.arq_worker", "--port", str(port), *variant.argv]

    def is_ready(self, client: redis.Redis) -> bool:
        # arq writes its health-check key in its first poll of the queue.
        return bool(client.exists(default_queue_name + health_check_key_suffix))

    def enqueue(
        self, port: int, dues_s: Sequence[float], payloads: Sequence[Payload] | None
    ) -> None:
        """Enqueue one ``mark_start`` job per due time, deferred until it.

        Each job's arguments are its due time and its payload, or the due
        time alone when ``payloads`` is None (the bare job).
        """
        asyncio.run(_enqueue(port, dues_s, payloads))


async def _enqueue(
    port: int, dues_s: Sequence[float], payloads: Sequence[Payload] | None
) -> None:
    jobs = job_args(dues_s, payloads)
    pool = await create_pool(RedisSettings(host="127.0.0.1", port=port))
    try:
        for first in range(0, len(jobs), ENQUEUE_CONCURRENCY):
            batch = jobs[first : first + ENQUEUE_CONCURRENCY]
            await asyncio.gather(*(_enqueue_one(pool, args) for args in batch))
    finally:
        await pool.aclose()


async def _enqueue_one(pool: ArqRedis, args: JobArgs) -> None:
    due = datetime.fromtimestamp(args[0], tz=UTC)
    job = await pool.enqueue_job("mark_start", *args, _defer_until=due)
    assert job is not None, "arq refused a job with a fresh id"
