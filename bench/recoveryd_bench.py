"""recoveryd's measurements: ingest, dispatch, lateness, idle and memory.

Each runs the real daemon (``python -m recoveryd run``) against the
benchmark's own redis-server, flushed between measurements, and waits on
real Redis state: the counters the daemon keeps in its stats hash, the
lengths of the application queues, and a consumer process that takes the
payloads as a worker would. Instants are judged on Redis's clock, as the
daemon judges due times.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec
import redis

from bench.peers.procs import cpu_between, read_cpu
from bench.peers.redis_server import RedisServer
from bench.probe import Clock, command_delta, info, redis_now_ms, wait_until
from bench.processes import (
    REPO_ROOT,
    DaemonProcess,
    cpu_seconds,
    log_warnings,
    machine_busy_s,
    write_config,
)
from bench.profiling import Sampler
from bench.workload import RETRYABLE, RecordMaker, payload, queue_names
from recoveryd import tasks
from recoveryd.keys import Keys

__all__ = ["FULL", "TINY", "RecoverydBench", "Sizes"]

KEYS = Keys("recoveryd")
PUSH_CHUNK = 1000  # records per LPUSH, as a busy application would batch them
WRITE_CHUNK = 2000  # commands per pipeline round trip when setting up
SLOWEST_PER_S = 1000  # a run slower than this is cut short and marked capped
LATENESS_LEAD_S = 2.0
LATENESS_TAIL_S = 10.0
SAMPLE_TASKS = 200
CATEGORY = "recoverable_network"


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each measurement does."""

    ingest: int
    dispatch: int
    lateness: int
    lateness_spread_s: float
    idle_s: float
    settle_s: float
    memory: int
    memory_bare: int  # as many as the peers' bare jobs
    classify_min_s: float


FULL = Sizes(
    ingest=200_000,
    dispatch=200_000,
    lateness=10_000,
    lateness_spread_s=20.0,
    idle_s=60.0,
    settle_s=2.0,
    memory=1_000_000,
    memory_bare=100_000,
    classify_min_s=1.0,
)
TINY = Sizes(
    ingest=2_000,
    dispatch=2_000,
    lateness=100,
    lateness_spread_s=2.0,
    idle_s=2.0,
    settle_s=0.5,
    memory=10_000,
    memory_bare=1_000,
    classify_min_s=0.1,
)


class _Meter:
    """CPU of the daemon and of Redis, and Redis's commands, over one span."""

    def __init__(self, bench: RecoverydBench, daemon: DaemonProcess) -> None:
        self._bench = bench
        self._daemon = daemon

    def __enter__(self) -> _Meter:
        self._info = info(self._bench.client)
        self._daemon_cpu = self._daemon.cpu_s()
        self._redis_cpu = cpu_seconds(self._bench.server.pid)
        self._own_cpu = time.process_time()
        self._machine_cpu = machine_busy_s()
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._started
        self.daemon_cpu_s = self._daemon.cpu_s() - self._daemon_cpu
        self.redis_cpu_s = cpu_seconds(self._bench.server.pid) - self._redis_cpu
        own_cpu_s = time.process_time() - self._own_cpu
        machine_s = machine_busy_s() - self._machine_cpu
        # What the rest of the machine did meanwhile: anything else running
        # on these two cores makes the figures worse than they should be.
        others_s = machine_s - self.daemon_cpu_s - self.redis_cpu_s - own_cpu_s
        self.other_load = max(others_s, 0.0) / self.seconds
        self.commands = command_delta(self._info, info(self._bench.client))

    def figures(self, top: int = 8) -> dict[str, Any]:
        busiest = dict(list(self.commands.items())[:top])
        return {
            "daemon_cpu_s": round(self.daemon_cpu_s, 3),
            "redis_cpu_s": round(self.redis_cpu_s, 3),
            "other_load_cores": round(self.other_load, 2),
            "redis_commands": busiest,
        }


class RecoverydBench:
    """The measurements, sharing one redis-server and one work directory."""

    def __init__(
        self,
        server: RedisServer,
        work_dir: Path,
        sizes: Sizes,
        profile_dir: Path | None = None,
    ) -> None:
        self.server = server
        self.work_dir = work_dir
        self.sizes = sizes
        self.profile_dir = profile_dir
        self.client = redis.Redis(host="127.0.0.1", port=server.port)
        self.clock = Clock(self.client)
        self.config = write_config(
            work_dir / "recoveryd.toml", server.url, work_dir / "state"
        )
        self.profiles: dict[str, Any] = {}

    def close(self) -> None:
        self.client.close()

    # -- the measurements -------------------------------------------------

    def idle(self) -> dict[str, Any]:
        """CPU share and Redis commands/s of a daemon with nothing to do."""
        self._fresh()
        with self._daemon("idle") as daemon:
            time.sleep(self.sizes.settle_s)
            daemon_before = read_cpu([daemon.pid])
            redis_before = read_cpu([self.server.pid])
            with _Meter(self, daemon) as meter:
                time.sleep(self.sizes.idle_s)
            # Finer than the meter's ticks, which a quiet minute may not reach.
            daemon_cpu_s = cpu_between(daemon_before, read_cpu([daemon.pid]))
            redis_cpu_s = cpu_between(redis_before, read_cpu([self.server.pid]))
            daemon.check_alive()
        calls = {name: c["calls"] for name, c in meter.commands.items()}
        return {
            "seconds": round(meter.seconds, 2),
            "daemon_cpu_pct": 100 * daemon_cpu_s / meter.seconds,
            "redis_cpu_pct": 100 * redis_cpu_s / meter.seconds,
            "commands_per_s": sum(calls.values()) / meter.seconds,
            "commands": calls,
            "other_load_cores": round(meter.other_load, 2),
        }

    def ingest(self) -> dict[str, Any]:
        """Records/s from the daemon's start to the last outcome committed,
        with every record pushed before the daemon started."""
        n = self.sizes.ingest
        self._fresh()
        maker = RecordMaker(seed=1, repeat_share=0.1, invalid_share=0.005)
        started = time.monotonic()
        self._push(maker.batches(n, PUSH_CHUNK), pipelined=True)
        push_s = time.monotonic() - started

        with self._daemon("ingest") as daemon:
            with self._sampled(daemon, "ingest"), _Meter(self, daemon) as meter:
                done, end_s = self._wait_ingested(n, daemon)
            result = self._ingest_result(n, daemon.ready_ms, end_s, done, meter)
        result |= {"invalid_pushed": maker.invalid, "push_s": round(push_s, 2)}
        return result

    def ingest_live(self) -> dict[str, Any]:
        """Records/s while one client pushes them to a running daemon."""
        n = self.sizes.ingest
        self._fresh()
        maker = RecordMaker(seed=2, repeat_share=0.1, invalid_share=0.005)
        batches = list(maker.batches(n, PUSH_CHUNK))
        with self._daemon("ingest-live") as daemon:
            with _Meter(self, daemon) as meter:
                start_ms = self.clock.now_ms()
                self._push(batches, pipelined=False)
                push_s = (self.clock.now_ms() - start_ms) / 1000
                done, end_s = self._wait_ingested(n, daemon)
            result = self._ingest_result(n, start_ms, end_s, done, meter)
        result |= {"invalid_pushed": maker.invalid, "push_s": round(push_s, 2)}
        return result

    def dispatch(self) -> dict[str, Any]:
        """Entries/s from the moment N entries fall due until all are queued."""
        n = self.sizes.dispatch
        self._fresh()
        with self._daemon("dispatch") as daemon:
            ids = self._task_ids(n)
            queues = queue_names()
            self._write_tasks(
                ids, lambda i: (queues[i % len(queues)], _payload_text(i, queues))
            )
            # Due once the entries are surely written: ZADD runs ~1M members/s.
            due_ms = redis_now_ms(self.client) + 500 + n // 200
            self._schedule(ids, [due_ms] * n)
            setup_late_ms = redis_now_ms(self.client) - due_ms
            self.client.publish(KEYS.wake, f"retry {due_ms}")

            with self._sampled(daemon, "dispatch"), _Meter(self, daemon) as meter:
                done, end_s = wait_until(
                    lambda: self._stat("dispatched") >= n,
                    self._cap_s(n),
                    daemon.check_alive,
                )
            end_ms = self.clock.to_redis_ms(end_s)
            queued = self._queued(queues)
        seconds = (end_ms - due_ms) / 1000
        return {
            "entries": n,
            "dispatched": queued,
            "seconds": round(seconds, 3),
            "per_s": queued / seconds,
            "capped": not done,
            "setup_late_ms": setup_late_ms,
            "warnings": log_warnings(daemon.log_path),
            **meter.figures(),
        }

    def lateness(self) -> dict[str, Any]:
        """Arrival on a worker minus due time, for M entries due over S seconds."""
        n, spread_s = self.sizes.lateness, self.sizes.lateness_spread_s
        self._fresh()
        queues = queue_names()
        ids = self._task_ids(n)
        with self._daemon("lateness") as daemon, self._consumer(queues, n) as out:
            first_ms = redis_now_ms(self.client) + round(1000 * LATENESS_LEAD_S)
            dues = [first_ms + round(1000 * spread_s * i / n) for i in range(n)]
            self._write_tasks(
                ids, lambda i: (queues[i % len(queues)], f"late {i} {dues[i]}")
            )
            self._schedule(ids, dues)
            setup_late_ms = redis_now_ms(self.client) - first_ms
            self.client.publish(KEYS.wake, f"retry {first_ms}")
            with self._sampled(daemon, "lateness"), _Meter(self, daemon) as meter:
                self._wait_consumer(out, spread_s)
            dispatched_at = self._dispatched_at(ids)
        arrivals = json.loads(out.path.read_text())
        at_worker = _lateness_at_worker(arrivals["arrivals"], dues)
        in_script: list[float | None] = [
            at - due if at >= 0 else None
            for at, due in zip(dispatched_at, dues, strict=True)
        ]
        return {
            "entries": n,
            "spread_s": spread_s,
            "arrived": len(arrivals["arrivals"]),
            "at_worker_ms": _percentiles(at_worker),
            "in_script_ms": _percentiles(in_script),
            "clock_offset_ms": round(arrivals["offset_ms"], 3),
            "clock_rtt_ms": round(arrivals["rtt_ms"], 3),
            "setup_late_ms": setup_late_ms,
            **meter.figures(),
        }

    def memory(self) -> dict[str, Any]:
        """Daemon RSS and Redis memory with N retries pending, put in by intake."""
        # A long retry-after keeps every entry pending through the run.
        maker = RecordMaker(seed=3, families=RETRYABLE, retry_after_s=3600.0)
        return self._fill("memory", self.sizes.memory, maker)

    def memory_bare(self) -> dict[str, Any]:
        """The same with bare records, whose payload is one float.

        The counterpart of a peer's bare job, which carries its due time alone.
        """
        maker = RecordMaker(seed=4, families=RETRYABLE, retry_after_s=3600.0, bare=True)
        return self._fill("memory_bare", self.sizes.memory_bare, maker)

    def _fill(self, name: str, n: int, maker: RecordMaker) -> dict[str, Any]:
        self._fresh()
        time.sleep(0.2)
        before = int(info(self.client)["used_memory"])
        with self._daemon(name) as daemon:
            rss_ready = daemon.memory_kib()
            with self._sampled(daemon, name), _Meter(self, daemon) as meter:
                start_ms = self.clock.now_ms()
                self._push(maker.batches(n, PUSH_CHUNK), pipelined=False)
                done, end_s = self._wait_ingested(n, daemon, slowest_per_s=500)
            time.sleep(1.0)  # clients' buffers are given back a moment later
            after = int(info(self.client)["used_memory"])
            rss = daemon.memory_kib()
            pending = int(cast(int, self.client.zcard(KEYS.retry)))
            breakdown = self._memory_breakdown(pending)
        seconds = (self.clock.to_redis_ms(end_s) - start_ms) / 1000
        return {
            "pending": pending,
            "capped": not done,
            "ingest_per_s": n / seconds,
            "daemon_rss_mb": rss["VmRSS"] * 1024 / 1e6,
            "daemon_peak_rss_mb": rss["VmHWM"] * 1024 / 1e6,
            "daemon_rss_at_start_mb": rss_ready["VmRSS"] * 1024 / 1e6,
            "redis_used_delta_mb": (after - before) / 1e6,
            "redis_bytes_per_pending": (after - before) / max(pending, 1),
            "breakdown_bytes_per_pending": breakdown,
            **meter.figures(),
        }

    # -- helpers ----------------------------------------------------------

    def _fresh(self) -> None:
        self.client.flushall()

    def _daemon(self, name: str) -> DaemonProcess:
        return DaemonProcess(
            self.config, self.work_dir / f"daemon-{name}.log", self.client
        )

    def _sampled(self, daemon: DaemonProcess, name: str) -> Sampler:
        sampler = Sampler(daemon.pid, self.profile_dir, name)
        self.profiles[name] = sampler
        return sampler

    def _cap_s(self, n: int, slowest_per_s: int = SLOWEST_PER_S) -> float:
        return 30.0 + n / slowest_per_s

    def _stat(self, *names: str) -> int:
        values = cast(list[bytes | None], self.client.hmget(KEYS.stats, list(names)))
        return sum(int(value) for value in values if value is not None)

    def _wait_ingested(
        self, n: int, daemon: DaemonProcess, slowest_per_s: int = SLOWEST_PER_S
    ) -> tuple[bool, float]:
        return wait_until(
            lambda: self._stat("received", "invalid") >= n,
            self._cap_s(n, slowest_per_s),
            daemon.check_alive,
        )

    def _ingest_result(
        self, n: int, start_ms: float, end_s: float, done: bool, meter: _Meter
    ) -> dict[str, Any]:
        seconds = (self.clock.to_redis_ms(end_s) - start_ms) / 1000
        handled = self._stat("received", "invalid")
        counts = self._stat_map()
        return {
            "records": n,
            "handled": handled,
            "seconds": round(seconds, 3),
            "per_s": handled / seconds,
            "capped": not done,
            "scheduled": counts.get("scheduled", 0),
            "dead_or_notified": counts.get("dead", 0) + counts.get("notified", 0),
            "invalid": counts.get("invalid", 0),
            "dispatched_meanwhile": counts.get("dispatched", 0),
            "categories": {
                name.removeprefix("category:"): count
                for name, count in counts.items()
                if name.startswith("category:")
            },
            **meter.figures(),
        }

    def _stat_map(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self.client.hgetall(KEYS.stats))
        return {name.decode(): int(value) for name, value in raw.items()}

    def _push(self, batches: Iterable[list[bytes]], *, pipelined: bool) -> None:
        """LPUSH the records, a chunk per command, as applications would."""
        with self.client.pipeline(transaction=False) as pipe:
            for count, batch in enumerate(batches, 1):
                pipe.lpush(KEYS.failures, *batch)
                if not pipelined or count % 10 == 0:
                    pipe.execute()
            pipe.execute()

    def _task_ids(self, n: int) -> list[str]:
        return [f"bench-{i:07d}-{i * 2654435761 % 2**32:08x}" for i in range(n)]

    def _write_tasks(self, ids: list[str], fields: Any) -> None:
        """Task records holding what re-dispatch reads: queue, payload, category."""
        sha = self.client.script_load(tasks.STORE)
        with self.client.pipeline(transaction=False) as pipe:
            for i, task_id in enumerate(ids):
                queue, text = fields(i)
                record = tasks.record_from(
                    {"queue": queue, "payload": text, "category": CATEGORY}
                )
                packed = tasks.pack(record)
                pipe.evalsha(sha, 2, KEYS.tasks, KEYS.names, task_id, packed)
                if i % WRITE_CHUNK == WRITE_CHUNK - 1:
                    pipe.execute()
            pipe.execute()

    def _schedule(self, ids: list[str], dues: list[int]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for first in range(0, len(ids), 10_000):
                last = first + 10_000
                chunk = zip(ids[first:last], dues[first:last], strict=True)
                pipe.zadd(KEYS.retry, dict(chunk))
            pipe.execute()

    def _queued(self, queues: list[str]) -> int:
        with self.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
            return sum(pipe.execute())

    def _dispatched_at(self, ids: list[str]) -> list[int]:
        found: list[int] = []
        for first in range(0, len(ids), WRITE_CHUNK):
            chunk = ids[first : first + WRITE_CHUNK]
            for fields in tasks.read_sync(self.client, KEYS, chunk, ["dispatched_at"]):
                value = fields and fields["dispatched_at"]
                found.append(int(value) if value else -1)
        return found

    @contextmanager
    def _consumer(self, queues: list[str], n: int) -> Iterator[_ConsumerOut]:
        out = _ConsumerOut(self.work_dir / "consumer.json")
        until_s = time.time() + LATENESS_LEAD_S + self.sizes.lateness_spread_s
        argv = [sys.executable, "-m", "bench.consumer", "--port", str(self.server.port)]
        argv += ["--count", str(n), "--until", str(until_s + LATENESS_TAIL_S)]
        argv += ["--out", str(out.path), *queues]
        out.proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE)
        try:
            assert out.proc.stdout is not None
            if out.proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("the lateness consumer did not start")
            yield out
        finally:
            if out.proc.poll() is None:
                out.proc.kill()
            out.proc.wait()

    def _wait_consumer(self, out: _ConsumerOut, spread_s: float) -> None:
        assert out.proc is not None
        out.proc.wait(LATENESS_LEAD_S + spread_s + LATENESS_TAIL_S + 10.0)

    def _memory_breakdown(self, pending: int) -> dict[str, float | str]:
        """Redis's own account of where the bytes went, per pending retry."""
        if not pending:
            return {}
        usage = {
            key.decode(): cast(int, self.client.memory_usage(key, samples=0) or 0)
            for key in self.client.scan_iter(match=f"{KEYS.prefix}:*", count=10_000)
        }
        task_records = usage.pop(KEYS.tasks, 0)
        retry_set = usage.pop(KEYS.retry, 0)
        encoding = self.client.object("encoding", KEYS.tasks)
        return {
            "task_record": round(task_records / pending, 1),
            "retry_set_entry": round(retry_set / pending, 1),
            "other_keys": round(sum(usage.values()) / pending, 1),
            "tasks_hash_encoding": _text(encoding),
        }


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@dataclass
class _ConsumerOut:
    path: Path
    proc: subprocess.Popen[bytes] | None = None


def _payload_text(i: int, queues: list[str]) -> str:
    rng = random.Random(i)
    return msgspec.json.encode(payload(rng, queues[i % len(queues)], i)).decode()


def _lateness_at_worker(
    arrivals: list[list[Any]], dues: list[int]
) -> list[float | None]:
    """Arrival minus due, per entry; None for an entry that never came."""
    late: list[float | None] = [None] * len(dues)
    for text, arrived_ms in arrivals:
        _, index, due = text.split()
        late[int(index)] = arrived_ms - int(due)
    return late


def _percentiles(values: list[float | None]) -> dict[str, float]:
    """Nearest-rank p50 and p99, max and min, and how many are missing."""
    ordered = sorted(value for value in values if value is not None)
    missing = len(values) - len(ordered)
    if not ordered:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "missing": missing}

    def rank(pct: float) -> float:
        return ordered[max(0, math.ceil(len(ordered) * pct / 100) - 1)]

    return {
        "p50": round(rank(50), 2),
        "p99": round(rank(99), 2),
        "max": round(ordered[-1], 2),
        "min": round(ordered[0], 2),
        "missing": missing,
    }
