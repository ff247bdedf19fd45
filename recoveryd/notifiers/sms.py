"""The SMS channel: a short text to the admin's phones over a provider's API.

``twilio``: one form POST per number (``To``, ``From``, ``Body``) to `url`,
with HTTP basic auth, `account` as the user and the token as the password.
``webhook``: one JSON POST ``{"to": [...], "from", "text", "notification"}``
to `url`, with ``Authorization: Bearer <token>`` when a token is set. The
text fits in two SMS (306 GSM characters).
"""

from __future__ import annotations

import httpx

from recoveryd.config import SmsSettings
from recoveryd.notification import Notification
from recoveryd.notifiers import DeliveryError
from recoveryd.notifiers.http import new_client, post
from recoveryd.notifiers.secrets import Secret, SecretError, read_secret
from recoveryd.notifiers.text import sms_text

__all__ = ["SmsChannel"]


class SmsChannel:
    """Sends each notification as one text to every admin phone."""

    name = "sms"

    def __init__(
        self,
        settings: SmsSettings,
        recipients: list[str],
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = settings
        self._recipients = list(recipients)
        self._client = client or new_client(settings.timeout_s)

    async def send(self, notification: Notification) -> None:
        if not self._recipients:
            raise DeliveryError("no [notify.admin] phone number to send to")
        token = self._token()
        text = sms_text(notification)
        if self._settings.provider == "twilio":
            await self._twilio(text, token)
        else:
            await self._webhook(text, token, notification)

    async def _twilio(self, text: str, token: Secret | None) -> None:
        settings = self._settings
        auth = httpx.BasicAuth(settings.account or "", token.reveal() if token else "")
        # Limitation: a retry after a partial failure texts every number
        # again; fix: remember per-number success in the delivery.
        for number in self._recipients:
            form = {"To": number, "From": settings.sender or "", "Body": text}
            await post(self._client, "sms", settings.url, auth=auth, data=form)

    async def _webhook(
        self, text: str, token: Secret | None, notification: Notification
    ) -> None:
        payload = {
            "to": self._recipients,
            "from": self._settings.sender,
            "text": text,
            "notification": {
                "id": notification.id,
                "type": notification.type,
                "severity": notification.severity,
                "task_id": notification.task_id,
                "count": notification.count,
            },
        }
        headers = {"Authorization": f"Bearer {token.reveal()}"} if token else None
        await post(
            self._client, "sms", self._settings.url, headers=headers, json=payload
        )

    def _token(self) -> Secret | None:
        try:
            return read_secret(
                self._settings.token_env,
                self._settings.token_file,
                key="notify.sms.token",
            )
        except SecretError as exc:
            raise DeliveryError(str(exc)) from None

    async def aclose(self) -> None:
        await self._client.aclose()
