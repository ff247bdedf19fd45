"""Pauses and silences: an operator's hold on retries, and on notifications.

``recoveryd pause category:C`` (or ``task:T``) holds the retries of a
category or a task, for a known outage. The dispatch script moves each due
entry of a paused one into ``<p>:held:<matcher>``, keeping its due time,
instead of sending it: nothing goes out, nothing is lost. ``resume`` lifts
the pause and puts the held entries back into the retry set one every
1/rate seconds, oldest first, so the backlog goes out as a paced stream,
not all at once onto a service that has just come back.

``recoveryd silence MATCHER --for 2h`` quiets the notifications a matcher
names until then: each keeps its line in the alert log, and is sent on no
other channel. A silence matcher is ``category:``, ``task:``, ``pattern:``
or ``type:`` (the notification's type) and a name, in which ``*`` matches
any run of characters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import msgspec
import re2
import redis

from recoveryd.connection import time_ms_sync
from recoveryd.keys import Keys
from recoveryd.notification import Notification
from recoveryd.scripts import RELEASE

__all__ = [
    "PAUSE_KINDS",
    "SILENCE_KINDS",
    "Pause",
    "PauseError",
    "Released",
    "Silence",
    "Silences",
    "compile_glob",
    "list_pauses",
    "list_silences",
    "parse_matcher",
    "pause",
    "resume",
    "silence",
    "unsilence",
]

PAUSE_KINDS = ("category", "task")
SILENCE_KINDS = ("category", "task", "pattern", "type")
# The one channel a silence leaves open: the record of what happened.
KEPT_CHANNEL = "alert_log"
RELEASE_CHUNK = 1000
_NAME_CHARS = 200


class PauseError(ValueError):
    """A matcher or a request that cannot be carried out, said in one line."""


class Pause(msgspec.Struct, kw_only=True):
    matcher: str
    since_ms: int
    reason: str = ""
    held: int = 0


class Silence(msgspec.Struct, kw_only=True):
    matcher: str
    until_ms: int
    since_ms: int
    reason: str = ""


class Released(msgspec.Struct, kw_only=True):
    """What a resume put back: how many, and when the last of them is due."""

    matcher: str
    released: int
    dropped: int
    last_due_ms: int | None
    rate: float


def parse_matcher(
    text: str, kinds: Sequence[str], categories: Iterable[str] = ()
) -> str:
    """``kind:name`` from what an operator typed; a bare category name works too."""
    kind, sep, name = text.strip().partition(":")
    if not sep:
        if kind in set(categories):
            return f"category:{kind}"
        raise PauseError(
            f"expected {' or '.join(k + ':NAME' for k in kinds)}, got {text!r}"
        )
    if kind not in kinds:
        raise PauseError(f"{kind!r} is not one of {', '.join(kinds)}")
    if not name or len(name) > _NAME_CHARS or any(c.isspace() for c in name):
        raise PauseError(f"expected a name after {kind}:, without spaces")
    if "*" in name and kinds is PAUSE_KINDS:
        raise PauseError("a pause names one category or task exactly, without *")
    return f"{kind}:{name}"


def pause(client: redis.Redis, keys: Keys, matcher: str, reason: str = "") -> bool:
    """Hold the retries ``matcher`` names; False if it was paused already."""
    details = {"since_ms": time_ms_sync(client), "reason": reason}
    added = client.hsetnx(keys.paused, matcher, msgspec.json.encode(details).decode())
    return bool(added)


def resume(client: redis.Redis, keys: Keys, matcher: str, *, rate: float) -> Released:
    """Lift a pause and release what it held, ``rate`` entries a second."""
    if rate <= 0:
        raise PauseError("the release rate must be above 0 per second")
    lifted = client.hdel(keys.paused, matcher)
    held = keys.held(matcher)
    if not lifted and not client.exists(held):
        raise PauseError(f"{matcher} is not paused")

    start_ms = time_ms_sync(client)
    interval_ms = 1000.0 / rate
    released = dropped = 0
    last_due: float = -1
    while True:
        reply = client.eval(
            RELEASE,
            3,
            held,
            keys.retry,
            keys.tasks,
            repr(start_ms + released * interval_ms),
            repr(interval_ms),
            str(RELEASE_CHUNK),
        )
        chunk, gone, last, left = (float(x) for x in cast(list[Any], reply))
        released += int(chunk)
        dropped += int(gone)
        last_due = last if last >= 0 else last_due
        if left == 0 or chunk + gone == 0:
            break
    if released:
        client.publish(keys.wake, f"retry {start_ms}")
    return Released(
        matcher=matcher,
        released=released,
        dropped=dropped,
        last_due_ms=math.ceil(last_due) if last_due >= 0 else None,
        rate=rate,
    )


def list_pauses(client: redis.Redis, keys: Keys) -> list[Pause]:
    """Every pause in force, with how many retries it holds."""
    raw = cast(dict[bytes, bytes], client.hgetall(keys.paused))
    pauses = [_pause(k.decode(), v) for k, v in sorted(raw.items())]
    if pauses:
        pipe = client.pipeline(transaction=False)
        for item in pauses:
            pipe.zcard(keys.held(item.matcher))
        for item, count in zip(pauses, pipe.execute(), strict=True):
            item.held = int(count)
    return pauses


def _pause(matcher: str, raw: bytes) -> Pause:
    try:
        details = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        details = {}
    return Pause(
        matcher=matcher,
        since_ms=int(details.get("since_ms", 0)),
        reason=str(details.get("reason", "")),
    )


def silence(
    client: redis.Redis, keys: Keys, matcher: str, *, for_s: float, reason: str = ""
) -> Silence:
    """Quiet the notifications ``matcher`` names for ``for_s`` seconds."""
    if for_s <= 0:
        raise PauseError("a silence needs a duration above zero, e.g. --for 2h")
    now_ms = time_ms_sync(client)
    item = Silence(
        matcher=matcher,
        since_ms=now_ms,
        until_ms=now_ms + round(for_s * 1000),
        reason=reason,
    )
    details = {"until_ms": item.until_ms, "since_ms": now_ms, "reason": reason}
    client.hset(keys.silences, matcher, msgspec.json.encode(details).decode())
    return item


def unsilence(client: redis.Redis, keys: Keys, matcher: str) -> bool:
    return bool(client.hdel(keys.silences, matcher))


def list_silences(client: redis.Redis, keys: Keys) -> list[Silence]:
    """Silences in force; those that have run out are removed on the way."""
    raw = cast(dict[bytes, bytes], client.hgetall(keys.silences))
    now_ms = time_ms_sync(client)
    silences = Silences.from_hash(raw, now_ms)
    expired = [k.decode() for k in raw if k.decode() not in silences.matchers]
    if expired:
        client.hdel(keys.silences, *expired)
    return silences.items


class Silences:
    """The silences in force at one moment, ready to match notifications."""

    def __init__(self, items: Sequence[Silence]) -> None:
        self.items = sorted(items, key=lambda item: item.matcher)
        self.matchers = {item.matcher for item in self.items}
        self._rules = [(item.matcher, *_rule(item.matcher)) for item in self.items]

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes], now_ms: int) -> Silences:
        """From ``HGETALL <p>:silences``, keeping those still in force."""
        items: list[Silence] = []
        for key, value in raw.items():
            try:
                details = msgspec.json.decode(value)
                until_ms = int(details["until_ms"])
            except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                continue
            if until_ms > now_ms:
                items.append(
                    Silence(
                        matcher=key.decode(),
                        until_ms=until_ms,
                        since_ms=int(details.get("since_ms", 0)),
                        reason=str(details.get("reason", "")),
                    )
                )
        return cls(items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def match(self, notification: Notification) -> str | None:
        """The matcher of the first silence that names this notification."""
        values = {
            "category": notification.analysis.category,
            "task": notification.task,
            "pattern": notification.analysis.pattern,
            "type": notification.type,
        }
        for matcher, kind, regex in self._rules:
            if regex.fullmatch(values.get(kind, "")) is not None:
                return matcher
        return None

    def quiet(self, notification: Notification, channels: Sequence[str]) -> list[str]:
        """The channels this notification still goes to: all, or the alert log."""
        if not self.items or self.match(notification) is None:
            return list(channels)
        return [channel for channel in channels if channel == KEPT_CHANNEL]


def _rule(matcher: str) -> tuple[str, Any]:
    kind, _, name = matcher.partition(":")
    return kind, compile_glob(name)


def compile_glob(name: str) -> Any:
    """An RE2 regex for a name in which ``*`` matches any run of characters.

    Match it with ``fullmatch``; RE2 keeps that linear in the text.
    """
    return re2.compile(".*".join(re2.escape(part) for part in name.split("*")))
