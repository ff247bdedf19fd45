"""Channel secrets: read from an environment variable or a file, at use.

A secret is read when a notification is sent, not when the daemon starts,
so a rotated token file is picked up without a restart. Errors name the
config key and the variable or file, never the value; a `Secret` prints as
``***`` so that no log line or traceback can carry it.
"""

from __future__ import annotations

import os
from pathlib import Path

from recoveryd.config import Config

__all__ = ["Secret", "SecretError", "missing_secrets", "read_secret"]


class SecretError(Exception):
    """A configured secret that cannot be read; ``key`` is its config key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.reason = message
        super().__init__(f"{key}: {message}")


class Secret:
    """A secret value that never shows itself in ``str``, ``repr`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def read_secret(env: str | None, file: str | None, *, key: str) -> Secret | None:
    """The secret named by ``<key>_env`` or ``<key>_file``; None if neither is set."""
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise SecretError(f"{key}_env", f"environment variable {env} is not set")
        return Secret(value)
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SecretError(f"{key}_file", f"cannot read {file}: {reason}") from None
        if not value:
            raise SecretError(f"{key}_file", f"{file} is empty")
        return Secret(value)
    return None


def missing_secrets(config: Config) -> list[SecretError]:
    """Every configured channel's secret that cannot be read right now."""
    notify = config.notify
    wanted: list[tuple[str, str | None, str | None]] = []
    if notify.email is not None:
        email = notify.email
        wanted.append(
            ("notify.email.password", email.password_env, email.password_file)
        )
    if notify.sms is not None:
        sms = notify.sms
        wanted.append(("notify.sms.token", sms.token_env, sms.token_file))
    if notify.push is not None:
        push = notify.push
        wanted.append(("notify.push.token", push.token_env, push.token_file))
    problems: list[SecretError] = []
    for key, env, file in wanted:
        try:
            read_secret(env, file, key=key)
        except SecretError as exc:
            problems.append(exc)
    return problems
