"""Adaptive backoff: each retried category's base delay follows its success.

How a retry turned out: a re-dispatched task that fails again counts
against its category (``refailed:<c>``, counted by intake); one whose
application reports success is recovered at once (intake); one that does
neither within ``[schedule] recovery_window`` is judged recovered here
(`settle`). The success rate of a category is recovered / (recovered +
refailed).

Every ``[adaptive] every``, a category with at least ``min_samples``
outcomes in that period gets a new base delay: ×``low_factor`` (1.5) when
its success rate is below ``low_rate`` (0.6), ×``high_factor`` (0.8) above
``high_rate`` (0.9), kept between ``min_scale`` and ``max_scale`` times its
configured ``base_delay`` and never above its ``max_delay``. The current
delays live in the ``<p>:base_delay`` hash: ``<c>`` is the delay in seconds
and ``<c>:from`` the configured base_delay it was adapted from, so a new
base_delay in the config starts the category afresh. Intake reads the hash
once per batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Mapping
from typing import cast

import msgspec
from redis.asyncio import Redis

from recoveryd import history
from recoveryd.categories import CategorySettings
from recoveryd.config import AdaptiveSettings, Config
from recoveryd.history import KEEP_MS
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts

__all__ = [
    "Change",
    "Delay",
    "Rate",
    "adapt",
    "bounds",
    "current_delays",
    "describe",
    "effective_delays",
    "next_delay",
    "rates",
    "settle",
]

log = logging.getLogger(__name__)

SETTLE_BATCH = 1000


class Rate(msgspec.Struct, kw_only=True):
    """How a category's retries turned out: recovered, or failed again."""

    recovered: int = 0
    refailed: int = 0

    @property
    def samples(self) -> int:
        return self.recovered + self.refailed

    @property
    def rate(self) -> float | None:
        return self.recovered / self.samples if self.samples else None


class Change(msgspec.Struct, kw_only=True):
    """One category's base delay moved by the rule."""

    category: str
    before_s: float
    after_s: float
    rate: float
    samples: int


class Delay(msgspec.Struct, kw_only=True):
    """A category's base delay as configured and as now used."""

    configured_s: float
    current_s: float


def rates(counts: Counter[str]) -> dict[str, Rate]:
    """Success per category from history counters (``recovered:<c>`` ...)."""
    out: dict[str, Rate] = {}
    for category, number in history.by_prefix(counts, "recovered").items():
        out.setdefault(category, Rate()).recovered = number
    for category, number in history.by_prefix(counts, "refailed").items():
        out.setdefault(category, Rate()).refailed = number
    return dict(sorted(out.items()))


def bounds(
    category: CategorySettings, settings: AdaptiveSettings
) -> tuple[float, float]:
    """The lowest and highest base delay (s) the rule may give a category."""
    configured = category.base_delay_s
    low = configured * settings.min_scale
    high = max(min(configured * settings.max_scale, category.max_delay_s), configured)
    return low, high


def next_delay(
    current_s: float,
    rate: Rate,
    category: CategorySettings,
    settings: AdaptiveSettings,
) -> float:
    """The base delay after one period with these outcomes."""
    if rate.samples < settings.min_samples or rate.rate is None:
        return current_s
    if rate.rate < settings.low_rate:
        proposed = current_s * settings.low_factor
    elif rate.rate > settings.high_rate:
        proposed = current_s * settings.high_factor
    else:
        return current_s
    low, high = bounds(category, settings)
    return min(max(proposed, low), high)


def _stored(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def effective_delays(raw: Mapping[bytes, bytes], config: Config) -> dict[str, float]:
    """Adapted base delays still valid for this config (from ``HGETALL``).

    A category whose configured base_delay changed since it was adapted, or
    that is no longer retried, is left out: it uses its configured delay.
    """
    stored = _stored(raw)
    out: dict[str, float] = {}
    for name, category in config.categories.items():
        value, basis = stored.get(name), stored.get(f"{name}:from")
        if value is None or basis is None or not category.retries:
            continue
        try:
            delay_s, basis_s = float(value), float(basis)
        except ValueError:
            continue
        if basis_s != category.base_delay_s:
            continue
        low, high = bounds(category, config.adaptive)
        out[name] = min(max(delay_s, low), high)
    return out


def current_delays(raw: Mapping[bytes, bytes], config: Config) -> dict[str, Delay]:
    """Every retried category's base delay, configured and current."""
    adapted = effective_delays(raw, config)
    return {
        name: Delay(
            configured_s=category.base_delay_s,
            current_s=adapted.get(name, category.base_delay_s),
        )
        for name, category in sorted(config.categories.items())
        if category.retries
    }


async def settle(redis: Redis, scripts: Scripts, runtime: Runtime, now_ms: int) -> int:
    """Judge recovered every task re-dispatched a recovery window ago that has
    not failed again; returns how many."""
    keys = runtime.keys
    window_ms = round(runtime.config.schedule.recovery_window_s * 1000)
    total = 0
    while True:
        recovered, judged = await scripts.settle(
            keys=[keys.watch, keys.stats, keys.tasks, keys.names, keys.done],
            args=[
                now_ms - window_ms,
                now_ms,
                SETTLE_BATCH,
                keys.history_prefix,
                KEEP_MS,
                runtime.config.retry.task_ttl_ms,
            ],
        )
        total += int(recovered)
        if int(judged) < SETTLE_BATCH:
            return total


async def adapt(redis: Redis, runtime: Runtime, now_ms: int) -> list[Change]:
    """Apply the rule to every retried category over the last period."""
    config, keys = runtime.config, runtime.keys
    settings = config.adaptive
    if not settings.enabled:
        return []
    period_ms = round(settings.every_s * 1000)
    counts = await history.read_counts(redis, keys, now_ms - period_ms, now_ms)
    outcomes = rates(counts)
    stored = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(keys.base_delays))
    current = effective_delays(stored, config)

    changes: list[Change] = []
    mapping: dict[str, float | str] = {}
    for name, category in sorted(config.categories.items()):
        rate = outcomes.get(name)
        if not category.retries or rate is None or rate.rate is None:
            continue
        before = current.get(name, category.base_delay_s)
        after = next_delay(before, rate, category, settings)
        mapping |= {
            f"{name}:rate": round(rate.rate, 4),
            f"{name}:samples": rate.samples,
        }
        if after != before:
            changes.append(
                Change(
                    category=name,
                    before_s=before,
                    after_s=after,
                    rate=rate.rate,
                    samples=rate.samples,
                )
            )
            mapping |= {name: after, f"{name}:from": category.base_delay_s}
    if mapping:
        await cast(Awaitable[int], redis.hset(keys.base_delays, mapping=mapping))
    for change in changes:
        log.info(
            "%s: success rate %.1f%% over %d retries; base delay %gs -> %gs",
            change.category,
            change.rate * 100,
            change.samples,
            change.before_s,
            change.after_s,
        )
    return changes


def describe(changes: list[Change]) -> str:
    """One line for the job's summary."""
    if not changes:
        return "no base delay changed"
    return "; ".join(
        f"{c.category} {c.before_s:g}s -> {c.after_s:g}s ({c.rate:.0%} of {c.samples})"
        for c in changes
    )
