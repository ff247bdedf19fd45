"""The email channel: a plain-text message to the admin over SMTP (aiosmtplib).

`security` is ``starttls`` (upgrade a plain connection, required), ``tls``
(TLS from the first byte, usually port 465) or ``none``. The server's
certificate is checked against the system's CAs, or against `ca_file` for a
private CA. One connection per message: notifications are few, and a fresh
connection never inherits a broken one.
"""

from __future__ import annotations

import ssl
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib
import anyio

from recoveryd.config import EmailSettings
from recoveryd.notification import Notification
from recoveryd.notifiers import DeliveryError
from recoveryd.notifiers.secrets import SecretError, read_secret
from recoveryd.notifiers.text import body, one_line, subject

__all__ = ["EmailChannel", "build_message"]


class EmailChannel:
    """Sends each notification as one email to the admin's addresses."""

    name = "email"

    def __init__(self, settings: EmailSettings, recipients: list[str]) -> None:
        self._settings = settings
        self._recipients = list(recipients)
        self._tls = _tls_context(settings.ca_file)

    async def send(self, notification: Notification) -> None:
        if not self._recipients:
            raise DeliveryError("no [notify.admin] email address to send to")
        message = build_message(notification, self._settings.sender, self._recipients)
        settings = self._settings
        try:
            password = read_secret(
                settings.password_env,
                settings.password_file,
                key="notify.email.password",
            )
        except SecretError as exc:
            raise DeliveryError(str(exc)) from None
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            use_tls=settings.security == "tls",
            start_tls=settings.security == "starttls",
            tls_context=self._tls,
            timeout=settings.timeout_s,
        )
        try:
            await client.connect()
            if settings.username and password is not None:
                await client.login(settings.username, password.reveal())
            await client.send_message(message)
            await client.quit()
        except (aiosmtplib.SMTPException, OSError) as exc:
            # OSError covers TLS failures, such as a certificate not trusted.
            # A failed connect leaves the socket open unless closed here, and
            # the loop closes it only on its next turn: give it that turn.
            client.close()
            await anyio.sleep(0)
            where = f"{settings.host}:{settings.port}"
            raise DeliveryError(f"smtp {where}: {_describe(exc)}") from None
        finally:
            client.close()

    async def aclose(self) -> None:
        return None


def build_message(
    notification: Notification, sender: str, recipients: list[str]
) -> EmailMessage:
    """The email for one notification, with headers a mail filter can sort by."""
    message = EmailMessage()
    message["Subject"] = subject(notification)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = sender.rpartition("@")[2] or "recoveryd"
    message["Message-ID"] = make_msgid(idstring=uuid.uuid4().hex[:12], domain=domain)
    # Header values come from the record: a line break there would be a
    # header injection, and the email library refuses it outright.
    message["X-Recoveryd-Type"] = one_line(notification.type)
    message["X-Recoveryd-Task-Id"] = one_line(notification.task_id)[:200]
    message["X-Recoveryd-Count"] = str(notification.count)
    if notification.group:
        message["X-Recoveryd-Group"] = one_line(notification.group)
    message.set_content(body(notification))
    return message


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {' '.join(text.split())[:300]}"
