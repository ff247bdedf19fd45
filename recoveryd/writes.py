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

from recoveryd.luavalues import Value as _Value
from recoveryd.luavalues import exact
from recoveryd.luavalues import lua_record as _record
from recoveryd.luavalues import lua_value as _arg
from recoveryd.luavalues import lua_values as _args
from recoveryd.scripts import Scripts, eval_command

__all__ = ["Writes", "exact", "read_commit"]

log = logging.getLogger(__name__)

_encode = msgspec.msgpack.Encoder().encode
_MOST_ARGS = 1000


class Writes:
    """Redis commands to apply together, in order, with ``commit``.

    The command methods take the same arguments as redis-py's, so code that
    writes may be handed a pipeline or a `Writes`.
    """

    __slots__ = ("_ops",)

    def __init__(self) -> None:
        self._ops: list[list[Any]] = []

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
        op: list[Any] = ["ZADD", key]
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
        keys: tuple[str, str],
        task_id: str,
        due_ms: int,
        task: list[Any],
    ) -> None:
        """Store a task's record and make its retry due at ``due_ms``.

        ``keys``: the tasks and names hashes; ``task``: the record as
        `recoveryd.tasks.record` makes it. Its values go as they are,
        unchecked (a record for every retry): text, and integers that
        `exact` let through, never bytes.
        """
        self._ops.append(["+schedule", retry, *keys, task_id, due_ms, task])

    def store(self, keys: tuple[str, str], task_id: str, task: list[Any]) -> None:
        """Store a task's record (see `schedule`); any bytes go as text."""
        self._ops.append(["+store", *keys, task_id, _record(task)])

    def mark(
        self,
        tasks: str,
        task_id: str,
        state: str,
        index: tuple[str, int] | None = None,
        **more: _Value,
    ) -> None:
        """Set a known task's state ('' keeps it) and what its ``more`` holds.

        ``index``: the sorted set and score a recovered or succeeded task
        goes in, added before anything is written.
        """
        op: list[Any] = ["+mark", tasks, task_id, state, *(index or ("", 0))]
        op += _args(chain.from_iterable(more.items()))
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
        op: list[Any] = ["+group", *keys, now_ms, window_ms]
        op += (group_id, task_id, samples, _arg(template))
        outboxes: list[Any] = []
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
