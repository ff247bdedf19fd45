"""Decoding failure records: what is accepted, and why the rest is parked."""

from __future__ import annotations

import pytest

from recoveryd.records import (
    FailureRecord,
    InvalidRecord,
    decode_record,
    decode_report,
    parse_failed_at,
    payload_text,
)


def test_minimal_record_gets_an_id():
    record = decode_record(b'{"task": "t", "error": "e"}', 1024)
    assert isinstance(record, FailureRecord)
    assert record.id and len(record.id) == 32


def test_numeric_id_is_taken_as_text():
    record = decode_record(b'{"task": "t", "error": "e", "id": 42}', 1024)
    assert isinstance(record, FailureRecord) and record.id == "42"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"{oops", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"error": "e"}', "missing required field `task`"),
        (b'{"task": "t"}', "missing required field `error`"),
        (b'{"task": "t", "error": 1}', "field `error`"),
        (b'{"task": " ", "error": "e"}', "`task` is empty"),
        (b'{"task": "t", "error": "e", "failed_at": "yesterday"}', "failed_at"),
        (b'{"task": "t", "error": "e", "status_code": "x"}', "status_code"),
    ],
)
def test_unusable_records_say_why(raw, reason):
    result = decode_record(raw, 1024)
    assert isinstance(result, InvalidRecord)
    assert reason in result.reason


def test_size_limit():
    result = decode_record(b'{"task": "t", "error": "' + b"x" * 100 + b'"}', 64)
    assert isinstance(result, InvalidRecord) and "over the 64 limit" in result.reason


@pytest.mark.parametrize(
    ("value", "epoch"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T00:00:00", 1767225600.0),
        ("2026-01-01T01:00:00+01:00", 1767225600.0),
        (1767225600, 1767225600.0),
    ],
)
def test_failed_at_without_zone_is_utc(value, epoch):
    assert parse_failed_at(value) == epoch


def test_payload_text():
    assert payload_text("as is") == "as is"
    assert payload_text({"a": [1, 2]}) == '{"a":[1,2]}'
    assert payload_text(None) == "null"


@pytest.mark.parametrize(
    ("sent", "pushed"),
    [
        ('{"a": [1, 2]}', '{"a": [1, 2]}'),
        ('"caf\\u00e9 \\"x\\""', 'café "x"'),
        ("null", "null"),
        ("17", "17"),
    ],
)
def test_a_records_payload_is_pushed_as_it_was_sent(sent, pushed):
    raw = f'{{"task": "t", "error": "e", "payload": {sent}}}'.encode()
    record = decode_record(raw, 1 << 20)
    assert isinstance(record, FailureRecord)
    assert payload_text(record.payload) == pushed


def test_a_record_without_a_payload_pushes_null():
    record = decode_record(b'{"task": "t", "error": "e"}', 1 << 20)
    assert isinstance(record, FailureRecord)
    assert payload_text(record.payload) == "null"


@pytest.mark.parametrize(
    ("field", "deep"),
    [
        ("payload", "[" * 5000 + "]" * 5000),
        ("meta", '{"a": ' * 5000 + "1" + "}" * 5000),
        ("unknown", "[" * 5000 + "]" * 5000),
    ],
)
def test_deeply_nested_json_is_parked_not_a_crash(field, deep):
    raw = f'{{"task": "t", "error": "e", "{field}": {deep}}}'.encode()
    result = decode_record(raw, 1 << 20)
    assert isinstance(result, InvalidRecord)
    assert "nested too deeply" in result.reason


def test_deeply_nested_success_report_is_not_a_crash():
    deep = "[" * 5000 + "]" * 5000
    raw = f'{{"id": "x", "ok": true, "extra": {deep}}}'.encode()
    assert isinstance(decode_report(raw, 1 << 20), InvalidRecord)


@pytest.mark.parametrize(
    "value",
    [
        1e20,
        253402300800,
        -1,
        '"9999-12-31T23:59:59-23:59"',
        '"0001-01-01T00:00:00+14:00"',
        '"1969-12-31T23:59:59Z"',
    ],
)
def test_failed_at_out_of_range_is_invalid(value):
    raw = f'{{"task": "t", "error": "e", "failed_at": {value}}}'.encode()
    result = decode_record(raw, 1024)
    assert isinstance(result, InvalidRecord) and "out of range" in result.reason


@pytest.mark.parametrize("payload", [b'"\xfe"', b'{"n": "\xff"}', b'["ok", "\xc3("]'])
def test_a_payload_that_is_not_utf8_parks_the_record(payload):
    raw = b'{"task": "t", "error": "e", "payload": ' + payload + b"}"
    item = decode_record(raw, 1 << 20)
    assert isinstance(item, InvalidRecord)
    assert item.reason.startswith("not UTF-8 text (bad byte at offset ")
