"""The failure categories: what each one means for retrying and notifying.

Seven are built in; operators override their settings or add their own in
`recoveryd.toml` under ``[categories.NAME]``.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "BUILTIN_CATEGORIES",
    "BUSINESS",
    "CONFIG",
    "DATA",
    "NETWORK",
    "NOTIFY",
    "RATE_LIMITED",
    "RETRY",
    "SYSTEM",
    "TEMPORARY",
    "CategorySettings",
]

NETWORK = "recoverable_network"
SYSTEM = "recoverable_system"
TEMPORARY = "recoverable_temporary"
DATA = "unrecoverable_data"
CONFIG = "unrecoverable_config"
BUSINESS = "unrecoverable_business"
RATE_LIMITED = "rate_limited"

RETRY = "retry"
NOTIFY = "notify"


class CategorySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How failures of one category are handled.

    ``notify`` names channels (``alert_log``, ``email``, ``sms`` for the admin;
    ``inbox``, ``push`` for the record's user) or whole audiences (``admin``,
    ``user``). The alert logs are written whatever the list says.
    """

    action: str = RETRY
    max_retries: int = 3
    base_delay_s: float = 60.0
    max_delay_s: float = 3600.0
    jitter: float = 0.1
    notify: list[str] = []

    @property
    def retries(self) -> bool:
        return self.action == RETRY


def _retry(
    max_retries: int, base_delay_s: float, max_delay_s: float
) -> CategorySettings:
    return CategorySettings(
        action=RETRY,
        max_retries=max_retries,
        base_delay_s=base_delay_s,
        max_delay_s=max_delay_s,
    )


def _notify(*audience: str) -> CategorySettings:
    return CategorySettings(
        action=NOTIFY, max_retries=0, base_delay_s=0.0, notify=list(audience)
    )


BUILTIN_CATEGORIES: dict[str, CategorySettings] = {
    NETWORK: _retry(5, 30.0, 3600.0),
    SYSTEM: _retry(3, 300.0, 3600.0),
    TEMPORARY: _retry(3, 180.0, 3600.0),
    DATA: _notify("alert_log", "email"),
    CONFIG: _notify("alert_log", "sms"),
    BUSINESS: _notify("inbox", "push"),
    RATE_LIMITED: _retry(5, 300.0, 6 * 3600.0),
}
