"""How a notification reads as text: an email's subject and body, an SMS, a push.

One notification, three lengths: the email carries every fact an admin
needs; the SMS fits in two messages (306 GSM characters); the push is a
title and a few lines.
"""

from __future__ import annotations

import unicodedata

from recoveryd.notification import DIGEST, SUMMARY, Notification

__all__ = ["SMS_CHARS", "body", "push_text", "sms_text", "subject"]

# Two concatenated GSM-7 messages carry 2 × 153 characters.
SMS_CHARS = 306
PUSH_CHARS = 1000
_ERROR_LINES = 40

# GSM-7 characters that take two places (the escape table) and ASCII that
# is not in GSM-7 at all, with a one-place stand-in.
_GSM_STAND_INS = str.maketrans(
    {"[": "(", "]": ")", "{": "(", "}": ")", "\\": "/", "|": "/", "^": "'",
     "~": "-", "`": "'", "\t": " "}
)  # fmt: skip


def subject(notification: Notification) -> str:
    """``[recoveryd] ERROR orders.import failed: unrecoverable data (×12)``."""
    text = f"[recoveryd] {notification.severity.upper()} {notification.title}"
    if notification.count > 1 and notification.type not in (SUMMARY, DIGEST):
        text += f" (×{notification.count})"
    return one_line(text)[:200]


def body(notification: Notification) -> str:
    """A plain-text email body: what happened, the facts, the error."""
    n = notification
    a = n.analysis
    facts = [
        ("Task", n.task),
        ("Task id", n.task_id),
        ("Category", f"{a.category} (confidence {a.confidence:.2f}, {a.pattern})"),
        ("Action", a.recommended_action),
        ("Severity", n.severity),
        ("When", n.created_at),
        ("Count", _count(n)),
    ]
    if n.sample_ids:
        facts.append(("Sample ids", ", ".join(n.sample_ids)))
    if n.error_type:
        facts.append(("Error type", n.error_type))
    if n.queue:
        facts.append(("Queue", n.queue))
    if n.attempt > 1:
        facts.append(("Attempts", str(n.attempt)))
    width = max(len(name) for name, _ in facts) + 2
    lines = [n.title, "", n.description, ""]
    lines += [f"{name + ':':<{width}}{value}" for name, value in facts]
    lines += ["", "Error:", *_indented(n.error_message)]
    lines += _digest_lines(n)
    lines += ["", f"-- recoveryd notification {n.id} ({n.type})"]
    return "\n".join(lines) + "\n"


def sms_text(notification: Notification, limit: int = SMS_CHARS) -> str:
    """At most ``limit`` GSM-7 characters: what failed, how often, the error."""
    n = notification
    head = f"recoveryd {n.severity.upper()}: {n.title}"
    if n.count > 1 and n.type not in (SUMMARY, DIGEST):
        head += f" x{n.count}"
    text = f"{head}. id {n.task_id}. {_first_line(n.error_message)}"
    return _shorten(_gsm(text), limit)


def push_text(notification: Notification) -> str:
    """A push message's text: the description, the error's first line, the count."""
    n = notification
    lines = [n.description, _first_line(n.error_message)]
    if n.count > 1:
        lines.append(f"Count: {_count(n)}")
    return _shorten("\n".join(lines), PUSH_CHARS)


def _count(n: Notification) -> str:
    if n.first_at and n.last_at:
        return f"{n.count} (from {n.first_at} to {n.last_at})"
    return str(n.count)


def _digest_lines(n: Notification) -> list[str]:
    items = (n.meta or {}).get("digest")
    if n.type != DIGEST or not isinstance(items, list):
        return []
    lines = ["", "Held back:"]
    for item in items:
        if isinstance(item, dict):
            lines.append(
                f"  {item.get('created_at', '')}  ×{item.get('count', 1)}  "
                f"{item.get('title', '')}  [{item.get('task_id', '')}]"
            )
    return lines


def _indented(text: str) -> list[str]:
    lines = text.splitlines() or [""]
    if len(lines) > _ERROR_LINES:
        lines = [*lines[: _ERROR_LINES // 2], "…", *lines[-_ERROR_LINES // 2 :]]
    return [f"    {line}" for line in lines]


def _first_line(text: str) -> str:
    # The last line of a traceback names the error; a message's first does.
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def one_line(text: str) -> str:
    """Whitespace, line breaks included, folded to single spaces."""
    return " ".join(text.split())


def _gsm(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text.replace("×", "x").replace("…", "..."))
    ascii_only = plain.encode("ascii", "ignore").decode("ascii")
    return one_line(ascii_only.translate(_GSM_STAND_INS))


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 3].rstrip() + "..."
