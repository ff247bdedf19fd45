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
from itertools import chain
from typing import Any

import msgspec

from recoveryd.scripts import Scripts, eval_command

__all__ = ["Writes", "exact", "read_commit"]

log = logging.getLogger(__name__)

_Value = str | bytes | int | float
_Arg = str | int | msgspec.Raw
_encode = msgspec.msgpack.Encoder().encode
_MOST_ARGS = 1000
# Redis writes a Lua number as an integer exactly only below this.
_EXACT_INT = 1 << 53


def _arg(value: _Value) -> _Arg:
    """A value in a form the script reads back exactly.

    Redis's MessagePack library knows no binary type, so bytes go in as a
    string of the same bytes. Small integers go as they are; a float or a
    huge integer goes as text, since Redis would write the Lua number with
    17 digits ("0.94999999999999996").
    """
    if isinstance(value, bytes):
        return msgspec.Raw(_str_header(len(value)) + value)
    if type(value) is int:
        return exact(value)
    return str(value)


def exact(n: int) -> int | str:
    """An integer as the script reads it back exactly: as is, or huge as text."""
    return n if -_EXACT_INT < n < _EXACT_INT else str(n)


def _args(values: Iterable[_Value]) -> list[_Arg]:
    # Most values are text or small integers already: checked inline, far
    # more cheaply than by a call per value.
    return [
        v
        if type(v) is str or (type(v) is int and -_EXACT_INT < v < _EXACT_INT)
        else _arg(v)
        for v in values
    ]


def _str_header(size: int) -> bytes:
    """MessagePack's header for a string of ``size`` bytes."""
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
        self._ops: list[list[_Arg]] = []

    def __len__(self) -> int:
        return len(self._ops)

    def drop_from(self, mark: int) -> None:
        """Forget the writes added since ``len()`` was ``mark``."""
        del self._ops[mark:]

    def call(self, *args: _Value) -> None:
        self._ops.append(_args(args))

    def hset(self, key: str, mapping: Mapping[str, _Value]) -> None:
        self._ops.append(["HSET", key, *_args(chain.from_iterable(mapping.items()))])

    def zadd(self, key: str, mapping: Mapping[str | bytes, _Value]) -> None:
        op: list[_Arg] = ["ZADD", key]
        for member, score in mapping.items():
            op += (_arg(score), _arg(member))
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
        fields: Mapping[str, str | int],
    ) -> None:
        """Write a task's hash, keep it ``ttl_ms``, and make its retry due.

        ``fields`` go as they are, unchecked: text, and integers that
        `exact` let through (one task's dozen fields, for every retry).
        """
        op: list[_Arg] = ["+schedule", retry, task, task_id, due_ms, ttl_ms]
        op += chain.from_iterable(fields.items())
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
        tail: bytes,
    ) -> None:
        """Send a notification if it is the first of its group, else count it.

        ``keys``: the group, the open groups and the wake channel;
        ``deliveries``: (channel, outbox, head) for each channel, where the
        delivery is head, ``template`` and ``tail`` run together.
        """
        op: list[_Arg] = ["+group", *keys, now_ms, window_ms]
        op += (group_id, task_id, samples, _arg(template))
        outboxes: list[_Arg] = []
        names = []
        for channel, outbox, head in deliveries:
            names.append(channel)
            outboxes += (outbox, _arg(head))
        op += (" ".join(names), _arg(tail))
        op += outboxes
        self._ops.append(op)

    def count(self, group: str, *, now_ms: int, task_id: str, samples: int) -> None:
        """Count a failure in a group that an earlier `group` write named."""
        self._ops.append(["+count", group, now_ms, task_id, samples])

    async def commit(
        self,
        scripts: Scripts,
        inflight: str | None = None,
        holding: int = 0,
        batch: int | None = None,
    ) -> bool:
        """Apply the writes, and take a batch off the in-flight list.

        ``inflight`` must hold ``holding`` records, the oldest ``batch`` of
        them this batch's (all by default); they are removed with the writes.
        False, with nothing written, if it does not: another daemon took its
        records back. Writes that Redis refuses (a key of the wrong type)
        are logged; the rest are applied.
        """
        keys = [inflight] if inflight is not None else []
        args: list[int | bytes] = [holding, _encode(self._ops)]
        if batch is not None:
            args.append(batch)
        done, _ = read_commit(await scripts.commit(keys=keys, args=args))
        return done

    def commit_command(
        self,
        scripts: Scripts,
        inflight: str,
        holding: int,
        batch: int,
        *,
        take: tuple[str, int, int] | None = None,
    ) -> list[Any]:
        """`commit` as one command to send (see `recoveryd.connection.exchange`).

        ``take``: then take the next batch, new records only: the failures
        list, at most how many records and about how many bytes.
        """
        keys = [inflight]
        args: list[str | int | bytes] = [holding, _encode(self._ops), batch]
        if take is not None:
            failures, most, budget = take
            keys.append(failures)
            args += (most, budget)
        return eval_command(scripts.commit, keys, args)


def read_commit(reply: list[Any]) -> tuple[bool, list[Any] | None]:
    """Whether COMMIT applied the writes, and its take's reply if it took.

    Writes Redis refused are logged.
    """
    done, failed, first = int(reply[0]), int(reply[1]), reply[2]
    if failed:
        error = first.decode() if isinstance(first, bytes) else str(first)
        log.error("Redis refused %d writes; the first: %s", failed, error)
    return done == 1, reply[3:] if len(reply) > 3 else None
