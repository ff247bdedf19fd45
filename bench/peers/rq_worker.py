"""RQ's side of the benchmark: the job it runs and its worker entry point.

Run as ``python -m bench.peers.rq_worker --port P --worker-class C
[--scheduler-interval-s S]``. Without an interval it is what ``rq worker
--with-scheduler`` runs. RQ 3.0 has no option for its scheduler's polling
interval: ``RQScheduler(interval=1)``, in whole seconds, is the one knob,
and the worker always builds its scheduler with the default. So with an
interval this starts an ``RQScheduler`` itself and hands it to the worker as
its scheduler (which the worker then restarts if it dies and stops on exit).
"""

from __future__ import annotations

import argparse
import time

from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.job import get_current_job
from rq.scheduler import RQScheduler

from bench.peers.common import STARTS_KEY, Payload, encode_start

__all__ = ["QUEUE_NAME", "WORKER_CLASSES", "mark_start"]

QUEUE_NAME = "default"
WORKER_CLASSES: dict[str, type[Worker] | type[SimpleWorker]] = {
    "Worker": Worker,
    "SimpleWorker": SimpleWorker,
}


def mark_start(due_s: float, payload: Payload | None = None) -> None:
    """The benchmark's job: note when it started against when it was due.

    ``payload`` is only carried (a bare job has none), never read.
    """
    start_s = time.time()
    job = get_current_job()
    assert job is not None, "mark_start runs only inside an RQ job"
    job.connection.rpush(STARTS_KEY, encode_start(due_s, start_s))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.rq_worker")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--worker-class", choices=sorted(WORKER_CLASSES), required=True)
    parser.add_argument("--scheduler-interval-s", type=int)
    args = parser.parse_args(argv)

    connection = Redis(host="127.0.0.1", port=args.port)
    queue = Queue(QUEUE_NAME, connection=connection)
    worker = WORKER_CLASSES[args.worker_class]([queue], connection=connection)
    if args.scheduler_interval_s is None:
        worker.work(logging_level="INFO", with_scheduler=True)
        return

    scheduler = RQScheduler(
        [queue], connection=connection, interval=args.scheduler_interval_s
    )
    worker.scheduler = scheduler
    scheduler.acquire_locks(auto_start=True)  # type: ignore[no-untyped-call]
    worker.work(logging_level="INFO", with_scheduler=False)


if __name__ == "__main__":
    main()
