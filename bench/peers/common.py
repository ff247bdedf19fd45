"""What every peer's benchmark shares: sizes, key names, result rows, statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

__all__ = [
    "FULL",
    "STARTS_KEY",
    "TINY",
    "DispatchResult",
    "IdleResult",
    "JobArgs",
    "LatenessResult",
    "Payload",
    "Row",
    "Sizes",
    "Variant",
    "decode_start",
    "encode_start",
    "job_args",
    "percentile",
]

# Every job, of either peer, pushes "<due_s> <start_s>" here when it starts.
STARTS_KEY = "bench:peers:starts"

# A job's second argument: what ``bench.workload.payload`` makes for recoveryd's
# records, ~113 bytes as JSON. The job ignores it; it is there to be stored.
Payload = dict[str, Any]
JobArgs = tuple[float] | tuple[float, Payload]


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each measurement does, and how long it may take."""

    dispatch_jobs: int
    dispatch_cap_s: float  # stop counting a slow peer after this long past due
    lateness_jobs: int
    lateness_spread_s: float
    lateness_tail_s: float  # how long after the last due time to wait for stragglers
    idle_s: float
    settle_s: float  # quiet time after the worker is ready, before idle is sampled
    memory_jobs: int
    rq_worker_classes: tuple[str, ...]


FULL = Sizes(
    dispatch_jobs=20_000,
    dispatch_cap_s=30.0,
    lateness_jobs=2_000,
    lateness_spread_s=20.0,
    lateness_tail_s=40.0,  # RQ forking ~50 jobs/s falls ~1,000 behind 100/s
    idle_s=60.0,
    settle_s=1.0,
    memory_jobs=100_000,
    rq_worker_classes=("Worker", "SimpleWorker"),
)

TINY = Sizes(
    dispatch_jobs=200,
    dispatch_cap_s=5.0,
    lateness_jobs=50,
    lateness_spread_s=2.0,
    lateness_tail_s=3.0,
    idle_s=2.0,
    settle_s=0.5,
    memory_jobs=1_000,
    rq_worker_classes=("Worker",),
)


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of running a peer's worker: a setting and, for RQ, a worker class."""

    setting: str  # "default" or "tuned"
    knob: str  # the setting in words, e.g. "poll_delay=0.05s"
    worker: str  # how jobs run: "asyncio task", "fork per job", "in-process"
    argv: tuple[str, ...]  # extra arguments for the peer's worker entry point


class DispatchResult(TypedDict):
    jobs: int
    done: int
    seconds: float
    per_s: float
    capped: bool
    enqueue_late_s: float  # > 0 when enqueueing ran past the due time


class LatenessResult(TypedDict):
    jobs: int
    done: int  # the rest never started; each counts late by the time waited
    p50_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    early: int  # jobs started before their due time


class IdleResult(TypedDict):
    seconds: float
    commands_per_s: float
    commands: dict[str, int]
    worker_cpu_pct: float
    redis_cpu_pct: float


class Row(TypedDict):
    peer: str
    setting: str
    knob: str
    worker: str
    dispatch: DispatchResult
    lateness: LatenessResult
    idle: IdleResult
    bytes_per_pending: float  # each job with its payload, as recoveryd's tasks
    bytes_per_pending_bare: float  # each job with ``due_s`` alone


def job_args(
    dues_s: Sequence[float], payloads: Sequence[Payload] | None
) -> list[JobArgs]:
    """Each job's arguments: its due time, then its payload unless bare (None)."""
    if payloads is None:
        return [(due_s,) for due_s in dues_s]
    return list(zip(dues_s, payloads, strict=True))


def encode_start(due_s: float, start_s: float) -> str:
    return f"{due_s!r} {start_s!r}"


def decode_start(entry: str) -> tuple[float, float]:
    due, start = entry.split()
    return float(due), float(start)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
