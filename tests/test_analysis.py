"""The analysis of a synthetic day with known proportions, on a real Redis."""

from __future__ import annotations

import json
from collections import Counter

from recoveryd import history
from recoveryd.analysis import build_report, run_analysis
from recoveryd.config import parse_config
from recoveryd.scripts import Scripts

NOW = 1_700_000_000_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

NETWORK = "recoverable_network"
SYSTEM = "recoverable_system"
TEMPORARY = "recoverable_temporary"

# The last 24 h: 9,000 failures.
TODAY = Counter(
    {
        "received": 9_000,
        "scheduled": 7_000,
        "dispatched": 6_500,
        "dead": 200,
        "notified": 2_000,
        "invalid": 25,
        f"category:{NETWORK}": 4_000,
        f"category:{TEMPORARY}": 1_500,
        "category:unrecoverable_data": 1_200,
        f"category:{SYSTEM}": 1_000,
        "category:rate_limited": 500,
        "category:unrecoverable_config": 500,
        "category:unrecoverable_business": 300,
        "task:payments.charge": 3_500,
        "task:orders.sync": 2_000,
        "task:reports.build": 2_000,
        "task:emails.send": 1_500,
        "pattern:network.connection_refused": 3_000,
        "pattern:network.timeout": 1_000,
        "pattern:temporary.http_503": 1_500,
        "pattern:data.malformed_json": 1_200,
        "pattern:system.disk_full": 1_000,
        "pattern:rate.http_429": 500,
        "pattern:config.auth_failed": 500,
        "pattern:business.not_found": 300,
        "host:payments.internal": 3_000,
        "host:db.internal": 600,
        f"recovered:{NETWORK}": 460,
        f"refailed:{NETWORK}": 40,
        f"reported_ok:{NETWORK}": 100,
        f"recovered:{TEMPORARY}": 300,
        f"refailed:{TEMPORARY}": 100,
        f"recovered:{SYSTEM}": 40,
        f"refailed:{SYSTEM}": 60,
    }
)
# The 24 h before: 10,000 failures, network only a fifth of them.
YESTERDAY = Counter(
    {
        "received": 10_000,
        f"category:{NETWORK}": 2_010,
        f"category:{TEMPORARY}": 3_000,
        "category:unrecoverable_data": 1_990,
        f"category:{SYSTEM}": 1_000,
        "category:rate_limited": 1_000,
        "category:unrecoverable_config": 600,
        "category:unrecoverable_business": 400,
        "task:payments.charge": 2_000,
        "task:orders.sync": 8_000,
        "pattern:temporary.http_503": 3_000,
    }
)


def spread(counts: Counter[str], hours: int = 24) -> list[Counter[str]]:
    """The day's counts split over its hours, unevenly, summing exactly."""
    parts: list[Counter[str]] = [Counter() for _ in range(hours)]
    for name, total in counts.items():
        weights = [1 + (hour * 7 + len(name)) % 5 for hour in range(hours)]
        given = 0
        for hour, weight in enumerate(weights[:-1]):
            share = total * weight // sum(weights)
            parts[hour][name] = share
            given += share
        parts[-1][name] = total - given
    return parts


async def write_day(ar, keys, counts: Counter[str], day_end_ms: int) -> None:
    async with ar.pipeline(transaction=False) as pipe:
        for hour, part in enumerate(spread(counts)):
            # Each hour's counts land in one minute of that hour.
            at_ms = day_end_ms - DAY_MS + hour * HOUR_MS + 30 * 60_000
            history.write(pipe, keys, at_ms, +part)
        await pipe.execute()


async def test_a_synthetic_day_gives_the_expected_figures(ar, runtime):
    keys = runtime.keys
    await write_day(ar, keys, TODAY, NOW)
    await write_day(ar, keys, YESTERDAY, NOW - DAY_MS)
    # Older than both windows: not counted anywhere.
    await write_day(ar, keys, Counter({"received": 999}), NOW - 2 * DAY_MS)
    await ar.hset(
        keys.base_delays,
        mapping={
            NETWORK: 24,
            f"{NETWORK}:from": 30,
            SYSTEM: 450,
            f"{SYSTEM}:from": 300,
        },
    )

    report, path = await run_analysis(ar, Scripts(ar), runtime, NOW)

    assert report.totals["received"] == 9_000
    assert report.previous_totals["received"] == 10_000
    assert report.totals["refailed"] == 200
    assert (report.trend.change, report.trend.direction) == (-0.1, "down")
    shares = {s.name: (s.count, s.share, s.previous_share) for s in report.by_category}
    assert shares[NETWORK] == (4_000, 0.4444, 0.201)
    assert shares[TEMPORARY] == (1_500, 0.1667, 0.3)
    assert [s.name for s in report.by_category][:2] == [NETWORK, TEMPORARY]
    assert report.by_task[0].name == "payments.charge"
    assert report.by_task[0].share == 0.3889
    assert report.by_pattern[0].name == "network.connection_refused"
    assert (report.recoverable.share, report.recoverable.previous_share) == (
        0.7778,
        0.701,
    )
    rates = {r.category: (r.recovered, r.refailed, r.rate) for r in report.success_rate}
    assert rates == {
        NETWORK: (460, 40, 0.92),
        SYSTEM: (40, 60, 0.4),
        TEMPORARY: (300, 100, 0.75),
    }
    delays = {d.category: d.current_s for d in report.base_delays}
    assert delays[NETWORK] == 24 and delays[SYSTEM] == 450
    assert report.network_hosts[0].host == "payments.internal"

    assert report.insights == [
        "9,000 failures in the last 24 h, down 10.0% from 10,000 in the 24 h before",
        "network failures are 44.4% of the total, up from 20.1%; check connectivity "
        "to payments.internal (75.0% of network failures)",
        "temporary failures are 16.7% of the total, down from 30.0%; a dependency is "
        "overloaded or restarting; check its health",
        "data failures are 13.3% of the total, down from 19.9%; check what the "
        "producers send; these are not retried",
        "system failures are 11.1% of the total, up from 10.0%; check memory, disk "
        "space and worker limits on the workers' hosts",
        "network retries recovered 92.0% of tasks (460 of 500); base delay lowered "
        "to 24 s (configured 30 s)",
        "temporary retries recovered 75.0% of tasks (300 of 400); base delay stays "
        "at 3 min",
        "system retries recovered 40.0% of tasks (40 of 100); base delay raised to "
        "7.5 min (configured 5 min)",
        "77.8% of failures were recoverable and retried (7,000); the rest need a "
        "person",
        "task payments.charge accounts for 38.9% of failures (3,500)",
        "the most common pattern is network.connection_refused: 33.3% (3,000)",
        "200 tasks ran out of retries and are dead; `recoveryd retry --dead` "
        "requeues them once the cause is fixed",
        "25 records were not valid failure records and were parked on "
        "recoveryd:invalid",
    ]
    written = json.loads(path.read_text())
    assert written["insights"] == report.insights
    assert path.name == "failure_analysis_20231114T221320Z.json"


async def test_a_minute_belongs_to_one_window_only(ar, runtime):
    keys = runtime.keys
    start = NOW - DAY_MS
    async with ar.pipeline(transaction=False) as pipe:
        history.write(pipe, keys, start + 60_000, Counter(received=3))
        history.write(pipe, keys, start - 60_000, Counter(received=5))
        await pipe.execute()

    now, before = await history.read_windows(ar, keys, NOW, DAY_MS)

    assert (now["received"], before["received"]) == (3, 5)


def test_a_quiet_day_says_so():
    config = parse_config("")
    report = build_report(Counter(), Counter(), config, {}, NOW, DAY_MS)
    assert report.insights == ["no failures in the last 24 h"]
    assert report.trend.direction == "new"


def test_a_new_category_has_no_trend_to_compare():
    config = parse_config("")
    today = Counter({"received": 10, f"category:{NETWORK}": 10})
    report = build_report(today, Counter(), config, {}, NOW, DAY_MS)
    assert report.insights[:2] == [
        "10 failures in the last 24 h; none in the 24 h before",
        "network failures are 100.0% of the total; check network stability",
    ]
