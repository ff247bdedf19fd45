"""The push channel: a notice to the task's user over a push provider's API.

The target is the record's ``user.push``: for ``ntfy`` a topic name (letters,
digits, ``-`` and ``_``), appended to `url` as a path segment; a notification
with no target goes to `url` itself, so `url` may name an admin topic. A
record never supplies a whole URL: the daemon posts only under `url`.

``ntfy``: POST the text as the body with ``Title``, ``Priority`` and
``Tags`` headers. ``webhook``: POST JSON ``{"to", "title", "message",
"priority", "notification"}`` to `url`. Both send ``Authorization: Bearer
<token>`` when a token is set.
"""

from __future__ import annotations

import re
from email.header import Header

import httpx
import msgspec

from recoveryd.config import PushSettings
from recoveryd.notification import Notification
from recoveryd.notifiers import DeliveryError
from recoveryd.notifiers.http import new_client, post
from recoveryd.notifiers.secrets import SecretError, read_secret
from recoveryd.notifiers.text import push_text

__all__ = ["PushChannel", "valid_target"]

_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,64}")
# ntfy's priorities: 5 urgent, 4 high, 3 default.
_PRIORITY = {"critical": "5", "error": "4", "warning": "3", "info": "2"}


def valid_target(target: str | None) -> bool:
    """Whether a record's ``user.push`` can be a topic under the configured url."""
    return target is not None and _TOPIC.fullmatch(target) is not None


class PushChannel:
    """Sends each notification as one push to its user's topic."""

    name = "push"

    def __init__(
        self, settings: PushSettings, client: httpx.AsyncClient | None = None
    ) -> None:
        self._settings = settings
        self._client = client or new_client(settings.timeout_s)

    async def send(self, notification: Notification) -> None:
        target = notification.user.push if notification.user else None
        if target is not None and not valid_target(target):
            raise DeliveryError(f"push: {target[:80]!r} is not a topic name")
        headers = self._auth()
        if self._settings.provider == "ntfy":
            await self._ntfy(notification, target, headers)
        else:
            await self._webhook(notification, target, headers)

    async def _ntfy(
        self, notification: Notification, target: str | None, headers: dict[str, str]
    ) -> None:
        url = self._settings.url.rstrip("/")
        if target:
            url = f"{url}/{target}"
        headers |= {
            "Title": _header(notification.title),
            "Priority": _PRIORITY.get(notification.severity, "3"),
            "Tags": f"{notification.severity},{notification.analysis.category}",
        }
        content = push_text(notification).encode()
        await post(self._client, "push", url, headers=headers, content=content)

    async def _webhook(
        self, notification: Notification, target: str | None, headers: dict[str, str]
    ) -> None:
        payload = {
            "to": target,
            "title": notification.title,
            "message": push_text(notification),
            "priority": _PRIORITY.get(notification.severity, "3"),
            "notification": msgspec.to_builtins(notification),
        }
        await post(
            self._client, "push", self._settings.url, headers=headers, json=payload
        )

    def _auth(self) -> dict[str, str]:
        settings = self._settings
        try:
            token = read_secret(
                settings.token_env, settings.token_file, key="notify.push.token"
            )
        except SecretError as exc:
            raise DeliveryError(str(exc)) from None
        return {"Authorization": f"Bearer {token.reveal()}"} if token else {}

    async def aclose(self) -> None:
        await self._client.aclose()


def _header(text: str) -> str:
    """A header value: ASCII as is, anything else RFC 2047-encoded (ntfy reads it)."""
    line = " ".join(text.split())[:250]
    if line.isascii():
        return line
    return Header(line, "utf-8").encode()
