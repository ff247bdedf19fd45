"""Retry scheduling: when a failed task should run again, if at all.

The delay for the n-th failure is ``base × 2^(n−1)``, capped by the
category's ``max_delay``, then spread by jitter. Jitter multiplies the delay
by a factor in ``[1 − jitter, 1 + jitter]`` (jitter is at most 0.5), and the
result is clamped to the cap again, so jitter never pushes a delay past the
cap nor shrinks it below half. A record's ``retry_after`` wins when it is
longer, up to the ceiling; zero or a negative hint is ignored.
"""

from __future__ import annotations

import random

import msgspec

from recoveryd.categories import CategorySettings

__all__ = ["Decision", "backoff_s", "decide", "next_attempt"]


# A Struct, not a frozen dataclass: one is made per failure, and a frozen
# dataclass sets each field through object.__setattr__, ten times slower.
class Decision(msgspec.Struct, frozen=True):
    """What to do with one failure: retry at ``due_ms``, or give up."""

    attempt: int
    retry: bool
    due_ms: int = 0
    delay_s: float = 0.0
    reason: str = ""


def next_attempt(previous: int, reported: int | None) -> int:
    """The attempt number of a new failure of a task seen ``previous`` times.

    The record's own ``attempt`` wins when it is ahead of what recoveryd has
    seen, so a task that failed before recoveryd knew of it starts further on.
    """
    return max(previous + 1, reported or 0, 1)


def backoff_s(
    category: CategorySettings,
    attempt: int,
    *,
    base_delay_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``attempt`` (1-based) of this category."""
    base = category.base_delay_s if base_delay_s is None else base_delay_s
    cap = category.max_delay_s
    # 2**(attempt-1) overflows a float around attempt 1025; the cap is
    # reached long before, so stop doubling there.
    exponent = min(attempt - 1, 64)
    delay = min(base * 2.0**exponent, cap)
    if category.jitter > 0:
        factor = (rng or random).uniform(1.0 - category.jitter, 1.0 + category.jitter)
        delay = min(delay * factor, cap)
    return delay


def decide(
    category: CategorySettings,
    *,
    attempt: int,
    now_ms: int,
    failed_at_ms: int | None = None,
    retry_after_s: float | None = None,
    retry_after_ceiling_s: float = 86400.0,
    has_queue: bool = True,
    base_delay_s: float | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """Decide whether and when the task runs again.

    The delay counts from when the task failed, never from a moment in the
    future (a sender's clock running ahead), and the due time is never in
    the past: a record that waited in the list is retried at once, not lost.
    """
    if not category.retries:
        return Decision(attempt=attempt, retry=False, reason="not retried")
    if not has_queue:
        return Decision(attempt=attempt, retry=False, reason="no queue to retry on")
    if attempt > category.max_retries:
        reason = f"retries exhausted ({category.max_retries})"
        return Decision(attempt=attempt, retry=False, reason=reason)

    delay_s = backoff_s(category, attempt, base_delay_s=base_delay_s, rng=rng)
    if retry_after_s is not None and retry_after_s > delay_s:
        delay_s = min(retry_after_s, retry_after_ceiling_s)

    start_ms = now_ms if failed_at_ms is None else min(failed_at_ms, now_ms)
    due_ms = max(start_ms + round(delay_s * 1000), now_ms)
    return Decision(attempt=attempt, retry=True, due_ms=due_ms, delay_s=delay_s)
