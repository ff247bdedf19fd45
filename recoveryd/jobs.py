"""Periodic jobs: the scan, the analysis, adaptive backoff, recovery judgement.

Every daemon runs a `JobRunner`. A job's lease and its last run live in
Redis (``<p>:job:<name>``), on Redis's clock, so that with several daemons on
one Redis each job runs once per period; a restarted daemon neither repeats
a job that just ran nor skips one that is due (it runs at once); and a job
whose daemon was killed mid-run is taken over when its lease runs out.
Jobs are tried in priority order, one at a time: recovery judgement (cheap
bookkeeping), then the scan, then adaptive backoff, then the analysis.
Manual requests come before all of them: they are dispatched by the retry
loop, not here.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import msgspec
from redis.asyncio import Redis

from recoveryd import adaptive, analysis, scan
from recoveryd.config import Config, ScheduleSettings
from recoveryd.connection import REDIS_AWAY, Link, connect, time_ms
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts

__all__ = [
    "ADAPT",
    "ANALYZE",
    "JOB_NAMES",
    "SCAN",
    "SETTLE",
    "Clock",
    "Context",
    "Job",
    "JobBusy",
    "JobResult",
    "JobRunner",
    "RedisClock",
    "run_once",
    "upkeep_jobs",
]

log = logging.getLogger(__name__)

SETTLE = "settle"
SCAN = "scan"
ADAPT = "adapt"
ANALYZE = "analyze"
# In their order of priority.
JOB_NAMES = (SETTLE, SCAN, ADAPT, ANALYZE)

SETTLE_EVERY_S = 60.0
# A job holds its lease this long and renews it a third of the way through,
# so a job whose daemon died is taken over within a minute.
LEASE_MS = 60_000
# The longest the runner sleeps between looks: a safety net for a reloaded
# config with a shorter period, not a polling tick.
MAX_SLEEP_S = 300.0


class Clock(Protocol):
    """Where the runner and the jobs read the time (ms); tests bring their own."""

    async def now_ms(self) -> int: ...


class RedisClock:
    """Redis's clock (``TIME``): the one all daemons agree on."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def now_ms(self) -> int:
        return await time_ms(self._redis)


class JobResult(msgspec.Struct, kw_only=True):
    """What one run of a job did, in a line, and where its report is."""

    name: str = ""
    summary: str
    report: str | None = None
    started_ms: int = 0
    # A run that changed nothing is logged at DEBUG: a minute's "0 tasks
    # judged recovered" is not news.
    idle: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    every_s: Callable[[], float]
    run: Callable[[int], Awaitable[JobResult]]


class JobBusy(Exception):
    """Another daemon holds the job's lease: it is running there right now."""


@dataclass
class Context:
    """What the upkeep jobs work with; ``runtime`` is read afresh on each run."""

    redis: Redis
    scripts: Scripts
    runtime: Callable[[], Runtime]
    owner: str
    # The channels this daemon serves; none given: those the config turns on.
    channels: Callable[[], set[str]] = field(default=lambda: set())


def upkeep_jobs(ctx: Context) -> list[Job]:
    """The periodic jobs of a daemon, in priority order."""

    def schedule() -> ScheduleSettings:
        return ctx.runtime().config.schedule

    async def settle(now_ms: int) -> JobResult:
        count = await adaptive.settle(ctx.redis, ctx.scripts, ctx.runtime(), now_ms)
        summary = f"{count} re-dispatched task(s) judged recovered"
        return JobResult(summary=summary, idle=count == 0)

    async def run_scan(now_ms: int) -> JobResult:
        report, path = await scan.run_scan(
            ctx.redis,
            ctx.scripts,
            ctx.runtime(),
            now_ms,
            owner=ctx.owner,
            channels=ctx.channels(),
        )
        return JobResult(summary=report.summary, report=str(path))

    async def adapt(now_ms: int) -> JobResult:
        changes = await adaptive.adapt(ctx.redis, ctx.runtime(), now_ms)
        return JobResult(summary=adaptive.describe(changes), idle=not changes)

    async def analyze(now_ms: int) -> JobResult:
        report, path = await analysis.run_analysis(
            ctx.redis, ctx.scripts, ctx.runtime(), now_ms
        )
        return JobResult(summary=report.summary, report=str(path))

    return [
        Job(SETTLE, lambda: SETTLE_EVERY_S, settle),
        Job(SCAN, lambda: schedule().scan_every_s, run_scan),
        Job(ADAPT, lambda: ctx.runtime().config.adaptive.every_s, adapt),
        Job(ANALYZE, lambda: schedule().analyze_every_s, analyze),
    ]


@dataclass(frozen=True, slots=True)
class _Claim:
    granted: bool
    # When granted: the last run (ms, -1 for never); else when to ask again.
    at_ms: float


class JobRunner:
    """Runs each job when due, once across all daemons sharing one Redis."""

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        runtime: Callable[[], Runtime],
        owner: str,
        jobs: Sequence[Job],
        *,
        clock: Clock | None = None,
        link: Link | None = None,
        lease_ms: int = LEASE_MS,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._runtime = runtime
        self.owner = owner
        self.jobs = list(jobs)
        self.clock = clock or RedisClock(redis)
        self._link = link or Link()
        self._lease_ms = lease_ms
        # One run of a job at a time in this process: the lease is per
        # daemon, so it would let the periodic run and a run asked for now
        # overlap here.
        self._running: dict[str, anyio.Lock] = {}
        self.ran: list[JobResult] = []

    async def run(self) -> None:
        """Run due jobs, then sleep until the next is due; until cancelled."""
        while True:
            try:
                next_ms = await self.tick()
                now_ms = await self.clock.now_ms()
                self._link.ok("jobs")
            except REDIS_AWAY as exc:
                await self._link.wait_out(exc, "jobs")
                continue
            delay_s = min(max(next_ms - now_ms, 0.0) / 1000.0, MAX_SLEEP_S)
            await anyio.sleep(delay_s)

    async def tick(self) -> float:
        """Run every job that is due, in order; returns when the next is due."""
        next_ms = math.inf
        for job in self.jobs:
            period_ms = round(job.every_s() * 1000)
            now_ms = await self.clock.now_ms()
            claim = await self._claim(job.name, now_ms, period_ms, force=False)
            if claim.granted:
                await self._run(job, now_ms)
                next_ms = min(next_ms, now_ms + period_ms)
            else:
                next_ms = min(next_ms, claim.at_ms)
        return next_ms

    async def run_now(self, name: str) -> JobResult:
        """Run one job now, whether or not it is due (an operator's request).

        Raises `JobBusy` when another daemon is running it at this moment;
        the run counts as the period's, so the next comes a period later.
        """
        job = next((job for job in self.jobs if job.name == name), None)
        if job is None:
            raise KeyError(name)
        now_ms = await self.clock.now_ms()
        period_ms = round(job.every_s() * 1000)
        claim = await self._claim(name, now_ms, period_ms, force=True)
        if not claim.granted:
            raise JobBusy(f"the {name} job is running in another daemon now")
        return await self._run(job, now_ms)

    async def _claim(
        self, name: str, now_ms: int, period_ms: int, *, force: bool
    ) -> _Claim:
        reply = await self._scripts.job_claim(
            keys=[self._runtime().keys.job(name)],
            args=[self.owner, now_ms, period_ms, self._lease_ms, int(force)],
        )
        return _Claim(granted=bool(int(reply[0])), at_ms=float(reply[1]))

    async def _run(self, job: Job, started_ms: int) -> JobResult:
        async with self._running.setdefault(job.name, anyio.Lock()):
            return await self._run_alone(job, started_ms)

    async def _run_alone(self, job: Job, started_ms: int) -> JobResult:
        log.debug("running the %s job", job.name)
        outcome: JobResult | Exception
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew, job.name, name=f"lease:{job.name}")
            try:
                outcome = await job.run(started_ms)
            except Exception as exc:
                outcome = exc
            tg.cancel_scope.cancel()
        if isinstance(outcome, REDIS_AWAY):
            raise outcome  # the lease runs out and the job is tried again
        if isinstance(outcome, Exception):
            # A bug in one job, or a reply Redis refused (a key of the wrong
            # type), must not stop the others, nor run it again at once:
            # the failed run counts as the period's.
            log.error("the %s job failed", job.name, exc_info=outcome)
            outcome = JobResult(summary=f"failed: {type(outcome).__name__}: {outcome}")
        outcome.name, outcome.started_ms = job.name, started_ms
        await self._done(job.name, outcome)
        self.ran.append(outcome)
        level = logging.DEBUG if outcome.idle else logging.INFO
        log.log(level, "%s: %s", job.name, outcome.summary)
        return outcome

    async def _renew(self, name: str) -> None:
        key = self._runtime().keys.job(name)
        while True:
            await anyio.sleep(self._lease_ms / 3000)
            try:
                now_ms = await self.clock.now_ms()
                kept = await self._scripts.job_renew(
                    keys=[key], args=[self.owner, now_ms, self._lease_ms]
                )
            except REDIS_AWAY as exc:
                # The job itself meets the outage; the lease may lapse.
                log.debug("cannot renew the lease of the %s job: %s", name, exc)
                continue
            if not int(kept):
                log.warning("lost the lease of the %s job while running it", name)
                return

    async def _done(self, name: str, result: JobResult) -> None:
        kept = await self._scripts.job_done(
            keys=[self._runtime().keys.job(name)],
            args=[self.owner, result.started_ms, result.summary, result.report or ""],
        )
        if not int(kept):
            log.warning("the %s job's lease ran out before it finished", name)


def run_once(url: str, config: Config, name: str) -> JobResult:
    """Run one job now from the command line, under its lease like a daemon.

    Raises `JobBusy` if a daemon is running it at this moment.
    """
    result: JobResult = anyio.run(_run_once, url, config, name)
    return result


async def _run_once(url: str, config: Config, name: str) -> JobResult:
    redis = connect(url)
    try:
        scripts = Scripts(redis)
        runtime = Runtime.from_config(config)
        owner = f"cli:{socket.gethostname()}:{os.getpid()}"
        context = Context(redis, scripts, lambda: runtime, owner)
        runner = JobRunner(redis, scripts, lambda: runtime, owner, upkeep_jobs(context))
        return await runner.run_now(name)
    finally:
        await redis.aclose()
