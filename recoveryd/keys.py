"""Redis key names, built once from the configured prefix.

The first four are the public contract (operators read them with plain Redis
commands); the rest are recoveryd's own bookkeeping. All share the prefix, so
a prefix with a hash tag such as ``{recoveryd}`` keeps every key in one
Redis Cluster slot and the multi-key scripts valid there.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "recoveryd"

    @property
    def failures(self) -> str:
        """List applications LPUSH failure records onto."""
        return f"{self.prefix}:failures"

    @property
    def retry(self) -> str:
        """Sorted set of task ids scored by due time (Redis clock, ms)."""
        return f"{self.prefix}:retry"

    @property
    def dead(self) -> str:
        """Sorted set of task ids scored by when they died (ms)."""
        return f"{self.prefix}:dead"

    @property
    def invalid(self) -> str:
        """List of parked records, each a JSON object with its reason."""
        return f"{self.prefix}:invalid"

    @property
    def consumers(self) -> str:
        """Hash of daemon id to its last heartbeat (ms), for in-flight recovery."""
        return f"{self.prefix}:consumers"

    def outbox(self, channel: str) -> str:
        """Sorted set of one channel's pending deliveries scored by due time."""
        return f"{self.prefix}:outbox:{channel}"

    def sent(self, channel: str) -> str:
        """Sorted set of one channel's recent sends (ms), for its rate limit."""
        return f"{self.prefix}:sent:{channel}"

    @property
    def groups(self) -> str:
        """Sorted set of open notification groups scored by their window's end."""
        return f"{self.prefix}:groups"

    def group(self, group_id: str) -> str:
        """Hash of one notification group: its first notification and counts."""
        return f"{self.prefix}:group:{group_id}"

    def inbox(self, user_id: str) -> str:
        """List of one user's in-app notifications, newest first (JSON each)."""
        return f"{self.prefix}:inbox:{user_id}"

    @property
    def stats(self) -> str:
        """Hash of running counters (received, scheduled, dispatched, ...)."""
        return f"{self.prefix}:stats"

    @property
    def wake(self) -> str:
        """Pub/Sub channel: an entry was scheduled; the payload is its due ms."""
        return f"{self.prefix}:wake"

    @property
    def daemon_info(self) -> str:
        """Hash of facts a running daemon publishes (embedded address, version)."""
        return f"{self.prefix}:daemon"

    def inflight(self, consumer: str) -> str:
        """One daemon's in-flight list: records taken but not yet committed."""
        return f"{self.prefix}:inflight:{consumer}"

    @property
    def tasks(self) -> str:
        """Hash of task id to its record (see `recoveryd.tasks`)."""
        return f"{self.prefix}:tasks"

    @property
    def names(self) -> str:
        """Hash of the names task records store as numbers, both ways.

        Like the tasks hash, it must not be evicted: run Redis with
        ``maxmemory-policy noeviction``, as any job store needs.
        """
        return f"{self.prefix}:names"

    @property
    def done(self) -> str:
        """Sorted set of recovered and succeeded task ids, by when to forget them."""
        return f"{self.prefix}:done"

    @property
    def legacy_task_prefix(self) -> str:
        """Where versions before `tasks` kept each task, a hash per key."""
        return f"{self.prefix}:task:"

    def legacy_payload(self, task_id: str) -> str:
        """Where those versions kept a task's long payload."""
        return f"{self.prefix}:payload:{task_id}"

    def history(self, minute: int) -> str:
        """Hash of one minute's counters (see `recoveryd.history`)."""
        return f"{self.prefix}:hist:{minute}"

    @property
    def history_prefix(self) -> str:
        return f"{self.prefix}:hist:"

    # Issue 4: adaptive backoff, periodic jobs, pauses, silences and the
    # recovery watch (see `recoveryd.adaptive`, `.jobs`, `.pause`, `.history`).

    @property
    def base_delays(self) -> str:
        """Hash of category to its adapted base delay (s), and the base it left."""
        return f"{self.prefix}:base_delay"

    def job(self, name: str) -> str:
        """Hash of one periodic job's lease, last run and last summary."""
        return f"{self.prefix}:job:{name}"

    @property
    def paused(self) -> str:
        """Hash of paused matchers (``category:C``, ``task:T``) to JSON details."""
        return f"{self.prefix}:paused"

    def held(self, matcher: str) -> str:
        """Sorted set of due retries a pause holds, scored by their due time."""
        return f"{self.held_prefix}{matcher}"

    @property
    def held_prefix(self) -> str:
        return f"{self.prefix}:held:"

    @property
    def silences(self) -> str:
        """Hash of silence matchers to JSON details (until when, why)."""
        return f"{self.prefix}:silences"

    @property
    def watch(self) -> str:
        """Sorted set of re-dispatched task ids by dispatch time, until judged."""
        return f"{self.prefix}:watch"

    @property
    def inflight_prefix(self) -> str:
        return f"{self.prefix}:inflight:"
