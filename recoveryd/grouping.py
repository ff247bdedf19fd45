"""Grouping: a burst of the same failure becomes one report and a count.

Failures of the same task, category and pattern whose errors are the same
once ids, numbers, hex, UUIDs, addresses and quoted values are replaced by
placeholders share a fingerprint. The first of them is sent at once and opens
a window (`[notify] group_window`); the rest are counted in Redis and, at the
window's end, summarised in one notification with the count and a few
sample ids. While the failure keeps coming, windows follow one another and
a summary goes out at most once per `[notify] repeat_every`; the first
window that passes without one closes the group, with a last summary of
anything not yet reported. This module holds the pure parts: the
fingerprint and the decision at a window's end.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import cast

import msgspec

from recoveryd.notification import USER, Notification
from recoveryd.records import User

__all__ = [
    "GroupState",
    "Plan",
    "fingerprint",
    "fingerprint_of",
    "normalise",
    "plan",
]

# A summary carries at most this many sample ids: enough to look a few up.
SAMPLE_IDS = 5

# Top-level domains that make a dotted word a host name rather than a
# module path such as ``json.decoder``.
_TLDS = (
    "com|net|org|io|dev|app|cloud|co|uk|de|fr|nl|eu|us|info|biz|local|"
    "internal|lan|localdomain|svc|cluster|corp|home|test|example|invalid"
)

_HEX = "<hex>"

# One pass over the text: at each place the first rule that matches wins,
# so whole shapes (quoted text, UUIDs, addresses) come before the numbers
# inside them. Python's engine backtracks: rules that scan a run of
# characters start only at the run's first one (the look-behinds), so the
# pass stays linear in the text, which is at most NORMALISE_CHARS long.
_RULES: list[tuple[str, str, str]] = [
    ("str", r"'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"", "<str>"),
    ("url", r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*+://[^\s/'\"]+", "<url>"),
    ("uuid", r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b", "<uuid>"),
    (
        "email",
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
        "<email>",
    ),
    ("ip4", r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b", "<ip>"),
    ("ip6", r"\[?\b[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}\]?(?::\d+)?", "<ip>"),
    (
        "host",
        rf"(?<![A-Za-z0-9.-])(?:[A-Za-z0-9-]+\.)+(?i:{_TLDS})\b(?::\d+)?",
        "<host>",
    ),
    # Hex ids and numbers share one placeholder: an id of hex digits may
    # happen to hold no letter at all.
    ("hex0x", r"\b0x[0-9a-fA-F]+\b", "<n>"),
    ("hex", r"\b(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]+\b", _HEX),
    ("number", r"\d+(?:\.\d+)?", "<n>"),
]
# Most places in a text start no rule, and a look at the character there
# rules each out before the rules are tried in turn. Inside a word (after
# an ASCII letter or digit) only the `_IN_WORD` rules can start, the others
# needing a word boundary or a character before that no word holds; and
# they start only at a quote, a digit, "[" or ":" (IPv6), or a small letter
# after a capital (a URL, "Xhttp://"). Anywhere else, a rule starts only at
# a quote or a character of a word, address or number.
_STARTS_IN_WORD = r"[\d'\"\[:]|(?<=[A-Z])[a-z]"
_STARTS_ELSEWHERE = r"[\w'\"\[:.%+-]"
_IN_WORD = ("str", "url", "ip6", "number")
_IN_WORD_SUFFIX = "_in_word"


def _alternatives(rules: list[tuple[str, str, str]], suffix: str = "") -> str:
    # Each rule's name is an empty group at its end, not a group around it:
    # the engine then records a start only for a rule that matched, not for
    # every rule at every place it tries.
    return "|".join(f"(?:{regex})(?P<{name}{suffix}>)" for name, regex, _ in rules)


_ONE_PASS = re.compile(
    rf"(?<![A-Za-z0-9])(?={_STARTS_ELSEWHERE})(?:{_alternatives(_RULES)})"
    rf"|(?={_STARTS_IN_WORD})"
    f"(?:{_alternatives([r for r in _RULES if r[0] in _IN_WORD], _IN_WORD_SUFFIX)})"
)
_PLACEHOLDERS = {name: placeholder for name, _, placeholder in _RULES}
_PLACEHOLDERS |= {name + _IN_WORD_SUFFIX: _PLACEHOLDERS[name] for name in _IN_WORD}

# Every rule's match but a quoted value's holds a digit, ":", "@", "." or
# "-", and no quote or white space; and every rule's look-arounds see a
# quote or a space as they see the text's ends. So once the quoted values
# are replaced, the one pass need run only on the words, bounded by white
# space and quotes, that hold one of those characters. This far simpler
# pattern finds both, and steps over the plain words between them; a run
# of such words is one piece, so that text made of little else costs one
# call, not one a word.
_WORD = r"[^\s'\"\d:@.-]*+[\d:@.-][^\s'\"]*+"
_PIECES = re.compile(rf"{_RULES[0][1]}|(?<![^\s'\"]){_WORD}(?:\s++{_WORD})*+")

NORMALISE_CHARS = 400

# Short words of digits and hex letters ("a1", "2fa", "v3") are names, not
# ids; ids are longer than this.
_HEX_MIN = 6


def normalise(error: str) -> str:
    """The error with what varies between occurrences replaced by placeholders.

    Only its head is looked at: that is where two failures differ in kind.
    """
    # Runs of white space become one space here rather than by a rule, which
    # would cost a Python call per run: no rule's match starts or ends in
    # white space (a quoted value's ends at its quote), so the runs are
    # those of the text.
    return " ".join(_PIECES.sub(_piece, error[:NORMALISE_CHARS]).split())


def _piece(match: re.Match[str]) -> str:
    piece = match.group()
    if piece[0] in "'\"":
        return _PLACEHOLDERS["str"]
    return _ONE_PASS.sub(_placeholder, piece)


def _placeholder(match: re.Match[str]) -> str:
    placeholder = _PLACEHOLDERS[cast(str, match.lastgroup)]
    if placeholder != _HEX:
        return placeholder
    word = match.group()
    return "<n>" if len(word) >= _HEX_MIN else word


def fingerprint(notification: Notification) -> str:
    """What makes two notifications one group: same audience and failure."""
    analysis = notification.analysis
    return fingerprint_of(
        notification.type,
        notification.audience,
        notification.task,
        analysis.category,
        analysis.pattern,
        normalise(notification.error_message),
        notification.user if notification.audience == USER else None,
    )


def fingerprint_of(
    kind: str,
    audience: str,
    task: str,
    category: str,
    pattern: str,
    shape: str,
    user: User | None = None,
) -> str:
    """`fingerprint` of the notification these would make, without making it.

    ``shape``: its error, `normalise`d (once for all of a failure's audiences).
    """
    parts = [kind, audience, task, category, pattern, shape]
    if user is not None:
        parts += [str(user.id), user.push or ""]
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class GroupState:
    """One group as Redis holds it (see the GROUP script)."""

    template: bytes
    channels: list[str]
    window_end_ms: int
    since_ms: int
    last_ms: int
    last_sent_ms: int
    pending: int
    seen: int
    summaries: int
    sample_ids: list[str]
    last_id: str | None = None

    @classmethod
    def from_hash(cls, fields: dict[bytes, bytes]) -> GroupState:
        def number(name: str) -> int:
            return int(float(fields.get(name.encode(), b"0")))

        return cls(
            template=fields[b"template"],
            channels=fields.get(b"channels", b"").decode().split(),
            window_end_ms=number("window_end"),
            since_ms=number("since"),
            last_ms=number("last_at"),
            last_sent_ms=number("last_sent"),
            pending=number("pending"),
            seen=number("seen"),
            summaries=number("summaries"),
            sample_ids=_sample_ids(fields.get(b"samples", b"")),
            last_id=fields[b"last_id"].decode() if b"last_id" in fields else None,
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with a group whose window has ended."""

    summarise: bool
    close: bool
    next_end_ms: int


def plan(state: GroupState, now_ms: int, window_ms: int, repeat_ms: int) -> Plan:
    """At a window's end: summarise what is pending now, or keep counting?

    The first window's followers are summarised at once; after that a
    failure that keeps coming is summarised once per ``repeat_ms``. A window
    with no new failure closes the group, reporting whatever is left.
    """
    quiet = state.seen == 0
    first = state.summaries == 0
    repeat_due = now_ms - state.last_sent_ms >= repeat_ms
    summarise = state.pending > 0 and (first or quiet or repeat_due)
    return Plan(summarise=summarise, close=quiet, next_end_ms=now_ms + window_ms)


def _sample_ids(raw: bytes) -> list[str]:
    """A group's sample ids: a JSON array, or (an older daemon's) one a line."""
    if raw.startswith(b"["):
        try:
            ids = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            ids = None
        if isinstance(ids, list):
            return [str(i) for i in ids]
    return [s for s in raw.decode().split("\n") if s]
