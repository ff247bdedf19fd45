"""Notification channels: one module per channel, behind one small interface.

A channel delivers one notification or raises `DeliveryError`; retrying,
timeouts and concurrency are the delivery loop's business, not the
channel's. A channel that can deliver many at little more than the cost of
one (the alert logs, the inbox) also offers `send_many`, which the loop
uses for a whole claimed batch. The alert logs are always on; the other
channels are on when their config section is present.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from recoveryd.notification import Notification

__all__ = ["BatchChannel", "Channel", "DeliveryError", "SendsBatches"]


class DeliveryError(Exception):
    """A notification did not reach its channel; it will be tried again."""


class Channel(Protocol):
    """Somewhere a notification can be sent."""

    name: str

    async def send(self, notification: Notification) -> None:
        """Deliver one notification, or raise `DeliveryError`."""
        ...

    async def aclose(self) -> None:
        """Release what the channel holds open (files, connections)."""
        ...


class SendsBatches:
    """For a channel with `send_many`: `send` is a batch of one."""

    async def send_many(
        self, notifications: Sequence[Notification]
    ) -> list[DeliveryError | None]:
        raise NotImplementedError

    async def send(self, notification: Notification) -> None:
        [error] = await self.send_many([notification])
        if error is not None:
            raise error


@runtime_checkable
class BatchChannel(Channel, Protocol):
    """A channel that delivers a batch at once."""

    async def send_many(
        self, notifications: Sequence[Notification]
    ) -> list[DeliveryError | None]:
        """Deliver each; one result each, in order: None, or why it failed.

        Raises `DeliveryError` only when none could be delivered.
        """
        ...
