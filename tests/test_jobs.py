"""Periodic jobs under a lease: once per period across daemons, on a test clock."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from itertools import pairwise

import pytest
from redis.exceptions import ResponseError

from recoveryd.config import parse_config
from recoveryd.jobs import (
    JOB_NAMES,
    Context,
    Job,
    JobBusy,
    JobResult,
    JobRunner,
    upkeep_jobs,
)
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts
from tests.conftest import wait_for

T0 = 1_700_000_000_000
PERIOD_MS = 10_000


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now = now_ms

    async def now_ms(self) -> int:
        return self.now


@pytest.fixture
def runtime() -> Runtime:
    return Runtime.from_config(parse_config(""))


class Counting:
    """A job body that records when it ran."""

    def __init__(self) -> None:
        self.starts: list[int] = []

    async def __call__(self, now_ms: int) -> JobResult:
        self.starts.append(now_ms)
        return JobResult(summary=f"run {len(self.starts)}")


def runner(ar, runtime, owner, clock, *jobs: Job) -> JobRunner:
    return JobRunner(ar, Scripts(ar), lambda: runtime, owner, jobs, clock=clock)


async def test_two_runners_run_each_job_once_per_period(ar, runtime):
    clock = FakeClock()
    body = Counting()
    job = Job("count", lambda: PERIOD_MS / 1000, body)
    a = runner(ar, runtime, "a", clock, job)
    b = runner(ar, runtime, "b", clock, job)

    for step_ms in range(0, 35_000, 1_000):
        clock.now = T0 + step_ms
        await a.tick()
        await b.tick()

    assert body.starts == [T0, T0 + 10_000, T0 + 20_000, T0 + 30_000]
    assert len(a.ran) + len(b.ran) == 4
    state = await ar.hgetall(runtime.keys.job("count"))
    assert int(state[b"runs"]) == 4
    assert int(state[b"last_run"]) == T0 + 30_000
    assert b"owner" not in state  # the lease is given back after each run


async def test_restart_neither_repeats_nor_skips(ar, runtime):
    clock = FakeClock()
    body = Counting()
    job = Job("count", lambda: PERIOD_MS / 1000, body)
    await runner(ar, runtime, "first", clock, job).tick()

    # A restarted daemon (a new owner) a second later: the job just ran.
    clock.now = T0 + 1_000
    restarted = runner(ar, runtime, "second", clock, job)
    next_ms = await restarted.tick()
    assert body.starts == [T0]
    assert next_ms == T0 + PERIOD_MS

    # Down for three periods: on start it runs at once, and only once.
    clock.now = T0 + 3 * PERIOD_MS + 500
    again = runner(ar, runtime, "third", clock, job)
    await again.tick()
    await again.tick()
    assert body.starts == [T0, T0 + 3 * PERIOD_MS + 500]


async def test_a_job_left_running_by_a_killed_daemon_is_taken_over(ar, runtime):
    clock = FakeClock()
    scripts = Scripts(ar)
    key = runtime.keys.job("count")
    # "dead" took the lease and was killed mid-run: no last run recorded.
    await scripts.job_claim(keys=[key], args=["dead", T0, PERIOD_MS, 60_000, 0])
    body = Counting()
    job = Job("count", lambda: PERIOD_MS / 1000, body)
    live = runner(ar, runtime, "live", clock, job)

    clock.now = T0 + 5_000
    assert await live.tick() == T0 + 60_000  # asks again when the lease ends
    assert body.starts == []
    clock.now = T0 + 60_001
    await live.tick()
    assert body.starts == [T0 + 60_001]


async def test_run_now_is_refused_while_another_daemon_runs_the_job(ar, runtime):
    clock = FakeClock()
    scripts = Scripts(ar)
    key = runtime.keys.job("count")
    await scripts.job_claim(keys=[key], args=["busy", T0, PERIOD_MS, 60_000, 0])
    body = Counting()
    operator = runner(ar, runtime, "cli", clock, Job("count", lambda: 10.0, body))

    with pytest.raises(JobBusy):
        await operator.run_now("count")
    clock.now = T0 + 61_000
    result = await operator.run_now("count")
    assert result.summary == "run 1"


async def test_run_now_counts_as_the_periods_run(ar, runtime):
    clock = FakeClock()
    body = Counting()
    job = Job("count", lambda: PERIOD_MS / 1000, body)
    daemon = runner(ar, runtime, "daemon", clock, job)
    await daemon.tick()

    clock.now = T0 + 4_000
    await runner(ar, runtime, "cli", clock, job).run_now("count")
    clock.now = T0 + PERIOD_MS
    assert await daemon.tick() == T0 + 4_000 + PERIOD_MS
    assert body.starts == [T0, T0 + 4_000]


@pytest.mark.parametrize(
    "error",
    [ZeroDivisionError("a bug"), ResponseError("WRONGTYPE a key of the wrong type")],
)
async def test_a_failing_job_does_not_stop_the_next_one(ar, runtime, error):
    clock = FakeClock()
    body = Counting()

    async def broken(now_ms: int) -> JobResult:
        raise error

    jobs = (Job("broken", lambda: 10.0, broken), Job("count", lambda: 10.0, body))
    one = runner(ar, runtime, "one", clock, *jobs)
    await one.tick()
    assert body.starts == [T0]
    assert one.ran[0].summary.startswith(f"failed: {type(error).__name__}")
    job = await ar.hgetall(runtime.keys.job("broken"))
    assert b"owner" not in job, "its lease is given up"
    # The failed run counts as the period's: no hot loop on a bug.
    clock.now = T0 + 1_000
    await one.tick()
    assert [r.name for r in one.ran] == ["broken", "count"]


async def test_upkeep_jobs_run_in_priority_order(ar, runtime, tmp_path):
    runtime.config.paths.state_dir = str(tmp_path / "state")
    clock = FakeClock()
    context = Context(ar, Scripts(ar), lambda: runtime, "me")
    one = JobRunner(
        ar, Scripts(ar), lambda: runtime, "me", upkeep_jobs(context), clock=clock
    )
    await one.tick()
    assert tuple(result.name for result in one.ran) == JOB_NAMES
    assert JOB_NAMES.index("scan") < JOB_NAMES.index("analyze")
    scan = one.ran[1]
    assert scan.report is not None and "failure_processing_" in scan.report


async def test_upkeep_that_changed_nothing_is_logged_only_at_debug(
    ar, runtime, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG, logger="recoveryd.jobs")
    runtime.config.paths.state_dir = str(tmp_path / "state")
    context = Context(ar, Scripts(ar), lambda: runtime, "me")
    one = JobRunner(
        ar, Scripts(ar), lambda: runtime, "me", upkeep_jobs(context), clock=FakeClock()
    )
    await one.tick()

    levels = {r.getMessage().split(":")[0]: r.levelno for r in caplog.records}
    assert levels["settle"] == levels["adapt"] == logging.DEBUG, "nothing to do"
    assert levels["scan"] == logging.INFO, "a scan always writes a report"
    assert not [
        r
        for r in caplog.records
        if "settle" in r.getMessage() and r.levelno > logging.DEBUG
    ], "nor that it ran"


def test_two_daemons_run_each_periodic_job_once(r, keys, start_daemon, tmp_path):
    config = '[schedule]\nscan_every = "1s"\n'
    start_daemon(config, name="a")
    start_daemon(config, name="b")

    wait_for(
        lambda: int(r.hget(keys.job("scan"), "runs") or 0) >= 4,
        what="four scans",
    )
    folder = tmp_path / "state" / "reports" / "failure_processing"
    wait_for(
        lambda: (
            len(list(folder.glob("*.json"))) >= int(r.hget(keys.job("scan"), "runs"))
        ),
        what="the last report",
    )
    reports = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    times = sorted(
        datetime.fromisoformat(report["generated_at"].replace("Z", "+00:00"))
        for report in reports
    )
    gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
    assert min(gaps) >= 1.0, "two scans ran within one period"
    # The analysis (every 6 h) ran once between the two daemons.
    assert int(r.hget(keys.job("analyze"), "runs")) == 1
    analyses = tmp_path / "state" / "reports" / "failure_analysis"
    assert len(list(analyses.glob("*.json"))) == 1
