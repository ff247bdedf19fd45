"""The four measurements, the same for every peer: dispatch, lateness, idle, memory.

Every job carries, besides its due time, a payload made as recoveryd's
benchmark records' are (``bench.workload.payload``, seeded), so that both
store the same work; memory is measured for the bare job (due time alone) too.

The worker is restarted on a flushed server before lateness, so a capped
dispatch run's leftover jobs never leak into it. Synchronisation is by
polling Redis with short sleeps: this is a benchmark harness, not the product.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import redis

from bench.peers.common import (
    STARTS_KEY,
    DispatchResult,
    IdleResult,
    LatenessResult,
    Payload,
    Row,
    Sizes,
    Variant,
    decode_start,
    percentile,
)
from bench.peers.procs import (
    WorkerProcess,
    cpu_between,
    descendants,
    read_cpu,
)
from bench.peers.redis_server import RedisServer
from bench.workload import payload, queue_names

__all__ = ["Peer", "measure_peer"]

POLL_S = 0.005
FAR_FUTURE_S = 86_400.0
# Jobs are due this long after enqueueing should have finished, by the rate
# the memory run with payloads measured, so that a slow enqueue never eats
# into the timing.
ENQUEUE_SLACK = 1.5
ENQUEUE_LEAD_S = 0.5
CLIENTS_GONE_TIMEOUT_S = 5.0
PAYLOAD_SEED = 1

T = TypeVar("T")


class Peer(Protocol):
    """What the measurements need to know about one job queue."""

    name: str

    def version(self) -> str: ...

    def variants(self, sizes: Sizes) -> list[Variant]: ...

    def worker_argv(self, port: int, variant: Variant) -> list[str]: ...

    def is_ready(self, client: redis.Redis) -> bool: ...

    def enqueue(
        self, port: int, dues_s: Sequence[float], payloads: Sequence[Payload] | None
    ) -> None:
        """One job per due time, with its payload (None: bare jobs, due time only)."""
        ...


def job_payloads(jobs: int) -> list[Payload]:
    """The payloads of ``jobs`` jobs, the same for every run and peer."""
    rng = random.Random(PAYLOAD_SEED)
    queues = queue_names()
    return [payload(rng, queues[n % len(queues)], n) for n in range(jobs)]


def measure_peer(peer: Peer, sizes: Sizes, log_dir: Path) -> list[Row]:
    """Every row for one peer, on a redis-server of its own."""
    with RedisServer() as server:
        client = server.client()
        try:
            # Bare first, as the one memory run was before; the first run also
            # takes Redis's one-off allocations, visible only at tiny sizes.
            bare, _ = measure_memory(peer, server, client, sizes.memory_jobs, False)
            with_payload, enqueue_per_s = measure_memory(
                peer, server, client, sizes.memory_jobs, True
            )
            bench = _Bench(peer, server, client, sizes, log_dir, enqueue_per_s)
            return [
                bench.row(variant, with_payload, bare)
                for variant in peer.variants(sizes)
            ]
        finally:
            client.close()


def measure_memory(
    peer: Peer, server: RedisServer, client: redis.Redis, jobs: int, payloads: bool
) -> tuple[float, float]:
    """Redis bytes per pending far-future job, and the enqueue rate seen (jobs/s).

    The jobs carry payloads, or are bare (their due time alone) without.
    """
    client.flushall()
    made = job_payloads(jobs) if payloads else None
    baseline_clients = _connected_clients(client)
    before = _used_memory(client)

    started = time.monotonic()
    peer.enqueue(server.port, [time.time() + FAR_FUTURE_S] * jobs, made)
    enqueue_s = time.monotonic() - started

    # Closed connections are freed by Redis a moment later; their buffers
    # would otherwise be counted against the jobs.
    _wait_for_clients(client, baseline_clients)
    after = _used_memory(client)
    client.flushall()
    return (after - before) / jobs, jobs / enqueue_s


class _Bench:
    """The three measurements that need a running worker, for one peer."""

    def __init__(
        self,
        peer: Peer,
        server: RedisServer,
        client: redis.Redis,
        sizes: Sizes,
        log_dir: Path,
        enqueue_per_s: float,
    ) -> None:
        self.peer = peer
        self.server = server
        self.client = client
        self.sizes = sizes
        self.log_dir = log_dir
        self.enqueue_per_s = enqueue_per_s

    def row(
        self, variant: Variant, bytes_per_pending: float, bytes_per_pending_bare: float
    ) -> Row:
        # Idle leaves nothing behind, so dispatch may follow on the same worker;
        # dispatch may leave jobs behind (when capped), so lateness gets its own.
        idle, dispatch = self._with_worker(
            variant, "idle-dispatch", lambda w: (self.idle(w), self.dispatch(w))
        )
        return Row(
            peer=self.peer.name,
            setting=variant.setting,
            knob=variant.knob,
            worker=variant.worker,
            idle=idle,
            dispatch=dispatch,
            lateness=self._with_worker(variant, "lateness", self.lateness),
            bytes_per_pending=bytes_per_pending,
            bytes_per_pending_bare=bytes_per_pending_bare,
        )

    def _with_worker(
        self, variant: Variant, what: str, measure: Callable[[WorkerProcess], T]
    ) -> T:
        self.client.flushall()
        slug = f"{self.peer.name}-{variant.setting}-{variant.worker.split()[0]}-{what}"
        worker = WorkerProcess(
            self.peer.worker_argv(self.server.port, variant),
            self.log_dir / f"{slug}.log",
        )
        worker.start(lambda: self.peer.is_ready(self.client))
        try:
            return measure(worker)
        finally:
            worker.stop()

    def idle(self, worker: WorkerProcess) -> IdleResult:
        """Commands/s and CPU share of a worker with nothing to do."""
        time.sleep(self.sizes.settle_s)
        calls_before = _command_calls(self.client)
        workers = [worker.pid, *descendants(worker.pid)]
        worker_cpu_before = read_cpu(workers)
        redis_cpu_before = read_cpu([self.server.pid])
        started = time.monotonic()

        time.sleep(self.sizes.idle_s)

        calls_after = _command_calls(self.client)
        # A process forked meanwhile (RQ's work horse) counts from nothing,
        # in ticks: the threads differ.
        workers = [worker.pid, *descendants(worker.pid)]
        worker_cpu_s = cpu_between(worker_cpu_before, read_cpu(workers))
        redis_cpu_s = cpu_between(redis_cpu_before, read_cpu([self.server.pid]))
        elapsed_s = time.monotonic() - started
        worker.check_alive()

        commands = _command_delta(calls_before, calls_after)
        return IdleResult(
            seconds=elapsed_s,
            commands_per_s=sum(commands.values()) / elapsed_s,
            commands=commands,
            worker_cpu_pct=100 * worker_cpu_s / elapsed_s,
            redis_cpu_pct=100 * redis_cpu_s / elapsed_s,
        )

    def dispatch(self, worker: WorkerProcess) -> DispatchResult:
        """Jobs/s from the moment N jobs all fall due until all have started."""
        jobs = self.sizes.dispatch_jobs
        payloads = job_payloads(jobs)
        # A whole second, so that RQ's whole-second scores are exact for once.
        due_s = float(math.ceil(time.time() + self._enqueue_lead_s(jobs)))
        self.peer.enqueue(self.server.port, [due_s] * jobs, payloads)
        enqueue_late_s = max(0.0, time.time() - due_s)

        deadline_s = due_s + self.sizes.dispatch_cap_s
        done, seen_s = _wait_for_starts(self.client, worker, jobs, deadline_s)
        seconds = seen_s - due_s
        return DispatchResult(
            jobs=jobs,
            done=done,
            seconds=seconds,
            per_s=done / seconds,
            capped=done < jobs,
            enqueue_late_s=enqueue_late_s,
        )

    def lateness(self, worker: WorkerProcess) -> LatenessResult:
        """Start time minus due time of M jobs due evenly over S seconds."""
        jobs, spread_s = self.sizes.lateness_jobs, self.sizes.lateness_spread_s
        payloads = job_payloads(jobs)
        first_s = time.time() + self._enqueue_lead_s(jobs)
        dues_s = [first_s + spread_s * i / jobs for i in range(jobs)]
        self.peer.enqueue(self.server.port, dues_s, payloads)

        deadline_s = dues_s[-1] + self.sizes.lateness_tail_s
        done, gave_up_s = _wait_for_starts(self.client, worker, jobs, deadline_s)
        starts = dict(map(decode_start, _starts(self.client)))
        # A job that never started counts as late by at least the time waited,
        # so that a peer too slow for the load is not flattered by its misses.
        late_ms = sorted(
            1000 * (starts.get(due_s, gave_up_s) - due_s) for due_s in dues_s
        )
        return LatenessResult(
            jobs=jobs,
            done=done,
            p50_ms=percentile(late_ms, 50),
            p99_ms=percentile(late_ms, 99),
            max_ms=late_ms[-1],
            min_ms=late_ms[0],
            early=sum(1 for ms in late_ms if ms < 0),
        )

    def _enqueue_lead_s(self, jobs: int) -> float:
        return ENQUEUE_LEAD_S + ENQUEUE_SLACK * jobs / self.enqueue_per_s


def _wait_for_starts(
    client: redis.Redis, worker: WorkerProcess, jobs: int, deadline_s: float
) -> tuple[int, float]:
    """Poll until ``jobs`` jobs have started or the deadline passed: (count, when)."""
    while True:
        done = cast(int, client.llen(STARTS_KEY))
        now_s = time.time()
        if done >= jobs or now_s >= deadline_s:
            return done, now_s
        worker.check_alive()
        time.sleep(POLL_S)


def _starts(client: redis.Redis) -> list[str]:
    # redis-py types every sync reply as "value or Awaitable"; these are values.
    return cast(list[str], client.lrange(STARTS_KEY, 0, -1))


def _info(client: redis.Redis, section: str) -> dict[str, Any]:
    return cast(dict[str, Any], client.info(section))


def _command_calls(client: redis.Redis) -> dict[str, int]:
    stats = _info(client, "commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


def _command_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: calls - before.get(name, 0) for name, calls in after.items()}
    # The harness's own first INFO is counted once it has run; the second is not.
    delta["info"] = delta.get("info", 0) - 1
    return {name: calls for name, calls in sorted(delta.items()) if calls}


def _used_memory(client: redis.Redis) -> int:
    return int(_info(client, "memory")["used_memory"])


def _connected_clients(client: redis.Redis) -> int:
    return int(_info(client, "clients")["connected_clients"])


def _wait_for_clients(client: redis.Redis, count: int) -> None:
    deadline = time.monotonic() + CLIENTS_GONE_TIMEOUT_S
    while _connected_clients(client) > count and time.monotonic() < deadline:
        time.sleep(0.01)
