"""Intake: taking failure records off the list without ever losing one.

Records move from the failures list to this daemon's in-flight list in one
atomic step, a batch at a time. Each is decoded, classified and given an
outcome (scheduled, dead or notified; parked as invalid if it is not a
record), and the whole batch's outcomes are committed in one script call
that also takes the batch off the in-flight list (see `recoveryd.writes`).
A daemon killed at any point leaves its records in flight, and they are
taken again by whichever daemon recovers them; so each record gets exactly
one outcome.

Under load, batches overlap, three deep. While Redis commits one batch,
the daemon decides the next: the next batch's recall is sent first, in a
write of its own, so its tasks are read back before the commit runs, and
the batch is classified and decided while Redis applies the writes; the
commit then takes a third batch. A task in both batches is decided on what
the first left it (kept here, not read back), so a task failing in both
sees the first failure. The batches in flight lie oldest at the list's
tail; each commit takes only its own records off and checks the list
holds exactly what this daemon took. Anything else found there (records
left by an error, or moved by a lost reply) stops the overlap: the next
take starts again from the oldest record in flight.
"""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import msgspec
from redis.asyncio import Redis

from recoveryd import adaptive, notify, tasks
from recoveryd import history as minutes
from recoveryd.categories import NETWORK, CategorySettings
from recoveryd.classify import Classification
from recoveryd.connection import REDIS_AWAY, Link, exchange
from recoveryd.grouping import fingerprint_of, normalise
from recoveryd.metrics import METRICS
from recoveryd.notification import USER, for_dead_task, for_unrecoverable, iso_utc
from recoveryd.pause import Silences
from recoveryd.records import (
    FailureRecord,
    InvalidRecord,
    SuccessReport,
    decode_report,
    parse_failed_at,
    payload_text,
)
from recoveryd.runtime import Runtime
from recoveryd.schedule import Decision, decide, next_attempt
from recoveryd.scripts import Scripts, eval_command
from recoveryd.wake import Alarm
from recoveryd.writes import Writes, exact, read_commit

__all__ = ["Intake", "Outcome"]

log = logging.getLogger(__name__)

# A blocking wait on an empty list returns after this long, so a dead
# connection is noticed; Redis's own blocking timeouts are coarse anyway.
BLOCK_S = 20.0
LOG_PER_BATCH = 3
HISTORY_KEEP = 20
ERROR_HEAD = 300
TASK_ERROR_CHARS = 60
RECORD_KEEP_BYTES = 64 * 1024


class Outcome:
    SCHEDULED = "scheduled"
    DEAD = "dead"
    NOTIFIED = "notified"
    INVALID = "invalid"
    # After a success report (or the recovery window, see `adaptive.settle`).
    RECOVERED = "recovered"
    SUCCEEDED = "succeeded"


@dataclass(slots=True)
class _Known:
    """What Redis remembers of a task: how often it failed, and how."""

    attempt: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    state: str | None = None
    category: str | None = None


# A record as decoded, with its classification if it is a failure.
_Item = tuple[FailureRecord | SuccessReport | InvalidRecord, Classification | None]


@dataclass(slots=True)
class _Taken:
    """A batch in flight: Redis's clock when it was taken, and its records."""

    now_ms: int
    raws: list[bytes]
    # The in-flight list's length right after the take.
    inflight: int = 0
    # Nothing else is in flight once the batches before it are committed.
    alone: bool = False

    @classmethod
    def from_reply(cls, reply: list[Any], *, behind: int = 0) -> _Taken:
        """From a take's reply; ``behind``: records of batches still to commit."""
        raws = reply[2:]
        inflight = int(reply[1])
        return cls(int(reply[0]), raws, inflight, alone=inflight == behind + len(raws))


@dataclass(slots=True)
class _Batch:
    now_ms: int
    tally: Counter[str] = field(default_factory=Counter)
    history: Counter[str] = field(default_factory=Counter)
    # Failures by (category, task, pattern): counted once each, spread
    # over the tallies at the end of the batch (see Intake._finish).
    failures: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    first_due_ms: int | None = None
    outbox_due: bool = False
    # Read once per batch: adapted base delays, and silences in force.
    base_delays: dict[str, float] = field(default_factory=dict)
    silences: Silences = field(default_factory=lambda: Silences(()))
    # The channels turned on, read once per batch (see `enabled`).
    channels: set[str] | None = None
    # Groups this batch's writes notify, and whether their notification
    # was silenced; the rest of a group's failures in the batch are counted.
    groups: dict[str, bool] = field(default_factory=dict)
    # Records parked for a bug in handling them.
    bugs: int = 0
    # Tasks whose record cannot be read, with why (Redis's word, or ours).
    unreadable: dict[str, str] = field(default_factory=dict)
    # What is logged after the commit, a few lines a batch at most.
    given_up: list[str] = field(default_factory=list)
    parked: list[str] = field(default_factory=list)

    def enabled(self, read: Callable[[], set[str]]) -> set[str]:
        """The channels turned on, as ``read`` gave them at the batch's first."""
        if self.channels is None:
            self.channels = read()
        return self.channels


@dataclass(slots=True)
class _Decided:
    """A batch whose outcomes are decided, their writes not yet committed."""

    taken: _Taken
    batch: _Batch
    writes: Writes
    # Its tasks as its outcomes leave them.
    known: dict[str, _Known]


class Intake:
    """The loop that takes failure records and commits their outcomes."""

    # Limitation: one daemon's intake is bound by its Python work, ~45 µs
    # of CPU per record on the benchmark's mix (see bench/RESULTS.md), and
    # runs at about 20,000 records/s on two cores; fix for more: fewer
    # Python objects per record (outcomes written straight into the
    # commit's arguments), or intake in two processes.

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        consumer: str,
        runtime: Callable[[], Runtime],
        link: Link,
        retry_alarm: Alarm,
        enabled_channels: Callable[[], set[str]],
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._consumer = consumer
        self._runtime = runtime
        self._link = link
        self._retry_alarm = retry_alarm
        self._enabled = enabled_channels
        self.processed = 0
        # The pipeline: a batch decided and waiting for its commit, and the
        # batch after it, taken but not yet decided.
        self._decided: _Decided | None = None
        self._next: _Taken | None = None
        # The in-flight list's length as last reported.
        self._holding = 0
        # The commit under way, shielded from a stop; see `abandon`.
        self._committing: anyio.CancelScope | None = None

    async def run(self) -> None:
        """Take and handle batches until cancelled (only ever while waiting)."""
        idle = False
        while True:
            try:
                idle = await self.step(waited=idle) == 0
                self._link.ok("intake")
            except REDIS_AWAY as exc:
                idle = False
                await self._link.wait_out(exc, "intake")

    async def step(self, block_s: float = BLOCK_S, *, waited: bool = False) -> int:
        """Commit one batch, taking it first (waiting up to ``block_s`` for
        its first record) unless it was taken and decided by the last step.

        ``waited``: the last step found nothing, so the list and the in-flight
        list are known empty and the wait can start at once (an idle daemon
        sends one command per ``block_s``). Returns how many records the
        batch held.
        """
        try:
            # A stop takes effect here, between batches, even under a steady
            # load; batches taken ahead are left in flight, to be returned on
            # the way out.
            await anyio.lowlevel.checkpoint()
            if self._decided is None:
                taken, self._next = self._next, None
                if taken is None:
                    taken = await self._take(self._runtime(), block_s, waited)
                if not taken.raws:
                    return 0
                # Read again: a reload while blocked applies to this batch.
                self._decided = await self._decide_first(self._runtime(), taken)
            decided = self._decided
            with anyio.CancelScope(shield=True) as self._committing:
                # Once decided, a batch is committed even if the daemon is
                # stopping: the commit is what makes stop lossless.
                await self._commit(self._runtime(), decided)
        except BaseException:
            # Whatever was taken and not committed is still in flight, and
            # is taken again, oldest first, by the next step or the next run.
            self._decided = self._next = None
            raise
        finally:
            self._committing = None
        self.processed += len(decided.taken.raws)
        return len(decided.taken.raws)

    def abandon(self) -> None:
        """Give up the commit under way: Redis does not answer, and stop must.

        Its records stay in flight, whether or not Redis applied the commit
        (one script: all or nothing), and are taken again after a restart.
        """
        if self._committing is not None:
            self._committing.cancel()

    async def _take(
        self, runtime: Runtime, block_s: float, waited: bool = False
    ) -> _Taken:
        """The batch: the oldest records in flight, topped up from the list.

        Beginning with what is in flight, not just what this call moved,
        means records left there by an error, or moved by a call whose reply
        was lost on a broken connection, are handled next, oldest first.
        """
        keys = runtime.keys
        lists = [keys.failures, keys.inflight(self._consumer)]
        batch = runtime.config.intake.batch
        budget = runtime.config.intake.batch_bytes
        if not waited:
            reply = await self._scripts.take(keys=lists, args=[batch, budget])
            if len(reply) > 2 or block_s <= 0:
                return _Taken.from_reply(reply)

        # redis-py types the timeout as int; Redis 6 and later take fractions.
        timeout = cast(int, block_s)
        first = await self._redis.blmove(lists[0], lists[1], timeout, "RIGHT", "LEFT")
        if first is None:
            return _Taken(0, [])
        reply = await self._scripts.take(keys=lists, args=[batch, budget])
        return _Taken.from_reply(reply)

    async def _decide_first(self, runtime: Runtime, taken: _Taken) -> _Decided:
        """Decide a batch with no batch before it to overlap with.

        Its tasks are read back in the round trip that takes the next batch,
        which starts the overlap. No next batch is taken while other records
        wait in flight, older than it would be (the take still reports the
        in-flight list's length).
        """
        items = self._prepare(runtime, taken.raws)
        ids = _task_ids(item for item, _ in items)
        batch = _Batch(now_ms=taken.now_ms)
        keys = runtime.keys
        intake = runtime.config.intake
        most = intake.batch if taken.alone else 0
        lists = [keys.failures, keys.inflight(self._consumer)]
        commands = [
            self._recall_command(runtime, ids),
            eval_command(self._scripts.take, lists, [most, intake.batch_bytes, 0]),
        ]
        async with exchange(self._redis, commands) as replies:
            recalled = await replies.next()
            ahead = _Taken.from_reply(await replies.next(), behind=len(items))
        known = self._recalled(runtime, recalled, ids, batch)
        # What the list holds if nothing but this daemon changed it. If it
        # holds anything else, the batch was taken back (the commit will
        # find the list changed and refuse): nothing more is decided.
        self._holding = taken.inflight + len(ahead.raws)
        if ahead.inflight != self._holding:
            ahead.alone = False
        self._next = ahead if ahead.raws else None
        return self._decide(runtime, taken, items, batch, known)

    async def _commit(self, runtime: Runtime, decided: _Decided) -> None:
        """Commit a decided batch; meanwhile decide the next, and take a third.

        The next batch's recall is sent just ahead of the commit: its reply
        comes back while Redis is still applying the commit, and the batch
        is classified and decided meanwhile.
        """
        keys = runtime.keys
        intake = runtime.config.intake
        size = len(decided.taken.raws)
        following = self._next if self._next is not None and self._next.alone else None
        behind = len(following.raws) if following is not None else 0
        # With anything else in flight, nothing new is taken: the next step
        # starts again from the oldest record there.
        clean = self._holding == size + behind

        def commit() -> list[Any]:
            return decided.writes.commit_command(
                self._scripts,
                keys.inflight(self._consumer),
                self._holding,
                size,
                take=(keys.failures, intake.batch, intake.batch_bytes)
                if clean
                else None,
            )

        upcoming: _Decided | None = None
        if following is None:
            async with exchange(self._redis, [commit()]) as replies:
                reply = await replies.next()
        else:
            decoded = self._decode(runtime, following.raws)
            ids = _task_ids(decoded)
            recall = self._recall_command(runtime, ids)
            async with exchange(self._redis, [recall]) as replies:
                # Made after the recall is sent, the commit most often
                # reaches Redis once the recall's reply is on its way: Redis
                # replies only when it has run all it has read.
                await replies.send(commit())
                items = self._classify(runtime, decoded)
                recalled = await replies.next()
                batch = _Batch(now_ms=following.now_ms)
                known = self._recalled(runtime, recalled, ids, batch)
                # What this batch's commit leaves its tasks, not what Redis
                # held before it.
                before = decided.known
                known.update((i, before[i]) for i in ids if i in before)
                upcoming = self._decide(runtime, following, items, batch, known)
                reply = await replies.next()
        done, took = read_commit(reply)
        if not done:
            # Another daemon judged this one dead and took the records back
            # (they are handled there), or this commit was sent twice after a
            # lost reply and the first one counted: nothing more is written,
            # and nothing decided after it stands.
            self._decided = self._next = None
            log.warning(
                "in-flight batch of %d was not committed: the in-flight list "
                "changed under it (taken back by another daemon, or already "
                "committed by a retried call)",
                size,
            )
            return
        self._decided = upcoming
        self._next = None
        self._holding -= size
        if took is not None:
            ahead = _Taken.from_reply(took, behind=behind)
            self._holding = ahead.inflight
            if ahead.raws:
                self._next = ahead
        batch = decided.batch
        if batch.first_due_ms is not None:
            self._retry_alarm.poke(batch.first_due_ms)
        METRICS.count_batch(batch.tally)
        _log_batch(batch)

    def _decide(
        self,
        runtime: Runtime,
        taken: _Taken,
        items: list[_Item],
        batch: _Batch,
        known: dict[str, _Known],
    ) -> _Decided:
        """Each record's outcome, as writes to commit."""
        writes = Writes()
        for raw, (item, classification) in zip(taken.raws, items, strict=True):
            self._one(writes, runtime, raw, item, classification, known, batch)
        self._finish(writes, runtime, batch)
        return _Decided(taken, batch, writes, known)

    def _prepare(self, runtime: Runtime, raws: list[bytes]) -> list[_Item]:
        """Decode and classify a batch: the work that needs nothing from Redis."""
        return self._classify(runtime, self._decode(runtime, raws))

    def _decode(
        self, runtime: Runtime, raws: list[bytes]
    ) -> list[FailureRecord | SuccessReport | InvalidRecord]:
        limit = runtime.config.intake.max_record_size
        return [_own_queue(decode_report(raw, limit), runtime) for raw in raws]

    def _classify(
        self,
        runtime: Runtime,
        decoded: list[FailureRecord | SuccessReport | InvalidRecord],
    ) -> list[_Item]:
        items: list[_Item] = []
        failed = 0
        for item in decoded:
            classification = None
            if isinstance(item, FailureRecord):
                try:
                    classification = runtime.classifier.classify(item)
                except Exception as exc:
                    # One traceback a batch; each record is parked with it.
                    if not failed:
                        log.exception("parking a record that could not be classified")
                    failed += 1
                    item = InvalidRecord(reason=_bug(exc))
            items.append((item, classification))
        return items

    def _one(
        self,
        writes: Writes,
        runtime: Runtime,
        raw: bytes,
        item: FailureRecord | SuccessReport | InvalidRecord,
        classification: Classification | None,
        known: dict[str, _Known],
        batch: _Batch,
    ) -> None:
        """Add one record's outcome to the batch's writes.

        A record that trips a bug is parked with the error, its half-made
        writes dropped and what this batch knows of its task as it was:
        otherwise it would fail its batch again at every try and hold up
        every record behind it.
        """
        mark = len(writes)
        # A success report for such a task is only counted, as for one
        # unknown here; a failure is parked, for it cannot be told apart.
        if isinstance(item, FailureRecord) and item.task_id in batch.unreadable:
            reason = "its task's record cannot be read: "
            item = InvalidRecord(reason=reason + batch.unreadable[item.task_id])
        task_id = None if isinstance(item, InvalidRecord) else item.task_id
        past = known.get(task_id) if task_id is not None else None
        saved = (past.attempt, past.history, past.state) if past else None
        try:
            if isinstance(item, InvalidRecord):
                self._park(writes, runtime, raw, item, batch)
            elif isinstance(item, SuccessReport):
                self._succeeded(writes, runtime, item, known, batch)
            else:
                assert classification is not None
                self._handle(writes, runtime, raw, item, classification, known, batch)
        except Exception as exc:
            # One traceback a batch: a flood of one bad kind of record must
            # not flood the log (each is parked with its reason).
            if not batch.bugs:
                log.exception("parking a record that could not be handled")
            batch.bugs += 1
            writes.drop_from(mark)
            if past is not None and saved is not None:
                past.attempt, past.history, past.state = saved
            elif task_id is not None:
                known.pop(task_id, None)
            self._park(writes, runtime, raw, InvalidRecord(reason=_bug(exc)), batch)

    # Limitation: two daemons handling failures of one task at once both
    # recall it before either commits, and the later commit wins (attempt
    # one low, or a success report overtaken); fix: a version per task that
    # COMMIT checks, putting a record back when its task moved meanwhile.
    def _recall_command(self, runtime: Runtime, ids: list[str]) -> list[Any]:
        """RECALL of the batch's tasks: what Redis knows of them."""
        keys = runtime.keys
        return eval_command(
            self._scripts.recall,
            [keys.base_delays, keys.silences, keys.tasks, keys.names],
            tasks.fields_args(_RECALLED, ids),
        )

    def _recalled(
        self, runtime: Runtime, reply: list[Any], ids: list[str], batch: _Batch
    ) -> dict[str, _Known]:
        """RECALL's reply for ``ids``: the tasks Redis knows, and what the
        batch reads once (adapted delays, silences)."""
        delays, silences, *replies = reply
        batch.base_delays = adaptive.effective_delays(_pairs(delays), runtime.config)
        batch.silences = Silences.from_hash(_pairs(silences), batch.now_ms)
        known: dict[str, _Known] = {}
        for task_id, fields in zip(ids, replies, strict=True):
            if isinstance(fields, bytes):
                batch.unreadable[task_id] = fields.decode(errors="replace")[:200]
            elif fields is not None:
                try:
                    known[task_id] = _known(fields)
                except (ValueError, UnicodeDecodeError, OverflowError) as exc:
                    batch.unreadable[task_id] = f"its fields do not read: {exc}"[:200]
        return known

    def _handle(
        self,
        writes: Writes,
        runtime: Runtime,
        raw: bytes,
        record: FailureRecord,
        classification: Classification,
        known: dict[str, _Known],
        batch: _Batch,
    ) -> None:
        config = runtime.config
        category = config.categories[classification.category]
        task_id = record.task_id
        past = known.setdefault(task_id, _Known())
        seen = past.attempt > 0
        attempt = next_attempt(past.attempt, record.attempt)
        failed_ms = _failed_at_ms(record, batch.now_ms)
        decision = decide(
            category,
            attempt=attempt,
            now_ms=batch.now_ms,
            failed_at_ms=failed_ms,
            retry_after_s=record.retry_after,
            retry_after_ceiling_s=config.retry.retry_after_ceiling_s,
            has_queue=bool(record.queue),
            base_delay_s=batch.base_delays.get(classification.category),
        )
        past.attempt = attempt
        first_line = _first_line(record.error)
        entry = _history_entry(classification, attempt, failed_ms, first_line)
        history = [*past.history, entry]
        past.history = (
            history[-HISTORY_KEEP:] if len(history) > HISTORY_KEEP else history
        )

        fields = _task_fields(
            record, classification, attempt, failed_ms, past.history, first_line
        )
        refailed = past.state == "dispatched"
        past.state = None
        if decision.retry:
            self._schedule(writes, runtime, task_id, fields, decision, batch, seen=seen)
        else:
            if seen:
                # A retry still pending for an earlier failure is void.
                writes.zrem(runtime.keys.retry, task_id)
            self._give_up(
                writes,
                runtime,
                raw,
                record,
                classification,
                category,
                fields,
                decision,
                batch,
            )
        # Counted once its outcome is made: a record that fails on the way
        # is parked, and counted as that.
        _count(batch, record, classification, past.category, refailed=refailed)

    def _schedule(
        self,
        writes: Writes,
        runtime: Runtime,
        task_id: str,
        fields: dict[str, Any],
        decision: Decision,
        batch: _Batch,
        *,
        seen: bool,
    ) -> None:
        keys = runtime.keys
        if seen:
            # What the last failure left: if it was given up on, it is not
            # any more. The new record replaces the rest.
            writes.zrem(keys.dead, task_id)
        writes.schedule(
            keys.retry,
            (keys.tasks, keys.names),
            task_id,
            decision.due_ms,
            tasks.record(state=Outcome.SCHEDULED, **fields),
        )
        batch.tally[Outcome.SCHEDULED] += 1
        batch.history[Outcome.SCHEDULED] += 1
        if batch.first_due_ms is None or decision.due_ms < batch.first_due_ms:
            batch.first_due_ms = decision.due_ms

    def _give_up(
        self,
        writes: Writes,
        runtime: Runtime,
        raw: bytes,
        record: FailureRecord,
        classification: Classification,
        category: CategorySettings,
        fields: dict[str, Any],
        decision: Decision,
        batch: _Batch,
    ) -> None:
        """Put the task in the dead set and tell the people its category names."""
        keys = runtime.keys
        exhausted = category.retries
        reason = (
            decision.reason
            if exhausted
            else f"{classification.category} is not retried"
        )
        more: dict[str, str | bytes | int] = {
            "died_at": batch.now_ms,
            "reason": reason,
            "record": _keepable_record(raw),
            # The scan re-sends the notification of a dead task without one.
            "alerted_at": batch.now_ms,
        }
        state = Outcome.DEAD if exhausted else Outcome.NOTIFIED
        writes.store(
            (keys.tasks, keys.names),
            record.task_id,
            tasks.record(state=state, more=more, **fields),
        )
        # The dead set owns the task now; it is trimmed by age and count.
        writes.zadd(keys.dead, {record.task_id: batch.now_ms})
        routes = notify.route(
            category,
            user=record.user,
            enabled=batch.enabled(self._enabled),
            dead=exhausted,
        )
        window_ms = round(runtime.config.notify.group_window_s * 1000)
        # What the batch learns from this record, kept until all of its
        # writes are made (see `_one`).
        silenced = 0
        opened: dict[str, bool] = {}
        shape = normalise(record.error) if window_ms > 0 and routes else ""
        for audience, channels in routes.items():
            group = None
            if window_ms > 0:
                group = fingerprint_of(
                    "task_dead" if exhausted else "unrecoverable_failure",
                    audience,
                    record.task,
                    classification.category,
                    classification.pattern,
                    shape,
                    record.user if audience == USER else None,
                )
                if group in batch.groups:
                    # The batch holds its group's notification already (and
                    # was silenced or not alike): this one is only counted.
                    silenced += batch.groups[group]
                    notify.count_grouped(
                        writes, keys, group, record.task_id, batch.now_ms
                    )
                    continue
            if exhausted:
                message = for_dead_task(
                    record,
                    classification,
                    now_ms=batch.now_ms,
                    attempt=decision.attempt,
                    reason=reason,
                )
            else:
                message = for_unrecoverable(
                    record,
                    classification,
                    audience=audience,
                    now_ms=batch.now_ms,
                    attempt=decision.attempt,
                )
            quiet = batch.silences.quiet(message, channels)
            muted = len(quiet) < len(channels)
            silenced += muted
            notify.enqueue(
                writes,
                keys,
                message,
                quiet,
                batch.now_ms,
                window_ms=window_ms,
                group=group,
            )
            if group is not None and quiet:
                opened[group] = muted
        batch.groups |= opened
        if silenced:
            batch.history["silenced"] += silenced
        batch.tally[Outcome.DEAD if exhausted else Outcome.NOTIFIED] += 1
        batch.history[Outcome.DEAD if exhausted else Outcome.NOTIFIED] += 1
        batch.given_up.append(
            f"task {record.task} ({record.task_id}) is dead: {reason} "
            f"[{classification.pattern}]"
        )
        batch.outbox_due = True

    def _succeeded(
        self,
        writes: Writes,
        runtime: Runtime,
        report: SuccessReport,
        known: dict[str, _Known],
        batch: _Batch,
    ) -> None:
        """An application reports a task succeeded: credit its retry, if any."""
        keys = runtime.keys
        task_id = report.task_id
        past = known.get(task_id)
        batch.tally["ok_reports"] += 1
        if past is None or past.state in (Outcome.RECOVERED, Outcome.SUCCEEDED):
            return  # a task unknown here, or one whose success is counted
        forget_at = batch.now_ms + runtime.config.retry.task_ttl_ms
        if past.state == "dispatched":
            category = past.category or "unknown"
            past.state = Outcome.RECOVERED
            done = (keys.done, forget_at)
            writes.mark(
                keys.tasks, task_id, past.state, done, recovered_at=batch.now_ms
            )
            writes.zrem(keys.watch, task_id)
            batch.tally[Outcome.RECOVERED] += 1
            batch.history.update(
                ("recovered", f"recovered:{category}", f"reported_ok:{category}")
            )
            return
        # It succeeded on its own, while a retry was pending or after it was
        # given up: that retry is not needed, and it is no longer dead.
        past.state = Outcome.SUCCEEDED
        done = (keys.done, forget_at)
        writes.mark(keys.tasks, task_id, past.state, done, succeeded_at=batch.now_ms)
        writes.zrem(keys.retry, task_id)
        writes.zrem(keys.dead, task_id)
        # DEBUG: a burst of reports must not become a burst of log lines;
        # the batch's tally counts them.
        log.debug("task %s reported a success; its retry is cancelled", task_id)

    def _park(
        self,
        writes: Writes,
        runtime: Runtime,
        raw: bytes,
        invalid: InvalidRecord,
        batch: _Batch,
    ) -> None:
        limit = runtime.config.intake.max_record_size
        entry: dict[str, Any] = {
            "reason": invalid.reason,
            "received_at": iso_utc(batch.now_ms),
            "size": len(raw),
        }
        kept = raw[:limit]
        try:
            entry["raw"] = kept.decode("utf-8")
        except UnicodeDecodeError:
            entry["raw_base64"] = base64.b64encode(kept).decode("ascii")
        if len(kept) < len(raw):
            entry["truncated"] = True
        writes.lpush(runtime.keys.invalid, msgspec.json.encode(entry))
        batch.tally[Outcome.INVALID] += 1
        batch.history[Outcome.INVALID] += 1
        batch.parked.append(invalid.reason)

    def _finish(self, writes: Writes, runtime: Runtime, batch: _Batch) -> None:
        keys = runtime.keys
        tally, history = batch.tally, batch.history
        for (category, task, pattern), n in batch.failures.items():
            for name in ("received", f"category:{category}"):
                tally[name] += n
                history[name] += n
            history[f"task:{task}"] += n
            history[f"pattern:{pattern}"] += n
        for counter, count in batch.tally.items():
            writes.hincrby(keys.stats, counter, count)
        minutes.write(writes, keys, batch.now_ms, batch.history)
        if batch.first_due_ms is not None:
            writes.publish(keys.wake, f"retry {batch.first_due_ms}")


def _count(
    batch: _Batch,
    record: FailureRecord,
    classification: Classification,
    retried_as: str | None,
    *,
    refailed: bool,
) -> None:
    """Count one failure in the running totals and in this minute's history.

    ``refailed``: it failed again after a retry, which ran as ``retried_as``.
    """
    category = classification.category
    batch.failures[category, record.task, classification.pattern] += 1
    if refailed:
        # The retry did not take: this counts against the success rate of
        # the category it was retried under.
        batch.history[f"refailed:{retried_as or category}"] += 1
    if category == NETWORK and (host := minutes.network_host(record.error)):
        # Which host network failures name, for the analysis's advice.
        batch.history[f"host:{host}"] += 1


def _task_ids(
    records: Iterable[FailureRecord | SuccessReport | InvalidRecord],
) -> list[str]:
    """The batch's task ids, each once, in order."""
    return list(
        dict.fromkeys(
            record.task_id
            for record in records
            if not isinstance(record, InvalidRecord)
        )
    )


def _bug(exc: Exception) -> str:
    return f"recoveryd could not handle it: {type(exc).__name__}: {exc}"[:500]


def _own_queue(
    item: FailureRecord | SuccessReport | InvalidRecord, runtime: Runtime
) -> FailureRecord | SuccessReport | InvalidRecord:
    """A record whose queue is one of recoveryd's own keys is not usable.

    Pushing a retry there would corrupt recoveryd's state or feed the
    failures list back to itself.
    """
    if not isinstance(item, FailureRecord) or not item.queue:
        return item
    if item.queue.startswith(runtime.keys.prefix + ":"):
        reason = f"field `queue`: {item.queue!r} is one of recoveryd's own keys"
        return InvalidRecord(reason=reason)
    return item


def _log_some(level: int, lines: list[str], what: str) -> None:
    for line in lines[:LOG_PER_BATCH]:
        log.log(level, "%s", line)
    if len(lines) > LOG_PER_BATCH:
        log.log(
            level, "... and %d more %s in this batch", len(lines) - LOG_PER_BATCH, what
        )


def _failed_at_ms(record: FailureRecord, now_ms: int) -> int:
    if record.failed_at is None:
        return now_ms
    return round(parse_failed_at(record.failed_at) * 1000)


def _history_entry(
    classification: Classification, attempt: int, failed_ms: int, first_line: str
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "failed_at": iso_utc(failed_ms),
        "category": classification.category,
        "pattern": classification.pattern,
        "error": first_line[:ERROR_HEAD],
    }


# What intake reads back of a task it has seen before.
_RECALLED = ["attempt", "history", "state", "category", "pattern", "failed_at", "error"]


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A hash as HGETALL gives it to a script: names and values in turn."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _known(fields: list[bytes | None]) -> _Known:
    attempt, history, state, category, pattern, failed_at, error = (
        value.decode(errors="replace") if value is not None else None
        for value in fields
    )
    past = _load_history(history.encode() if history else None)
    if not past and attempt:
        # One failure so far: its history entry is the task's own fields,
        # not stored twice (see _task_fields).
        past = [
            {
                "attempt": int(attempt),
                "failed_at": iso_utc(int(failed_at or 0)),
                "category": category,
                "pattern": pattern,
                "error": error or "",
            }
        ]
    return _Known(int(attempt or 0), past, state, category)


def _task_fields(
    record: FailureRecord,
    classification: Classification,
    attempt: int,
    failed_ms: int,
    history: list[dict[str, Any]],
    first_line: str,
) -> dict[str, Any]:
    """The task's record (see `recoveryd.tasks.record`), but for its state."""
    # Text and exact integers only, so the values go to the script as they
    # are (see Writes.schedule).
    return {
        "attempt": exact(attempt),
        "failed_at": failed_ms,
        "task": record.task,
        "category": classification.category,
        "pattern": classification.pattern,
        "confidence": str(classification.confidence),
        "queue": record.queue or "",
        "payload": payload_text(record.payload) if record.queue else "",
        "error_type": record.error_type or "",
        "error": first_line[:TASK_ERROR_CHARS],
        # A first failure's history is the fields above, not stored twice.
        "history": msgspec.json.encode(history).decode() if len(history) > 1 else "",
    }


def _keepable_record(raw: bytes) -> bytes:
    """The raw record for the dead set, with a huge error cut to its ends."""
    if len(raw) <= RECORD_KEEP_BYTES:
        return raw
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        # Bytes the record decoder skipped (an unknown field's) are not
        # UTF-8: kept as replacement characters, the record stays JSON.
        try:
            data = msgspec.json.decode(raw.decode("utf-8", errors="replace"))
        except msgspec.DecodeError:
            return raw[:RECORD_KEEP_BYTES]
    half = RECORD_KEEP_BYTES // 8
    for name in ("error", "traceback"):
        text = data.get(name)
        if isinstance(text, str) and len(text) > 2 * half:
            cut = len(text) - 2 * half
            data[name] = f"{text[:half]}\n… [{cut} characters cut] …\n{text[-half:]}"
    return msgspec.json.encode(data)


def _load_history(raw: bytes | None) -> list[dict[str, Any]]:
    if not raw:
        return []
    try:
        history = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return []
    return history if isinstance(history, list) else []


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]


def _log_batch(batch: _Batch) -> None:
    """Log the batch's notable outcomes: each, up to a few, then a count.

    A burst of thousands must not become thousands of log lines.
    """
    _log_some(logging.INFO, batch.given_up, "tasks given up on")
    _log_some(
        logging.WARNING,
        [f"parked an invalid record: {r}" for r in batch.parked],
        "invalid records parked",
    )
    if log.isEnabledFor(logging.DEBUG):
        summary = ", ".join(f"{k}={v}" for k, v in sorted(batch.tally.items()))
        log.debug("committed a batch: %s", summary)
