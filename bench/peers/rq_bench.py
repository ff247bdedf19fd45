"""RQ as a benchmark peer: how to enqueue scheduled jobs and run its worker."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from typing import cast

import redis
from rq import Queue
from rq.scheduler import SCHEDULER_KEY_TEMPLATE
from rq.worker.base import WorkerStatus
from rq.worker_registration import REDIS_WORKER_KEYS

from bench.peers.common import Payload, Sizes, Variant, job_args
from bench.peers.rq_worker import QUEUE_NAME, mark_start

__all__ = ["RqPeer"]

# RQ 3.0 takes the interval in whole seconds: it also becomes the lock TTL
# (interval + 60) given to SET EX, so 0.05 fails with "value is not an
# integer". 0, a scheduler that loops without sleeping, is the only faster one.
TUNED_SCHEDULER_INTERVAL_S = 0
ENQUEUE_BATCH = 500  # jobs per pipeline; RQ's enqueue_at takes a pipeline
WORKER_CLASS_WORDS = {"Worker": "fork per job", "SimpleWorker": "in-process"}


class RqPeer:
    """RQ's worker with its scheduler: interval 1 s (default), then 0 s."""

    name = "rq"

    def version(self) -> str:
        return version("rq")

    def variants(self, sizes: Sizes) -> list[Variant]:
        variants = []
        for worker_class in sizes.rq_worker_classes:
            words = f"{worker_class} ({WORKER_CLASS_WORDS[worker_class]})"
            base = ("--worker-class", worker_class)
            tuned = ("--scheduler-interval-s", str(TUNED_SCHEDULER_INTERVAL_S))
            variants += [
                Variant("default", "scheduler interval=1s", words, base),
                Variant(
                    "tuned",
                    f"scheduler interval={TUNED_SCHEDULER_INTERVAL_S}s",
                    words,
                    base + tuned,
                ),
            ]
        return variants

    def worker_argv(self, port: int, variant: Variant) -> list[str]:
        return ["-m", "bench.peers.rq_worker", "--port", str(port), *variant.argv]

    def is_ready(self, client: redis.Redis) -> bool:
        """A worker waits on the queue and a scheduler process has registered."""
        workers = cast(set[str], client.smembers(REDIS_WORKER_KEYS))
        states = [client.hget(key, "state") for key in workers]
        schedulers = client.keys(SCHEDULER_KEY_TEMPLATE % "*")
        return WorkerStatus.IDLE.value in states and bool(schedulers)

    def enqueue(
        self, port: int, dues_s: Sequence[float], payloads: Sequence[Payload] | None
    ) -> None:
        """Schedule one ``mark_start`` job per due time with ``enqueue_at``.

        Each job's arguments are its due time and its payload, or the due
        time alone when ``payloads`` is None (the bare job).
        """
        # Memory: a bare job's pickled "data" field is 68 bytes, past Redis's
        # 64-byte listpack limit, so each job hash is a full hashtable (~1.4 kB
        # per job); a shorter function path such as "os.getpid" would keep it
        # ~650 B. With its payload the field is ~175 bytes, whatever the path.
        jobs = job_args(dues_s, payloads)
        connection = redis.Redis(host="127.0.0.1", port=port)
        queue = Queue(QUEUE_NAME, connection=connection)
        try:
            for first in range(0, len(jobs), ENQUEUE_BATCH):
                with connection.pipeline() as pipe:
                    for args in jobs[first : first + ENQUEUE_BATCH]:
                        due = datetime.fromtimestamp(args[0], tz=UTC)
                        queue.enqueue_at(due, mark_start, *args, pipeline=pipe)
                    pipe.execute()
        finally:
            connection.close()
