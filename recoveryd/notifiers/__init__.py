"""Notification channels: one module per channel, behind one small interface.

A channel delivers one notification or raises `DeliveryError`; retrying,
timeouts and concurrency are the delivery loop's business, not the
channel's. The alert logs are always on; the other channels are on when
their config section is present.
"""

from __future__ import annotations

from typing import Protocol

from recoveryd.notification import Notification

__all__ = ["Channel", "DeliveryError"]


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
