"""Classification: why a task failed, and what to do about it.

A failure record is judged on bounded slices of its text, so the cost per
record has a ceiling whatever an application pushes (see `clip`). The
signals are tried in this order, and the first that decides wins:

1. operator patterns from ``[[patterns]]``, in config order, on the error
   text and the traceback as written (frames included), case-insensitively.
   A pattern with ``error_types`` applies only to records whose type matches
   an entry: exactly (``stripe.error.CardError``), by its last part after a
   ``.`` or ``::`` (``CardError``), or as a glob when the entry holds ``*``
   or ``?`` (``stripe.*``); type names are case-sensitive;
2. the built-in patterns (`recoveryd.patterns`) on the error text and on
   the traceback's root cause (a Python traceback's last exception; the
   first line and the last ``Caused by:`` of Java and Node.js traces); the
   highest-ranked match wins, the error text winning a tie;
3. the exception type (``error_type``, else the type on the root line or
   at the start of the message, as in ``MongoNetworkError: ...``); a type
   that names a cause also outranks a merely generic phrase ("not found");
4. the HTTP status (``status_code``, else one the message quotes, as in
   "Request failed with status code 503"), then a generic type
   (``ValueError``);
5. the built-in patterns on the rest of the traceback (earlier, chained
   exceptions);
6. the configured fallback category, with low confidence.

All matching is done by RE2 (google-re2), which runs in time linear in the
text. The built-in patterns are compiled into one `re2.Set` so that each
slice of text is scanned once for all of them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec
import re2

from recoveryd.categories import BUILTIN_CATEGORIES, TEMPORARY, CategorySettings
from recoveryd.patterns import (
    BUILTIN_PATTERNS,
    NORMAL,
    STRONG,
    TYPE_PATTERNS,
    WEAK,
    BuiltinPattern,
    status_category,
)
from recoveryd.records import FailureRecord

if TYPE_CHECKING:
    from recoveryd.config import Config, PatternSettings

__all__ = [
    "ERROR_HEAD_CHARS",
    "ERROR_TAIL_CHARS",
    "FALLBACK_CONFIDENCE",
    "TRACE_HEAD_CHARS",
    "TRACE_TAIL_CHARS",
    "Classification",
    "Classifier",
    "PatternError",
    "TracebackParts",
    "builtin_pattern_count",
    "classify_parts",
    "clip",
    "compile_pattern",
    "split_traceback",
    "status_in_text",
]

# The error text's head holds the message, its tail the innermost cause;
# what lies between is repetition, and bounding it bounds the work.
ERROR_HEAD_CHARS: Final = 4096
ERROR_TAIL_CHARS: Final = 4096
# A Python root cause is at the end of the traceback, a Java or Node.js one
# near the start ("Caused by:" lines aside), so both ends are kept.
TRACE_HEAD_CHARS: Final = 4096
TRACE_TAIL_CHARS: Final = 8192
TYPE_CHARS: Final = 256

FALLBACK_CONFIDENCE: Final = 0.2
_OPERATOR_CONFIDENCE: Final = 0.95
_MESSAGE_CONFIDENCE: Final = {3: 0.9, 2: 0.8, 1: 0.65}
_ROOT_PENALTY: Final = 0.05
_TYPE_CONFIDENCE: Final = 0.6
_STATUS_CONFIDENCE: Final = 0.55
_CHAIN_CONFIDENCE: Final = 0.45
_AGREEMENT_BONUS: Final = 0.05
_MAX_BUILTIN: Final = 0.95

# RE2's DFA caches states in this budget; a set of many patterns needs more
# than the 8 MiB default to never run out (see `_PatternSet.matches`).
_SET_MAX_MEM: Final = 64 << 20


class PatternError(ValueError):
    """A regex the linear-time engine (RE2) cannot run."""


class Classification(msgspec.Struct, frozen=True, kw_only=True):
    """Why a task failed, and what its category says to do about it."""

    category: str
    action: str
    confidence: float
    pattern: str


def _options(max_mem: int | None = None) -> Any:
    options = re2.Options()
    options.case_sensitive = False
    # RE2 logs refused patterns to stderr by default; the error is raised
    # to the caller instead.
    options.log_errors = False
    if max_mem is not None:
        options.max_mem = max_mem
    return options


def compile_pattern(regex: str) -> Any:
    """Compile an operator's regex as the classifier runs it.

    Matching is case-insensitive (write ``(?-i:...)`` for a case-sensitive
    part). Raises `PatternError` naming the regex and RE2's reason when the
    engine cannot run it, e.g. for look-around or backreferences.
    """
    try:
        return re2.compile(regex, _options())
    except re2.error as exc:
        reason = _reason(exc)
        raise PatternError(
            f"the regex engine (RE2) cannot run {regex!r}: {reason}"
        ) from None


def _reason(exc: BaseException) -> str:
    detail = exc.args[0] if exc.args else ""
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return str(detail) or "rejected by RE2"


def clip(text: str, head: int, tail: int) -> str:
    """The first `head` and last `tail` characters of `text`, at most.

    Slicing copies only the kept characters, so a 5 MB text costs no more
    to classify than a 10 KB one.
    """
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n…\n{text[len(text) - tail :]}"


def _utf8(text: str) -> bytes:
    # "replace" because a record can carry lone surrogates that strict
    # UTF-8 encoding refuses; RE2 only ever sees valid bytes.
    return text.encode("utf-8", "replace")


class TracebackParts(msgspec.Struct, frozen=True):
    """A traceback cut into its root cause and the rest of its messages."""

    root: str
    chain: str
    root_type: str | None


_SEPARATORS: Final = (
    "Traceback (most recent call last)",
    "The above exception was the direct cause",
    "During handling of the above exception",
    "[Previous line repeated",
)
_FRAME_STARTS: Final = ('File "', "at ", "from ", "...")


def split_traceback(traceback: str) -> TracebackParts:
    """Find the root cause in a Python, Java, .NET, Node.js or Ruby trace.

    Stack frames and their source lines are dropped: source code mentions
    words like ``timeout`` that say nothing about this failure.
    """
    text = clip(traceback, TRACE_HEAD_CHARS, TRACE_TAIL_CHARS)
    blocks = _message_blocks(text)
    if not blocks:
        return TracebackParts(root="", chain="", root_type=None)

    if "Traceback (most recent call last)" in text:
        root_blocks = [blocks[-1]]
    else:
        causes = [block for block in blocks if block[0].startswith("Caused by:")]
        root_blocks = [blocks[0], *causes[-1:]]
    chain = [block for block in blocks if not any(b is block for b in root_blocks)]

    root_type = _exception_type(root_blocks[-1][0])
    return TracebackParts(
        root="\n".join(line for block in root_blocks for line in block),
        chain="\n".join(line for block in chain for line in block),
        root_type=root_type,
    )


def _message_blocks(text: str) -> list[list[str]]:
    """Runs of exception-message lines, as split by stack frames."""
    blocks: list[list[str]] = [[]]
    in_python_frame = False
    for line in text.splitlines():
        if in_python_frame and line.startswith("    "):
            continue  # the source line or carets under a Python frame
        stripped = line.strip()
        if not stripped:
            continue
        in_python_frame = False
        indented = line[0] in " \t"
        if indented and stripped.startswith(_FRAME_STARTS):
            in_python_frame = stripped.startswith('File "')
        elif not stripped.startswith(_SEPARATORS):
            blocks[-1].append(stripped)
            continue
        if blocks[-1]:
            blocks.append([])
    return [block for block in blocks if block]


def _exception_type(line: str) -> str | None:
    """``pkg.Error`` from ``pkg.Error: message`` (or ``Caused by: ...``)."""
    line = line.removeprefix("Caused by:").strip()
    name = line.partition(": ")[0].strip()
    bare = name.replace(".", "").replace("_", "").replace(":", "").replace("$", "")
    if not name or len(name) > TYPE_CHARS or not bare.isalnum():
        return None
    return name


_STATUS_IN_TEXT = re2.compile(
    r"(exit(?:ed)? (?:status|code)\W{0,3}\d+)"
    r"|(?:status(?:[ _-]?code)?|response code|error code"
    r"|http(?:[ /]\d(?:\.\d)?)?(?: error| status)?)\W{0,3}([45]\d\d)\b"
    r"|\b([45]\d\d) (?:client|server) error\b"
    r"|(?:client|server) error:? \W?([45]\d\d)\b"
    r"|resulted in an? \W?([45]\d\d)\b"
    r"|does not indicate success:? ([45]\d\d)\b"
    r"|too many ([45]\d\d) error responses"
    r"|^\W{0,2}([45]\d\d)\b",
    _options(),
)


def status_in_text(text: bytes) -> int | None:
    """An HTTP status the message quotes, e.g. "status code 503"."""
    match = _STATUS_IN_TEXT.search(text)
    if match is None or match.group(1) is not None:
        return None  # a process exit status, not an HTTP one
    for group in match.groups()[1:]:
        if group is not None:
            return int(group)
    return None


class _PatternSet:
    """Built-in patterns compiled into one RE2 set: one scan finds them all."""

    def __init__(self, patterns: Sequence[BuiltinPattern]) -> None:
        self.patterns = tuple(patterns)
        self._set = re2.Set.SearchSet(_options(_SET_MAX_MEM))
        for pattern in self.patterns:
            self._set.Add(pattern.regex)
        self._set.Compile()
        # The order `best` picks in: highest rank first, then earliest.
        self._order = [(-pattern.rank, i) for i, pattern in enumerate(self.patterns)]

    def matches(self, text: bytes) -> list[int]:
        """Indexes of the patterns found in `text`."""
        if not text:
            return []
        # Limitation: RE2::Set says "no match" if its DFA runs out of memory,
        # which the budget and bounded text prevent (tested); fix: a binding
        # that exposes the set's error info, to rescan pattern by pattern.
        return list(self._set.Match(text) or ())

    def best(self, text: bytes) -> tuple[int, int] | None:
        """(rank, index) of the highest-ranked, then earliest, match."""
        found = self.matches(text)
        if not found:
            return None
        # One match is the common case, and needs no call to min.
        order = self._order.__getitem__
        index = found[0] if len(found) == 1 else min(found, key=order)
        return self.patterns[index].rank, index


class _OperatorPattern(msgspec.Struct, frozen=True):
    name: str
    category: str
    regex: Any
    error_types: tuple[str, ...]
    type_globs: Any


def _glob_regex(globs: Sequence[str]) -> Any:
    """One RE2 regex for the glob entries (``*`` any run, ``?`` one char)."""
    parts = []
    for glob in globs:
        escaped = re2.escape(glob).replace(r"\*", ".*").replace(r"\?", ".")
        parts.append(f"(?:{escaped})")
    options = _options()
    options.case_sensitive = True
    return re2.compile("|".join(parts), options)


def _operator_pattern(index: int, settings: PatternSettings) -> _OperatorPattern:
    exact = tuple(t for t in settings.error_types if "*" not in t and "?" not in t)
    globs = [t for t in settings.error_types if "*" in t or "?" in t]
    return _OperatorPattern(
        name=settings.name or f"patterns[{index}]",
        category=settings.category,
        regex=compile_pattern(settings.regex),
        error_types=exact,
        type_globs=_glob_regex(globs) if globs else None,
    )


def _type_allowed(pattern: _OperatorPattern, error_type: str | None) -> bool:
    """Whether an operator pattern's ``error_types`` admit this type.

    An entry matches the full type name exactly (``stripe.error.CardError``),
    or its last part after a ``.`` or ``::`` (``CardError`` matches
    ``stripe.error.CardError`` and ``Stripe::CardError``), or, if it holds
    ``*`` or ``?``, as a glob over the full name (``stripe.*``). Names are
    case-sensitive. No entries means any type, or none.
    """
    if not pattern.error_types and pattern.type_globs is None:
        return True
    if not error_type:
        return False
    for entry in pattern.error_types:
        if error_type == entry or error_type.endswith(("." + entry, "::" + entry)):
            return True
    globs = pattern.type_globs
    return globs is not None and globs.fullmatch(error_type) is not None


class _Signal(msgspec.Struct, frozen=True):
    """What one signal (message, type, status, chain) says, and how surely."""

    category: str
    rank: int
    confidence: float
    name: str


_NO_TRACE: Final = TracebackParts(root="", chain="", root_type=None)


class _Texts:
    """The bounded slices of one failure that the classifier reads.

    The traceback is split only when a signal needs it: a record whose
    message names its cause and which carries its ``error_type`` never
    pays for it.
    """

    __slots__ = (
        "_trace",
        "given_type",
        "message",
        "message_bytes",
        "status_code",
        "trace_text",
    )

    def __init__(
        self, error: object, error_type: object, traceback: object, status_code: object
    ) -> None:
        self.message = clip(_as_text(error), ERROR_HEAD_CHARS, ERROR_TAIL_CHARS)
        self.message_bytes = _utf8(self.message)
        self.trace_text = clip(_as_text(traceback), TRACE_HEAD_CHARS, TRACE_TAIL_CHARS)
        self.given_type = _as_text(error_type).strip()[:TYPE_CHARS] or None
        self.status_code = status_code if type(status_code) is int else None
        self._trace: TracebackParts | None = None

    @property
    def trace(self) -> TracebackParts:
        if self._trace is None:
            text = self.trace_text
            self._trace = split_traceback(text) if text else _NO_TRACE
        return self._trace

    @property
    def error_type(self) -> str | None:
        if self.given_type:
            return self.given_type
        return self.trace.root_type or _leading_type(self.message)


_ERROR_WORDS: Final = ("error", "exception", "timeout", "failure", "fault")


def _leading_type(message: str) -> str | None:
    """``MongoNetworkError`` from ``MongoNetworkError: connection closed``.

    Node.js, Java and Ruby messages often start with their class; only a
    name that reads like an exception's is taken, not ``FATAL:`` or
    ``user_script:1:``.
    """
    first_line = message[:TYPE_CHARS].partition("\n")[0]
    name = _exception_type(first_line)
    if name is None or not name.lower().endswith(_ERROR_WORDS):
        return None
    return name


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return ""


class Classifier:
    """Decides the category of failure records; see the module docstring.

    `categories` gives each category's action; operator `patterns` come from
    config and are tried first; `fallback` is the category of a failure that
    nothing recognises. A built-in pattern whose category is not in
    `categories` is treated as the fallback.
    """

    def __init__(
        self,
        categories: Mapping[str, CategorySettings],
        patterns: Sequence[PatternSettings] = (),
        fallback: str = TEMPORARY,
    ) -> None:
        if fallback not in categories:
            raise ValueError(f"fallback category {fallback!r} is not configured")
        for i, settings in enumerate(patterns):
            if settings.category not in categories:
                raise ValueError(
                    f"patterns[{i}]: no category named {settings.category!r}"
                )
        self._categories = dict(categories)
        self._fallback = fallback
        self._operators = tuple(_operator_pattern(i, p) for i, p in enumerate(patterns))
        self._builtins = _builtin_set()

    @classmethod
    def from_config(cls, config: Config) -> Classifier:
        """A classifier with the config's categories, patterns and fallback."""
        return cls(config.categories, config.patterns, config.classify.fallback)

    def classify(self, record: FailureRecord) -> Classification:
        """Classify one failure record; never raises on odd field values."""
        return self.classify_parts(
            record.error,
            error_type=record.error_type,
            traceback=record.traceback,
            status_code=record.status_code,
        )

    def classify_parts(
        self,
        error: str | None,
        error_type: str | None = None,
        traceback: str | None = None,
        status_code: int | None = None,
    ) -> Classification:
        """Classify a failure given as its parts, as the CLI has them."""
        texts = _Texts(error, error_type, traceback, status_code)
        by_operator = self._by_operator(texts)
        if by_operator is not None:
            return by_operator

        signals = (
            self._by_message(texts),
            self._by_type(texts),
            self._by_status(texts),
        )
        chosen = _strongest(*signals) or self._by_chain(texts)
        if chosen is None:
            return self._result(self._fallback, FALLBACK_CONFIDENCE, "fallback")
        return self._decide(chosen, signals)

    def _decide(
        self, signal: _Signal, others: Sequence[_Signal | None]
    ) -> Classification:
        agreeing = 0
        for other in others:
            if other is None or other is signal:
                continue
            if other.category == signal.category:
                agreeing += 1
        confidence = min(signal.confidence + _AGREEMENT_BONUS * agreeing, _MAX_BUILTIN)
        return self._result(signal.category, confidence, signal.name)

    def _by_operator(self, texts: _Texts) -> Classification | None:
        if not self._operators:
            return None
        haystack = _utf8(f"{texts.message}\n{texts.trace_text}")
        for pattern in self._operators:
            if not _type_allowed(pattern, texts.error_type):
                continue
            if pattern.regex.search(haystack) is not None:
                return self._result(
                    pattern.category, _OPERATOR_CONFIDENCE, pattern.name
                )
        return None

    def _by_message(self, texts: _Texts) -> _Signal | None:
        found = self._builtins.best(texts.message_bytes)
        penalty = 0.0
        # The root cause can only win by outranking the message outright,
        # so it is not scanned when the message already has a top match.
        if (found is None or found[0] < STRONG) and texts.trace_text:
            in_root = self._builtins.best(_utf8(texts.trace.root))
            if in_root is not None and (found is None or in_root[0] > found[0]):
                found, penalty = in_root, _ROOT_PENALTY
        if found is None:
            return None
        rank, index = found
        pattern = self._builtins.patterns[index]
        confidence = _MESSAGE_CONFIDENCE[rank] - penalty
        return _Signal(pattern.category, rank, confidence, pattern.name)

    def _by_type(self, texts: _Texts) -> _Signal | None:
        error_type = texts.error_type
        return _type_signal(error_type) if error_type else None

    def _by_status(self, texts: _Texts) -> _Signal | None:
        status = texts.status_code
        if status is None:
            status = status_in_text(texts.message_bytes)
        category = status_category(status) if status is not None else None
        if category is None:
            return None
        return _Signal(category, WEAK, _STATUS_CONFIDENCE, f"status:{status}")

    def _by_chain(self, texts: _Texts) -> _Signal | None:
        if not texts.trace_text:
            return None
        found = self._builtins.best(_utf8(texts.trace.chain))
        if found is None:
            return None
        rank, index = found
        pattern = self._builtins.patterns[index]
        return _Signal(pattern.category, rank, _CHAIN_CONFIDENCE, pattern.name)

    def _result(self, category: str, confidence: float, pattern: str) -> Classification:
        settings = self._categories.get(category)
        if settings is None:
            category, settings = self._fallback, self._categories[self._fallback]
        return Classification(
            category=category,
            action=settings.action,
            confidence=round(confidence, 2),
            pattern=pattern,
        )


def _strongest(
    by_message: _Signal | None, by_type: _Signal | None, by_status: _Signal | None
) -> _Signal | None:
    """The deciding signal among the message, the type and the status.

    The message decides, except that a generic phrase ("not found", "timed
    out") gives way to a type that names a cause; a specific phrase does not
    ("coupon expired" in a ValueError is a business failure). A generic type
    (``ValueError``) says less than the status.
    """
    type_names_cause = by_type is not None and by_type.rank >= NORMAL
    if by_message is not None and not (by_message.rank == WEAK and type_names_cause):
        return by_message
    if type_names_cause:
        return by_type
    return by_status or by_type


# Compiling a set takes milliseconds; every classifier shares the same two.
@functools.cache
def _builtin_set() -> _PatternSet:
    return _PatternSet(BUILTIN_PATTERNS)


@functools.cache
def _type_set() -> _PatternSet:
    return _PatternSet(TYPE_PATTERNS)


# An application raises a few exception types over and over: each is
# matched once. Bounded, since the type is the record's to choose.
@functools.lru_cache(maxsize=1024)
def _type_signal(error_type: str) -> _Signal | None:
    """What the exception type says, from the type patterns alone."""
    types = _type_set()
    found = types.best(_utf8(error_type))
    if found is None:
        return None
    rank, index = found
    short = error_type.replace("::", ".").rpartition(".")[2]
    category = types.patterns[index].category
    return _Signal(category, rank, _TYPE_CONFIDENCE, f"error_type:{short}")


def builtin_pattern_count() -> int:
    """How many built-in message patterns there are (``recoveryd classify``)."""
    return len(BUILTIN_PATTERNS)


@functools.cache
def _default_classifier() -> Classifier:
    return Classifier(BUILTIN_CATEGORIES)


def classify_parts(
    error: str | None,
    error_type: str | None = None,
    traceback: str | None = None,
    status_code: int | None = None,
) -> Classification:
    """Classify with the built-in categories and patterns only."""
    return _default_classifier().classify_parts(
        error, error_type=error_type, traceback=traceback, status_code=status_code
    )
