"""The notification: what the right people are told about a failure.

One shape for every channel, so an alert log line, an email and a push all
carry the same facts: type, severity, title, description, task and id, the
error, the analysis (category, recommended action, confidence) and when.
"""

from __future__ import annotations

import functools
import random
from datetime import UTC, datetime
from typing import Any

import msgspec

from recoveryd.classify import Classification
from recoveryd.records import FailureRecord, User

__all__ = [
    "ADMIN",
    "DIGEST",
    "SUMMARY",
    "USER",
    "Analysis",
    "Delivery",
    "Notification",
    "digest_of",
    "for_dead_task",
    "for_unrecoverable",
    "iso_utc",
    "summary_of",
]

ADMIN = "admin"
USER = "user"

# Notification types beyond the first report of a failure.
SUMMARY = "summary"
DIGEST = "digest"

# A digest names this many tasks, lists this many notifications and keeps
# this many sample ids: enough to start from, small enough for one email.
DIGEST_NAMES = 5
DIGEST_LINES = 50
DIGEST_SAMPLES = 10
_SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2, "critical": 3}

# Error text in a notification is cut to this many characters: enough for
# the message and the root-cause line, not a whole megabyte of traceback.
ERROR_CHARS = 2000


class Analysis(msgspec.Struct, kw_only=True, frozen=True):
    category: str
    recommended_action: str
    confidence: float
    pattern: str


class Notification(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One thing to tell an audience; grouped ones carry a count and samples."""

    id: str
    type: str
    severity: str
    audience: str
    title: str
    description: str
    task: str
    task_id: str
    error_message: str
    analysis: Analysis
    created_at: str
    attempt: int = 1
    queue: str | None = None
    error_type: str | None = None
    user: User | None = None
    meta: dict[str, Any] | None = None
    count: int = 1
    sample_ids: list[str] = []
    group: str | None = None
    first_at: str | None = None
    last_at: str | None = None


class Delivery(msgspec.Struct, kw_only=True):
    """One notification on its way to one channel; the outbox holds these."""

    channel: str
    notification: Notification
    tries: int = 0
    last_error: str | None = None


def new_id() -> str:
    """A notification id: 128 random bits as 32 hex digits, like a UUID's.

    From Python's generator, seeded from the OS: an id needs to be unique,
    not secret, and a system call per notification costs more than the rest.
    """
    return f"{random.getrandbits(128):032x}"


# A batch's records mostly share one instant, Redis's clock at its take.
@functools.lru_cache(maxsize=1024)
def iso_utc(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds, the one time format in notifications."""
    seconds, ms = divmod(epoch_ms, 1000)
    return f"{_iso_second(seconds)}.{ms:03d}Z"


@functools.lru_cache(maxsize=256)
def _iso_second(seconds: int) -> str:
    # A batch's records share a few seconds: each is formatted once.
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat(timespec="seconds").removesuffix("+00:00")


def _recommended_action(action: str, category: str, dead: bool) -> str:
    if dead:
        return "retries exhausted: inspect the task, fix the cause, then retry it"
    if action == "notify":
        return f"{category.replace('_', ' ')}: fix the cause; recoveryd will not retry"
    return "retry with backoff"


def _base(
    record: FailureRecord,
    classification: Classification,
    *,
    now_ms: int,
    attempt: int,
    dead: bool,
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "task": record.task,
        "task_id": record.task_id,
        "error_message": _cut(record.error),
        "error_type": record.error_type,
        "analysis": Analysis(
            category=classification.category,
            recommended_action=_recommended_action(
                classification.action, classification.category, dead
            ),
            confidence=classification.confidence,
            pattern=classification.pattern,
        ),
        "created_at": iso_utc(now_ms),
        "attempt": attempt,
        "queue": record.queue,
        "meta": record.meta,
    }


def for_unrecoverable(
    record: FailureRecord,
    classification: Classification,
    *,
    audience: str,
    now_ms: int,
    attempt: int,
) -> Notification:
    """A failure that will not fix itself, for the admin or the task's user."""
    category = classification.category.replace("_", " ")
    return Notification(
        type="unrecoverable_failure",
        severity="error" if audience == ADMIN else "warning",
        audience=audience,
        title=f"{record.task} failed: {category}",
        description=(
            f"Task {record.task} ({record.task_id}) failed; recoveryd classed it "
            f"as {category} and will not retry it."
        ),
        user=record.user if audience == USER else None,
        **_base(record, classification, now_ms=now_ms, attempt=attempt, dead=False),
    )


def for_dead_task(
    record: FailureRecord,
    classification: Classification,
    *,
    now_ms: int,
    attempt: int,
    reason: str,
) -> Notification:
    """A task that will not be retried again: retries ran out or no queue."""
    return Notification(
        type="task_dead",
        severity="critical",
        audience=ADMIN,
        title=f"{record.task} is dead: {reason}",
        description=(
            f"Task {record.task} ({record.task_id}) failed {attempt} time(s), last as "
            f"{classification.category}; {reason}. It is in the dead set and "
            "can be retried with `recoveryd retry`."
        ),
        **_base(record, classification, now_ms=now_ms, attempt=attempt, dead=True),
    )


def summary_of(
    first: Notification,
    *,
    count: int,
    sample_ids: list[str],
    since_ms: int,
    last_ms: int,
    now_ms: int,
    last_id: str | None = None,
) -> Notification:
    """The ``count`` failures a group held back since ``since_ms``, in one.

    Its task id is the last failure's (``last_id``), else the last sample's.
    """
    since, last = iso_utc(since_ms), iso_utc(last_ms)
    times = "time" if count == 1 else "times"
    return msgspec.structs.replace(
        first,
        id=new_id(),
        type=SUMMARY,
        title=f"{first.task} failed {count} more {times}: {_category(first)}",
        description=(
            f"Task {first.task} failed {count} more {times} with the same error "
            f"between {since} and {last}, after the failure of {first.task_id} "
            f"reported at {first.created_at}."
        ),
        task_id=last_id or (sample_ids[-1] if sample_ids else first.task_id),
        created_at=iso_utc(now_ms),
        count=count,
        sample_ids=sample_ids,
        first_at=since,
        last_at=last,
    )


def digest_of(held: list[Notification], *, channel: str, now_ms: int) -> Notification:
    """Notifications a channel's rate limit held back, folded into one."""
    first = held[0]
    count = sum(n.count for n in held)
    categories = sorted({n.analysis.category for n in held})
    tasks = sorted({n.task for n in held})
    samples = list(dict.fromkeys(i for n in held for i in [n.task_id, *n.sample_ids]))
    return Notification(
        id=new_id(),
        type=DIGEST,
        severity=max((n.severity for n in held), key=_rank),
        audience=first.audience,
        user=first.user,
        title=f"{count} failures held back by the {channel} rate limit",
        description=(
            f"{len(held)} notifications ({count} failures) of "
            f"{len(tasks)} task(s) came faster than the {channel} rate limit "
            f"allows: {', '.join(tasks[:DIGEST_NAMES])}"
            + (" …" if len(tasks) > DIGEST_NAMES else "")
        ),
        task=tasks[0] if len(tasks) == 1 else f"{len(tasks)} tasks",
        task_id=first.task_id,
        error_message=first.error_message,
        analysis=Analysis(
            category=categories[0] if len(categories) == 1 else "several",
            recommended_action="read the alert log for each failure",
            confidence=min(n.analysis.confidence for n in held),
            pattern="several",
        ),
        created_at=iso_utc(now_ms),
        count=count,
        sample_ids=samples[:DIGEST_SAMPLES],
        first_at=min(n.first_at or n.created_at for n in held),
        last_at=max(n.last_at or n.created_at for n in held),
        meta={"digest": [_digest_line(n) for n in held[:DIGEST_LINES]]},
    )


def _rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity, 0)


def _digest_line(notification: Notification) -> dict[str, Any]:
    return {
        "title": notification.title,
        "task_id": notification.task_id,
        "category": notification.analysis.category,
        "count": notification.count,
        "created_at": notification.created_at,
    }


def _category(notification: Notification) -> str:
    return notification.analysis.category.replace("_", " ")


def _cut(text: str) -> str:
    if len(text) <= ERROR_CHARS:
        return text
    half = ERROR_CHARS // 2
    return f"{text[:half]}\n…\n{text[-half:]}"
