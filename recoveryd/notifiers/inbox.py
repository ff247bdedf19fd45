"""The in-app inbox: each user's notifications, in Redis, for the app to show.

``<prefix>:inbox:<user id>`` is a list of JSON notifications, newest first
(LPUSH), capped at `[notify.inbox] max_items` and expiring `max_age` after
the newest. Applications read it with ``LRANGE key 0 N``; `recoveryd inbox
USER_ID` prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import msgspec
import redis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from recoveryd.config import InboxSettings
from recoveryd.keys import Keys
from recoveryd.notification import Notification
from recoveryd.notifiers import DeliveryError, SendsBatches

__all__ = ["InboxChannel", "read_inbox"]


class InboxChannel(SendsBatches):
    """Adds each notification to its user's inbox."""

    name = "inbox"

    def __init__(self, client: Redis, keys: Keys, settings: InboxSettings) -> None:
        self._redis = client
        self._keys = keys
        self._max_items = settings.max_items
        self._max_age_ms = round(settings.max_age_s * 1000)
        self._encoder = msgspec.json.Encoder()

    async def send_many(
        self, notifications: Sequence[Notification]
    ) -> list[DeliveryError | None]:
        """Add each to its user's inbox, all in one transaction."""
        results: list[DeliveryError | None] = []
        # The replies that say how each notification fared: slices of them.
        spans: list[tuple[int, int] | None] = []
        # Limitation: a daemon killed between this write and settling the
        # delivery adds the notification twice; fix: skip ids already listed.
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for notification in notifications:
                    user = notification.user
                    if user is None or user.id is None or str(user.id) == "":
                        spans.append(None)
                        continue
                    key = self._keys.inbox(str(user.id))
                    start = len(pipe)
                    pipe.lpush(key, self._encoder.encode(notification))
                    pipe.ltrim(key, 0, self._max_items - 1)
                    if self._max_age_ms > 0:
                        pipe.pexpire(key, self._max_age_ms)
                    spans.append((start, len(pipe)))
                replies = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise DeliveryError(f"inbox: {exc}") from None
        for span in spans:
            if span is None:
                results.append(
                    DeliveryError("inbox: the notification names no user id")
                )
                continue
            errors = [r for r in replies[span[0] : span[1]] if isinstance(r, Exception)]
            results.append(DeliveryError(f"inbox: {errors[0]}") if errors else None)
        return results

    async def aclose(self) -> None:
        return None


def read_inbox(
    client: redis.Redis, keys: Keys, user_id: str, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest ``limit`` notifications in one user's inbox (for the CLI)."""
    raws = cast(list[bytes], client.lrange(keys.inbox(user_id), 0, limit - 1))
    entries: list[dict[str, Any]] = []
    for raw in raws:
        try:
            entry = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
