"""Failure records as applications push them, and their decoding.

A failure record is one JSON object on the failures list. Decoding is the
validation: anything that is not a usable record becomes an `InvalidRecord`
with a reason a person can act on, and is parked rather than dropped.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

import msgspec

__all__ = [
    "FailureRecord",
    "InvalidRecord",
    "SuccessReport",
    "User",
    "decode_record",
    "decode_report",
    "parse_failed_at",
    "payload_text",
]


class User(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Who to tell about a business failure of this task."""

    id: str | int | None = None
    email: str | None = None
    phone: str | None = None
    push: str | None = None


class FailureRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One failed task, as reported by an application.

    Fields not listed here are kept in the raw record stored with the task;
    they are never interpreted.
    """

    task: str
    error: str
    queue: str | None = None
    # Kept as the JSON text it came as: intake only passes it on.
    payload: msgspec.Raw = msgspec.Raw(b"null")
    id: str | int | None = None
    error_type: str | None = None
    traceback: str | None = None
    status_code: int | None = None
    retry_after: float | None = None
    attempt: int | None = None
    failed_at: str | float | None = None
    user: User | None = None
    meta: dict[str, Any] | None = None

    @property
    def task_id(self) -> str:
        """The id as text; `decode_record` makes sure there is one."""
        return "" if self.id is None else str(self.id)


class InvalidRecord(msgspec.Struct, kw_only=True):
    """Why a raw list entry could not be taken as a failure record."""

    reason: str


class SuccessReport(msgspec.Struct, kw_only=True):
    """An application's word that a task succeeded: ``{"id": ..., "ok": true}``.

    Pushed onto the failures list like a failure record. ``task`` and
    ``at`` (when it succeeded) are optional and informative; other fields
    are ignored.
    """

    id: str | int
    ok: bool
    task: str | None = None
    at: str | float | None = None

    @property
    def task_id(self) -> str:
        return str(self.id)


_decoder = msgspec.json.Decoder(FailureRecord)
_success_decoder = msgspec.json.Decoder(SuccessReport)


# JSON nested deeper than the decoder's recursion limit (about a thousand
# levels) cannot be a real failure record.
TOO_DEEP = "nested too deeply to decode"
# 9999-12-31T23:59:59Z: the last moment a timestamp can be written in.
MAX_EPOCH_S = 253_402_300_799


def decode_record(raw: bytes, max_size: int) -> FailureRecord | InvalidRecord:
    """Decode one raw list entry, or say why it is not a failure record."""
    if len(raw) > max_size:
        return InvalidRecord(
            reason=f"record is {len(raw)} bytes, over the {max_size} limit"
        )
    try:
        record = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return InvalidRecord(reason=_validation_reason(str(exc)))
    except msgspec.DecodeError as exc:
        return InvalidRecord(reason=_decode_reason(raw, str(exc)))
    except RecursionError:
        return InvalidRecord(reason=TOO_DEEP)

    if not record.task.strip():
        return InvalidRecord(reason="field `task` is empty")
    try:
        # Kept as it came, the payload's text is not checked by the decoder.
        bytes(record.payload).decode("utf-8")
    except UnicodeDecodeError:
        return InvalidRecord(reason=_decode_reason(raw, ""))
    if isinstance(record.id, int):
        record.id = str(record.id)
    if record.id is None or not record.id.strip():
        record.id = uuid.uuid4().hex
    if record.failed_at is not None:
        try:
            parse_failed_at(record.failed_at)
        except ValueError as exc:
            return InvalidRecord(reason=f"field `failed_at`: {exc}")
    return record


def decode_report(
    raw: bytes, max_size: int
) -> FailureRecord | SuccessReport | InvalidRecord:
    """A failure record, or a success report, or why the entry is neither."""
    item = decode_record(raw, max_size)
    # Only an entry that is not a failure record and mentions "ok" is tried
    # as a success report: the common path costs nothing more.
    if not isinstance(item, InvalidRecord) or b'"ok"' not in raw:
        return item
    try:
        report = _success_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        reason = _validation_reason(str(exc))
        return InvalidRecord(reason=f"{item.reason}; as a success report: {reason}")
    except (msgspec.DecodeError, RecursionError):
        return item
    if report.ok is not True:
        return InvalidRecord(reason='a success report says "ok": true')
    if not report.task_id.strip():
        return InvalidRecord(reason="field `id` of a success report is empty")
    return report


def _validation_reason(message: str) -> str:
    # msgspec says "Expected `object`, got `array`" or names the field with
    # "- at `$.task`"; recast both into the record's own terms.
    text, _, where = message.partition(" - at `$")
    field = where.rstrip("`").lstrip(".")
    if text.startswith("Object missing required field"):
        return text.replace("Object missing required field", "missing required field")
    if not field:
        return f"not a JSON object: {text[:1].lower()}{text[1:]}"
    return f"field `{field}`: {text[:1].lower()}{text[1:]}"


def _decode_reason(raw: bytes, message: str) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (bad byte at offset {exc.start})"
    return f"not valid JSON: {message}"


def parse_failed_at(value: str | float) -> float:
    """Epoch seconds from RFC 3339 text or epoch seconds; no zone means UTC."""
    if isinstance(value, int | float):
        if not 0 <= value <= MAX_EPOCH_S:
            raise ValueError(
                f"epoch seconds out of range (0 to {MAX_EPOCH_S}): {value}"
            )
        return float(value)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expected RFC 3339 time or epoch seconds, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    epoch = moment.timestamp()
    # A zone can carry a time near either end of the calendar past it.
    if not 0 <= epoch <= MAX_EPOCH_S:
        raise ValueError(f"time out of range (1970-01-01 to 9999-12-31 UTC): {value!r}")
    return epoch


def payload_text(payload: Any) -> str:
    """What re-dispatch pushes: a string as is, anything else as its JSON text.

    A payload still in its JSON text (`msgspec.Raw`) goes as it was sent.
    """
    if isinstance(payload, msgspec.Raw):
        text = bytes(payload)
        if text.startswith(b'"'):
            return cast(str, msgspec.json.decode(text))
        return text.decode()
    if isinstance(payload, str):
        return payload
    return msgspec.json.encode(payload).decode()
