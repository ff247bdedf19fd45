"""A batch's writes, gathered and then applied by one script call.

Intake decides a whole batch's outcomes before it writes any of them. Sent
as a transaction of a thousand commands, the writes cost the client more
than the deciding did: each command packed, each reply read back. Gathered
here instead, they go to Redis as one MessagePack argument of the COMMIT
script (see `recoveryd.scripts`), which applies them in one step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from recoveryd.scripts import Scripts

__all__ = ["Writes"]

log = logging.getLogger(__name__)

_Value = str | bytes | int | float
_encode = msgspec.msgpack.Encoder().encode
_MOST_ARGS = 1000


def _text(value: _Value) -> str | msgspec.Raw:
    """A value as MessagePack text, the only form the script can read.

    Redis's MessagePack library knows no binary type, so bytes go in as a
    string of the same bytes. Numbers go in as text too: Redis would turn a
    Lua number into text of its own choosing, losing "0.95" or a big integer.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return msgspec.Raw(_str_header(len(value)) + value)
    return str(value)


def _str_header(size: int) -> bytes:
    if size < 32:
        return bytes((0xA0 | size,))
    if size < 1 << 8:
        return b"\xd9" + size.to_bytes(1, "big")
    if size < 1 << 16:
        return b"\xda" + size.to_bytes(2, "big")
    return b"\xdb" + size.to_bytes(4, "big")


class Writes:
    """Redis commands to apply together, in order, with ``commit``.

    The command methods take the same arguments as redis-py's, so code that
    writes may be handed a pipeline or a `Writes`.
    """

    __slots__ = ("_ops",)

    def __init__(self) -> None:
        self._ops: list[list[str | msgspec.Raw]] = []

    def __len__(self) -> int:
        return len(self._ops)

    def drop_from(self, mark: int) -> None:
        """Forget the writes added since ``len()`` was ``mark``."""
        del self._ops[mark:]

    def call(self, *args: _Value) -> None:
        self._ops.append([_text(arg) for arg in args])

    def hset(self, key: str, mapping: Mapping[str, _Value]) -> None:
        op: list[str | msgspec.Raw] = ["HSET", key]
        for name, value in mapping.items():
            op += (name, _text(value))
        self._ops.append(op)

    def zadd(self, key: str, mapping: Mapping[str | bytes, _Value]) -> None:
        op: list[str | msgspec.Raw] = ["ZADD", key]
        for member, score in mapping.items():
            op += (_text(score), _text(member))
        self._ops.append(op)

    def zrem(self, key: str, *members: str | bytes) -> None:
        self.call("ZREM", key, *members)

    def hincrby(self, key: str, name: str, amount: int = 1) -> None:
        self.call("HINCRBY", key, name, amount)

    def lpush(self, key: str, *values: _Value) -> None:
        self._many("LPUSH", key, values)

    def rpush(self, key: str, *values: _Value) -> None:
        self._many("RPUSH", key, values)

    def _many(self, command: str, key: str, values: Sequence[_Value]) -> None:
        # A Lua call takes a few thousand arguments at most.
        for first in range(0, len(values), _MOST_ARGS):
            self.call(command, key, *values[first : first + _MOST_ARGS])

    def pexpire(self, key: str, ms: int) -> None:
        self.call("PEXPIRE", key, ms)

    def persist(self, key: str) -> None:
        self.call("PERSIST", key)

    def publish(self, channel: str, message: str) -> None:
        self.call("PUBLISH", channel, message)

    def schedule(
        self,
        retry: str,
        task: str,
        task_id: str,
        *,
        due_ms: int,
        ttl_ms: int,
        fields: Mapping[str, _Value],
    ) -> None:
        """Write a task's hash, keep it ``ttl_ms``, and make its retry due."""
        op: list[str | msgspec.Raw] = ["+schedule", retry, task, task_id]
        op += (str(due_ms), str(ttl_ms))
        for name, value in fields.items():
            op += (name, _text(value))
        self._ops.append(op)

    def group(
        self,
        keys: Sequence[str],
        *,
        now_ms: int,
        window_ms: int,
        group_id: str,
        task_id: str,
        samples: int,
        template: bytes,
        deliveries: Iterable[tuple[str, str, bytes]],
    ) -> None:
        """Send a notification if it is the first of its group, else count it.

        ``keys``: the group, the open groups and the wake channel;
        ``deliveries``: (channel, outbox, delivery) for each channel.
        """
        op: list[str | msgspec.Raw] = ["+group", *keys, str(now_ms), str(window_ms)]
        op += (group_id, task_id, str(samples), _text(template))
        outboxes: list[str | msgspec.Raw] = []
        names = []
        for channel, outbox, delivery in deliveries:
            names.append(channel)
            outboxes += (outbox, _text(delivery))
        op.append(" ".join(names))
        op += outboxes
        self._ops.append(op)

    async def commit(
        self, scripts: Scripts, inflight: str | None = None, holding: int = 0
    ) -> bool:
        """Apply the writes, and empty ``inflight`` (holding ``holding`` records).

        False, with nothing written, if ``inflight`` no longer holds that many:
        its batch was taken back by another daemon. Writes that Redis refuses
        (a key of the wrong type) are logged; the rest are applied.
        """
        keys = [inflight] if inflight is not None else []
        reply = await scripts.commit(keys=keys, args=[holding, _encode(self._ops)])
        done, failed, first = int(reply[0]), int(reply[1]), reply[2]
        if failed:
            error = first.decode() if isinstance(first, bytes) else str(first)
            log.error("Redis refused %d writes; the first: %s", failed, error)
        return done == 1
