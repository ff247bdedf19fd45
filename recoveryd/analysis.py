"""Pattern analysis: what failed, how it is changing, and what to look at.

Every ``[schedule] analyze_every`` (6 h), over the last ``analyze_window``
(24 h) and the window before it, read from the per-minute history: totals;
the distribution by category, by task and by matched pattern; the share that
was recoverable (retried); the success rate of retries per category; the
trend against the previous window; the current base delays; and insights in
plain language, each with its numbers. Written to
``reports/failure_analysis/failure_analysis_<UTC timestamp>.json``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import cast

import msgspec
from redis.asyncio import Redis

from recoveryd import adaptive, history
from recoveryd.adaptive import Delay
from recoveryd.categories import (
    BUSINESS,
    CONFIG,
    DATA,
    NETWORK,
    RATE_LIMITED,
    SYSTEM,
    TEMPORARY,
)
from recoveryd.config import Config
from recoveryd.notification import iso_utc
from recoveryd.reports import Window, write_report
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts

__all__ = [
    "AnalysisReport",
    "Share",
    "build_report",
    "category_label",
    "insights",
    "run_analysis",
]

KIND = "failure_analysis"
TOP = 10
# A category gets its own insight when it is at least this share of the
# total, or its share moved by at least this much.
NOTABLE_SHARE = 0.10
NOTABLE_CHANGE = 0.10
# Below this change (in share or in volume) a figure is "about the same".
STEADY = 0.01
MAX_CATEGORY_INSIGHTS = 4

_LABELS = {
    NETWORK: "network",
    SYSTEM: "system",
    TEMPORARY: "temporary",
    DATA: "data",
    CONFIG: "config",
    BUSINESS: "business",
    RATE_LIMITED: "rate-limited",
}
_ADVICE = {
    SYSTEM: "check memory, disk space and worker limits on the workers' hosts",
    TEMPORARY: "a dependency is overloaded or restarting; check its health",
    RATE_LIMITED: "lower the request rate or ask the provider for a higher quota",
    DATA: "check what the producers send; these are not retried",
    CONFIG: "check credentials and settings; these are not retried",
    BUSINESS: "these are refusals by business rules; review them with their owners",
}
_OUTCOMES = ("received", "scheduled", "dispatched", "recovered", "dead")
_MORE = ("notified", "invalid", "silenced")


class Share(msgspec.Struct, kw_only=True):
    """One category, task or pattern: its count and share, now and before."""

    name: str
    count: int
    share: float
    previous_count: int
    previous_share: float


class Trend(msgspec.Struct, kw_only=True):
    received: int
    previous_received: int
    change: float | None
    direction: str


class Recoverable(msgspec.Struct, kw_only=True):
    count: int
    share: float
    previous_share: float


class SuccessRate(msgspec.Struct, kw_only=True):
    category: str
    recovered: int
    refailed: int
    reported_ok: int
    rate: float | None


class BaseDelay(msgspec.Struct, kw_only=True):
    category: str
    configured_s: float
    current_s: float


class Host(msgspec.Struct, kw_only=True):
    host: str
    count: int
    share_of_network: float


class AnalysisReport(msgspec.Struct, kw_only=True):
    type: str = KIND
    generated_at: str
    window: Window
    previous_window: Window
    totals: dict[str, int]
    previous_totals: dict[str, int]
    trend: Trend
    by_category: list[Share]
    by_task: list[Share]
    by_pattern: list[Share]
    recoverable: Recoverable
    success_rate: list[SuccessRate]
    base_delays: list[BaseDelay]
    network_hosts: list[Host]
    insights: list[str]
    summary: str = ""


def category_label(name: str) -> str:
    """``network`` for ``recoverable_network``; an operator's own name as is."""
    return _LABELS.get(name, name.replace("_", " "))


async def run_analysis(
    redis: Redis, scripts: Scripts, runtime: Runtime, now_ms: int
) -> tuple[AnalysisReport, Path]:
    """Analyse the window ending at ``now_ms`` and the one before; report it."""
    config, keys = runtime.config, runtime.keys
    # Judge the recoveries that are due first, so the rates are current.
    await adaptive.settle(redis, scripts, runtime, now_ms)
    window_ms = round(config.schedule.analyze_window_s * 1000)
    current, previous = await history.read_windows(redis, keys, now_ms, window_ms)
    stored = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(keys.base_delays))
    delays = adaptive.current_delays(stored, config)
    report = build_report(current, previous, config, delays, now_ms, window_ms)
    path = write_report(config.state_dir, KIND, now_ms, report)
    return report, path


def build_report(
    current: Counter[str],
    previous: Counter[str],
    config: Config,
    delays: dict[str, Delay],
    now_ms: int,
    window_ms: int,
) -> AnalysisReport:
    """The analysis of two windows of history counters (pure: no Redis)."""
    report = AnalysisReport(
        generated_at=iso_utc(now_ms),
        window=Window.between(now_ms - window_ms, now_ms),
        previous_window=Window.between(now_ms - 2 * window_ms, now_ms - window_ms),
        totals=_totals(current),
        previous_totals=_totals(previous),
        trend=_trend(current["received"], previous["received"]),
        by_category=_shares(current, previous, "category"),
        by_task=_shares(current, previous, "task")[:TOP],
        by_pattern=_shares(current, previous, "pattern")[:TOP],
        recoverable=_recoverable(current, previous, config),
        success_rate=_success(current),
        base_delays=[
            BaseDelay(category=name, configured_s=d.configured_s, current_s=d.current_s)
            for name, d in delays.items()
        ],
        network_hosts=_hosts(current),
        insights=[],
    )
    report.insights = insights(report, config, report.window.hours)
    report.summary = _summary(report)
    return report


def _totals(counts: Counter[str]) -> dict[str, int]:
    totals = {name: counts[name] for name in (*_OUTCOMES, *_MORE)}
    totals["refailed"] = sum(history.by_prefix(counts, "refailed").values())
    totals["reported_ok"] = sum(history.by_prefix(counts, "reported_ok").values())
    return totals


def _trend(now: int, before: int) -> Trend:
    change = (now - before) / before if before else None
    direction = "new" if change is None else "steady"
    if change is not None and abs(change) >= STEADY:
        direction = "up" if change > 0 else "down"
    return Trend(
        received=now,
        previous_received=before,
        change=_round(change),
        direction=direction,
    )


def _shares(current: Counter[str], previous: Counter[str], kind: str) -> list[Share]:
    now = history.by_prefix(current, kind)
    before = history.by_prefix(previous, kind)
    total_now = max(current["received"], sum(now.values()), 1)
    total_before = max(previous["received"], sum(before.values()), 1)
    names = sorted(now.keys() | before.keys(), key=lambda n: (-now[n], -before[n], n))
    return [
        Share(
            name=name,
            count=now[name],
            share=_round(now[name] / total_now) or 0.0,
            previous_count=before[name],
            previous_share=_round(before[name] / total_before) or 0.0,
        )
        for name in names
    ]


def _recoverable(
    current: Counter[str], previous: Counter[str], config: Config
) -> Recoverable:
    def retried(counts: Counter[str]) -> tuple[int, float]:
        by_category = history.by_prefix(counts, "category")
        count = sum(
            number
            for name, number in by_category.items()
            if name in config.categories and config.categories[name].retries
        )
        total = max(counts["received"], sum(by_category.values()))
        return count, (count / total if total else 0.0)

    count, share = retried(current)
    _, before = retried(previous)
    return Recoverable(
        count=count, share=_round(share) or 0.0, previous_share=_round(before) or 0.0
    )


def _success(current: Counter[str]) -> list[SuccessRate]:
    reported = history.by_prefix(current, "reported_ok")
    out: list[SuccessRate] = []
    for name, rate in adaptive.rates(current).items():
        out.append(
            SuccessRate(
                category=name,
                recovered=rate.recovered,
                refailed=rate.refailed,
                reported_ok=reported[name],
                rate=_round(rate.rate),
            )
        )
    return out


def _hosts(current: Counter[str]) -> list[Host]:
    hosts = history.by_prefix(current, "host")
    network = max(current[f"category:{NETWORK}"], sum(hosts.values()), 1)
    return [
        Host(host=host, count=number, share_of_network=_round(number / network) or 0.0)
        for host, number in hosts.most_common(TOP)
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def _span(hours: float) -> str:
    return f"{hours:g} h"


def insights(report: AnalysisReport, config: Config, hours: float) -> list[str]:
    """Plain-language findings, most important first, each with its numbers."""
    trend = report.trend
    if trend.received == 0:
        return [f"no failures in the last {_span(hours)}"]
    found = [_volume(trend, hours)]
    found += _category_insights(report, bool(trend.previous_received))
    found += _success_insights(report, config)
    found += _other_insights(report, config)
    return found


def _volume(trend: Trend, hours: float) -> str:
    span = _span(hours)
    head = f"{trend.received:,} failures in the last {span}"
    if trend.change is None:
        return f"{head}; none in the {span} before"
    if trend.direction == "steady":
        return f"{head}, about the same as the {trend.previous_received:,} before"
    word = "up" if trend.direction == "up" else "down"
    return (
        f"{head}, {word} {_pct(abs(trend.change))} from "
        f"{trend.previous_received:,} in the {span} before"
    )


def _category_insights(report: AnalysisReport, had_before: bool) -> list[str]:
    found: list[str] = []
    for share in report.by_category:
        moved = share.share - share.previous_share
        notable = share.share >= NOTABLE_SHARE or (
            had_before and abs(moved) >= NOTABLE_CHANGE
        )
        if not notable or share.count == 0:
            continue
        label = category_label(share.name)
        text = f"{label} failures are {_pct(share.share)} of the total"
        if had_before and abs(moved) >= STEADY:
            word = "up" if moved > 0 else "down"
            text += f", {word} from {_pct(share.previous_share)}"
        elif had_before:
            text += f", as before ({_pct(share.previous_share)})"
        advice = _advice(share.name, report)
        found.append(f"{text}; {advice}" if advice else text)
        if len(found) == MAX_CATEGORY_INSIGHTS:
            break
    return found


def _advice(category: str, report: AnalysisReport) -> str:
    if category == NETWORK:
        if report.network_hosts:
            top = report.network_hosts[0]
            return (
                f"check connectivity to {top.host} "
                f"({_pct(top.share_of_network)} of network failures)"
            )
        return "check network stability"
    return _ADVICE.get(category, "")


def _success_insights(report: AnalysisReport, config: Config) -> list[str]:
    delays = {d.category: d for d in report.base_delays}
    found: list[str] = []
    most_first = sorted(report.success_rate, key=lambda r: -(r.recovered + r.refailed))
    for item in most_first:
        if item.rate is None:
            continue
        samples = item.recovered + item.refailed
        text = (
            f"{category_label(item.category)} retries recovered "
            f"{_pct(item.rate)} of tasks ({item.recovered:,} of {samples:,})"
        )
        delay = delays.get(item.category)
        if delay is not None and delay.current_s != delay.configured_s:
            word = "raised" if delay.current_s > delay.configured_s else "lowered"
            text += (
                f"; base delay {word} to {_seconds(delay.current_s)} "
                f"(configured {_seconds(delay.configured_s)})"
            )
        elif samples < config.adaptive.min_samples:
            needed = config.adaptive.min_samples
            text += f"; too few to adapt the base delay (needs {needed})"
        elif delay is not None:
            text += f"; base delay stays at {_seconds(delay.current_s)}"
        found.append(text)
    return found


def _other_insights(report: AnalysisReport, config: Config) -> list[str]:
    found: list[str] = []
    recoverable = report.recoverable
    found.append(
        f"{_pct(recoverable.share)} of failures were recoverable and retried "
        f"({recoverable.count:,}); the rest need a person"
    )
    if report.by_task and report.by_task[0].share >= NOTABLE_SHARE * 2:
        top = report.by_task[0]
        found.append(
            f"task {top.name} accounts for {_pct(top.share)} of failures "
            f"({top.count:,})"
        )
    if report.by_pattern:
        top = report.by_pattern[0]
        found.append(
            f"the most common pattern is {top.name}: {_pct(top.share)} ({top.count:,})"
        )
    dead = report.totals["dead"]
    if dead:
        found.append(
            f"{dead:,} tasks ran out of retries and are dead; "
            "`recoveryd retry --dead` requeues them once the cause is fixed"
        )
    invalid = report.totals["invalid"]
    if invalid:
        found.append(
            f"{invalid:,} records were not valid failure records and were parked "
            f"on {config.redis.prefix}:invalid"
        )
    return found


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{round(value / 3600, 2):g} h"
    if value >= 60:
        return f"{round(value / 60, 1):g} min"
    return f"{round(value, 1):g} s"


def _summary(report: AnalysisReport) -> str:
    trend = report.trend
    text = f"{trend.received:,} failures"
    if trend.change is not None:
        text += f" ({'+' if trend.change >= 0 else ''}{trend.change * 100:.1f}%)"
    if report.by_category:
        top = report.by_category[0]
        text += f"; top: {category_label(top.name)} {_pct(top.share)}"
    return text
