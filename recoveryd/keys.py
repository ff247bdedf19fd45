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

    def task(self, task_id: str) -> str:
        """Hash holding one task's state, record and history."""
        return f"{self.prefix}:task:{task_id}"

    @property
    def task_prefix(self) -> str:
        return f"{self.prefix}:task:"
