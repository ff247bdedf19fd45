"""Backoff and the retry decision, as pure functions."""

from __future__ import annotations

import random

import pytest

from recoveryd.categories import (
    BUILTIN_CATEGORIES,
    DATA,
    NETWORK,
    SYSTEM,
    TEMPORARY,
    CategorySettings,
)
from recoveryd.schedule import backoff_s, decide, next_attempt


def exact(name: str) -> CategorySettings:
    base = BUILTIN_CATEGORIES[name]
    return CategorySettings(
        action=base.action,
        max_retries=base.max_retries,
        base_delay_s=base.base_delay_s,
        max_delay_s=base.max_delay_s,
        jitter=0.0,
    )


@pytest.mark.parametrize(
    ("name", "delays"),
    [
        (NETWORK, [30, 60, 120, 240, 480]),
        (SYSTEM, [300, 600, 1200]),
        (TEMPORARY, [180, 360, 720]),
    ],
)
def test_delay_doubles_per_attempt(name, delays):
    category = exact(name)
    assert [backoff_s(category, n) for n in range(1, len(delays) + 1)] == delays


def test_delay_stops_at_the_cap():
    category = CategorySettings(base_delay_s=30, max_delay_s=100, jitter=0)
    assert backoff_s(category, 3) == 100
    assert backoff_s(category, 5000) == 100


def test_jitter_stays_within_the_cap_and_above_half():
    category = CategorySettings(base_delay_s=60, max_delay_s=100, jitter=0.5)
    rng = random.Random(7)
    first = [backoff_s(category, 1, rng=rng) for _ in range(2000)]
    assert min(first) >= 30 and max(first) <= 90
    assert max(first) - min(first) > 40, "jitter should actually spread delays"
    capped = [backoff_s(category, 4, rng=rng) for _ in range(2000)]
    assert max(capped) <= 100 and min(capped) >= 50


def test_longer_retry_after_wins_up_to_the_ceiling():
    category = exact(NETWORK)
    longer = decide(category, attempt=1, now_ms=0, retry_after_s=90)
    assert longer.delay_s == 90 and longer.due_ms == 90_000
    shorter = decide(category, attempt=1, now_ms=0, retry_after_s=5)
    assert shorter.delay_s == 30
    ceiling = decide(
        category, attempt=1, now_ms=0, retry_after_s=10**9, retry_after_ceiling_s=3600
    )
    assert ceiling.delay_s == 3600


@pytest.mark.parametrize("hint", [0, -5])
def test_zero_or_negative_retry_after_means_the_category_delay(hint):
    assert decide(exact(NETWORK), attempt=2, now_ms=0, retry_after_s=hint).delay_s == 60


def test_retries_run_out_after_max_retries():
    category = exact(SYSTEM)
    assert decide(category, attempt=3, now_ms=0).retry
    last = decide(category, attempt=4, now_ms=0)
    assert not last.retry and "exhausted" in last.reason


def test_no_queue_means_no_retry():
    decision = decide(exact(NETWORK), attempt=1, now_ms=0, has_queue=False)
    assert not decision.retry and "no queue" in decision.reason


def test_data_failure_is_not_retried():
    assert not decide(BUILTIN_CATEGORIES[DATA], attempt=1, now_ms=0).retry


def test_delay_counts_from_the_failure_but_is_never_in_the_past():
    category = exact(NETWORK)
    recent = decide(category, attempt=1, now_ms=100_000, failed_at_ms=90_000)
    assert recent.due_ms == 120_000
    old = decide(category, attempt=1, now_ms=100_000, failed_at_ms=0)
    assert old.due_ms == 100_000
    future = decide(category, attempt=1, now_ms=100_000, failed_at_ms=500_000)
    assert future.due_ms == 130_000


def test_repeat_failure_counts_as_the_next_attempt():
    assert next_attempt(0, None) == 1
    assert next_attempt(2, None) == 3
    assert next_attempt(2, 1) == 3
    assert next_attempt(0, 4) == 4
