"""The periodic scan: failures that were not handled, found and handled.

Every ``[schedule] scan_every`` (30 min), looking back ``scan_window`` (24 h):

- **stuck in flight**: the in-flight lists of daemons that are dead, or that
  no daemon's heartbeat names at all, go back to the failures list;
- **lost schedule**: a task that is scheduled (or held by a pause) but has
  no entry to match is scheduled again, due now; every other task missing
  from the index its state names is put back in it (see `recoveryd.tasks`);
- **undelivered**: an outbox delivery for a channel no daemon serves goes to
  the admin alert log as undeliverable; one overdue on a served channel
  wakes that channel's loop; those failing and being retried are listed;
- **never alerted**: a dead (or notified) task with no notification on
  record is notified now.

What was found and done goes to
``reports/failure_processing/failure_processing_<UTC timestamp>.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from recoveryd import notify, tasks
from recoveryd.classify import Classification
from recoveryd.config import Config
from recoveryd.consumers import is_dead
from recoveryd.notification import (
    Delivery,
    Notification,
    for_dead_task,
    for_unrecoverable,
    iso_utc,
)
from recoveryd.pause import Silences
from recoveryd.records import FailureRecord, decode_record
from recoveryd.reports import Window, write_report
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts

__all__ = ["Finding", "ScanReport", "configured_channels", "run_scan"]

log = logging.getLogger(__name__)

KIND = "failure_processing"
CHUNK = 500
# Tasks examined in one step of the walk over all of them.
SWEEP_STEP = 1000
# A delivery this far past due was not claimed by any delivery loop, which
# would have taken it within a minute (their longest sleep).
OVERDUE_MS = 5 * 60_000
# Outbox entries decoded per channel: enough to judge, bounded in time.
OUTBOX_EXAMINE = 10_000
# Items listed in the report per finding; the counts are always whole.
LISTED = 50

_delivery = msgspec.json.Decoder(Delivery)
_encoder = msgspec.json.Encoder()

_DEAD_FIELDS = (
    "state",
    "alerted_at",
    "task",
    "category",
    "pattern",
    "confidence",
    "error",
    "record",
    "attempt",
    "reason",
    "queue",
)


class Finding(msgspec.Struct, kw_only=True):
    """One kind of unhandled failure: how many, how many handled, examples."""

    found: int = 0
    handled: int = 0
    action: str = ""
    items: list[Any] = []

    def add(self, item: Any, *, handled: bool = True) -> None:
        self.found += 1
        self.handled += int(handled)
        if len(self.items) < LISTED:
            self.items.append(item)


class ScanReport(msgspec.Struct, kw_only=True):
    type: str = KIND
    generated_at: str
    ran_by: str
    window: Window
    examined: dict[str, int]
    stuck_in_flight: Finding
    lost_schedule: Finding
    undelivered: Finding
    never_alerted: Finding
    summary: str = ""


def configured_channels(config: Config) -> set[str]:
    """The channels a daemon with this config serves (its outboxes' readers)."""
    notify_settings = config.notify
    served = {notify.ALERT_LOG}
    if getattr(getattr(notify_settings, "inbox", None), "enabled", False):
        served.add("inbox")
    for name in ("email", "sms", "push"):
        if getattr(notify_settings, name, None) is not None:
            served.add(name)
    return served


async def run_scan(
    redis: Redis,
    scripts: Scripts,
    runtime: Runtime,
    now_ms: int,
    *,
    owner: str,
    channels: set[str] | None = None,
) -> tuple[ScanReport, Path]:
    """Scan the window ending at ``now_ms``, handle what is found, report it.

    ``channels`` are those the running daemons serve; by default, the ones
    the config turns on.
    """
    served = channels or configured_channels(runtime.config)
    scanner = _Scanner(redis, scripts, runtime, now_ms, owner, served)
    report = await scanner.scan()
    path = write_report(runtime.config.state_dir, KIND, now_ms, report)
    return report, path


class _Scanner:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        runtime: Runtime,
        now_ms: int,
        owner: str,
        served: set[str],
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.owner = owner
        self.served = served
        self.keys = runtime.keys
        self.config = runtime.config
        self.now_ms = now_ms
        self.start_ms = now_ms - round(runtime.config.schedule.scan_window_s * 1000)
        self.examined: dict[str, int] = {}

    async def scan(self) -> ScanReport:
        stuck = await self.stuck_in_flight()
        lost = await self.lost_schedules()
        undelivered = await self.undelivered()
        unalerted = await self.never_alerted()
        report = ScanReport(
            generated_at=iso_utc(self.now_ms),
            ran_by=self.owner,
            window=Window.between(self.start_ms, self.now_ms),
            examined=self.examined,
            stuck_in_flight=stuck,
            lost_schedule=lost,
            undelivered=undelivered,
            never_alerted=unalerted,
        )
        report.summary = _summary(report)
        return report

    async def stuck_in_flight(self) -> Finding:
        finding = Finding(action="returned to the failures list")
        beats = {
            k.decode(): int(v)
            for k, v in (await _hgetall(self.redis, self.keys.consumers)).items()
        }
        prefix = self.keys.inflight_prefix
        lists = [
            key.decode()
            async for key in self.redis.scan_iter(match=f"{prefix}*", count=1000)
        ]
        self.examined["inflight_lists"] = len(lists)
        for key in sorted(lists):
            daemon = key[len(prefix) :]
            known = daemon in beats
            if known and not is_dead(daemon, beats[daemon], self.now_ms):
                continue
            moved = int(
                await self.scripts.reap(
                    keys=[key, self.keys.failures, self.keys.consumers], args=[daemon]
                )
            )
            if moved:
                finding.add({"daemon": daemon, "records": moved, "known": known})
                log.info(
                    "scan: returned %d records left in flight by %s", moved, daemon
                )
        return finding

    async def lost_schedules(self) -> Finding:
        finding = Finding(action="scheduled again")
        keys = self.keys
        index_keys = [keys.tasks, keys.retry, keys.watch, keys.dead, keys.done]
        keep_ms = self.config.retry.task_ttl_ms
        cursor, examined, repaired = b"0", 0, 0
        while True:
            try:
                reply = await self.scripts.sweep(
                    keys=index_keys,
                    args=[cursor, SWEEP_STEP, self.now_ms, keys.held_prefix, keep_ms],
                )
            except ResponseError as exc:
                # A key of the wrong type: said, and the rest of the scan runs.
                log.error("scan: cannot walk the tasks in %s: %s", keys.tasks, exc)
                finding.action += f"; the walk stopped: {exc}"
                break
            cursor, step, fixed, *rescued = reply
            examined += int(step)
            repaired += int(fixed)
            for raw in rescued:
                finding.add(raw.decode())
            if cursor == b"0":
                break
        self.examined["tasks"] = examined
        self.examined["indexes_repaired"] = repaired
        if finding.found:
            await self.redis.publish(keys.wake, f"retry {self.now_ms}")
            log.warning("scan: %d scheduled tasks had lost their entry", finding.found)
        if repaired:
            log.warning("scan: put %d tasks back in the index of their state", repaired)
        return finding

    async def undelivered(self) -> Finding:
        finding = Finding(
            action=(
                "overdue on a channel no daemon serves: sent to the admin alert "
                "log as undeliverable; overdue: its delivery loop woken; "
                "being retried: listed"
            )
        )
        served = self.served
        channels = sorted(
            {notify.ALERT_LOG, *notify.ADMIN_CHANNELS, *notify.USER_CHANNELS, *served}
        )
        examined = 0
        for channel in channels:
            examined += await self._outbox(channel, channel in served, finding)
        self.examined["outbox_entries"] = examined
        return finding

    async def _outbox(self, channel: str, served: bool, finding: Finding) -> int:
        key = self.keys.outbox(channel)
        entries = await self.redis.zrange(key, 0, OUTBOX_EXAMINE - 1, withscores=True)
        overdue = False
        for member, score in entries:
            try:
                delivery = _delivery.decode(member)
            except msgspec.DecodeError:
                continue
            # Only a delivery no loop has claimed for a while is judged: one
            # on a channel this daemon lacks may be served by another.
            late = score < self.now_ms - OVERDUE_MS
            item = _describe(channel, delivery, score)
            if late and not served:
                moved = await self._reroute(key, member, delivery)
                finding.add(item | {"done": "to the alert log"}, handled=moved)
            elif late:
                overdue = True
                finding.add(item | {"done": "woke its delivery loop"})
            elif delivery.tries > 0:
                finding.add(item | {"done": "left to its retries"}, handled=False)
        if overdue:
            await self.redis.publish(self.keys.wake, f"outbox:{channel} {self.now_ms}")
        return len(entries)

    async def _reroute(self, key: str, member: bytes, delivery: Delivery) -> bool:
        if not delivery.last_error:
            delivery.last_error = (
                f"no running daemon serves the {delivery.channel} channel"
            )
        notice = notify.undeliverable_notice(delivery, self.now_ms)
        target = Delivery(channel=notify.ALERT_LOG, notification=notice)
        moved = await self.scripts.move_member(
            keys=[key, self.keys.outbox(notify.ALERT_LOG)],
            args=[member, _encoder.encode(target), self.now_ms],
        )
        if int(moved):
            await self.redis.publish(
                self.keys.wake, f"outbox:{notify.ALERT_LOG} {self.now_ms}"
            )
        return bool(int(moved))

    async def never_alerted(self) -> Finding:
        finding = Finding(action="notified now")
        try:
            dead = await self.redis.zrangebyscore(
                self.keys.dead, self.start_ms, self.now_ms
            )
        except ResponseError as exc:
            log.error("scan: cannot read the dead set %s: %s", self.keys.dead, exc)
            finding.action += f"; not read: {exc}"
            return finding
        ids = [raw.decode() for raw in dead]
        self.examined["dead_tasks"] = len(ids)
        silences = Silences.from_hash(
            await _hgetall(self.redis, self.keys.silences), self.now_ms
        )
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            found = await tasks.read(self.redis, self.keys, chunk, _DEAD_FIELDS)
            for task_id, fields in zip(chunk, found, strict=True):
                if fields is None:
                    continue
                final = _text(fields["state"]) in ("dead", "notified")
                if not final or fields["alerted_at"] is not None:
                    continue
                await self._alert(task_id, fields, silences)
                finding.add(task_id)
        if finding.found:
            log.warning("scan: %d dead tasks had not been notified", finding.found)
        return finding

    async def _alert(
        self, task_id: str, fields: dict[str, bytes | None], silences: Silences
    ) -> None:
        record = _record(task_id, fields)
        classification = _classification(fields, self.config)
        category = self.config.categories.get(classification.category)
        if category is None:
            category = self.config.categories[self.config.classify.fallback]
        dead = _text(fields["state"]) == "dead"
        routes = notify.route(
            category,
            user=record.user,
            enabled=self.served,
            dead=dead,
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            for audience, channels in routes.items():
                message = _notice(record, classification, audience, fields, self.now_ms)
                quiet = silences.quiet(message, channels)
                notify.enqueue(pipe, self.keys, message, quiet, self.now_ms)
            await self.scripts.mark(
                keys=[self.keys.tasks],
                args=[task_id, "", "", 0, "alerted_at", self.now_ms],
                client=pipe,
            )
            await pipe.execute()


def _notice(
    record: FailureRecord,
    classification: Classification,
    audience: str,
    fields: dict[str, bytes | None],
    now_ms: int,
) -> Notification:
    digits = _text(fields["attempt"])
    attempt = int(digits) if digits.isdigit() else 1
    if _text(fields["state"]) == "dead":
        reason = _text(fields["reason"]) or "retries exhausted"
        return for_dead_task(
            record, classification, now_ms=now_ms, attempt=attempt, reason=reason
        )
    return for_unrecoverable(
        record, classification, audience=audience, now_ms=now_ms, attempt=attempt
    )


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""


def _record(task_id: str, fields: dict[str, bytes | None]) -> FailureRecord:
    """The task's failure record as stored with it, or rebuilt from its fields."""
    raw = fields["record"]
    if raw:
        item = decode_record(raw, len(raw) + 1)
        if isinstance(item, FailureRecord):
            return item
    return FailureRecord(
        task=_text(fields["task"]) or "?",
        error=_text(fields["error"]),
        id=task_id,
        queue=_text(fields["queue"]) or None,
    )


def _classification(fields: dict[str, bytes | None], config: Config) -> Classification:
    name = _text(fields["category"]) or config.classify.fallback
    category = config.categories.get(name)
    try:
        confidence = float(_text(fields["confidence"]) or 0)
    except ValueError:
        confidence = 0.0
    return Classification(
        category=name,
        action=category.action if category else "notify",
        confidence=confidence,
        pattern=_text(fields["pattern"]) or "unknown",
    )


def _describe(channel: str, delivery: Delivery, score: float) -> dict[str, Any]:
    notification = delivery.notification
    return {
        "channel": channel,
        "notification": notification.id,
        "task_id": notification.task_id,
        "tries": delivery.tries,
        "last_error": delivery.last_error,
        "due_at": iso_utc(int(score)),
    }


def _summary(report: ScanReport) -> str:
    parts: Sequence[tuple[str, Finding]] = (
        ("stuck in flight", report.stuck_in_flight),
        ("lost schedule entries", report.lost_schedule),
        ("undelivered notifications", report.undelivered),
        ("dead tasks never alerted", report.never_alerted),
    )
    found = ", ".join(f"{finding.found} {name}" for name, finding in parts)
    handled = sum(finding.handled for _, finding in parts)
    tasks = report.examined.get("tasks", 0)
    return f"examined {tasks} tasks; found {found}; handled {handled}"


async def _hgetall(redis: Redis, key: str) -> dict[bytes, bytes]:
    # redis-py types its commands for both clients at once; this is async.
    reply = redis.hgetall(key)
    return await cast(Awaitable[dict[bytes, bytes]], reply)
