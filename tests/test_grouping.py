"""The pure parts of grouping: normalised errors, fingerprints, window ends."""

from __future__ import annotations

import random

import pytest

from recoveryd import grouping
from recoveryd.grouping import GroupState, fingerprint, fingerprint_of, normalise, plan
from recoveryd.notification import USER
from recoveryd.records import User
from tests.test_notifiers import notification

WINDOW_MS = 300_000
REPEAT_MS = 3_600_000


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("row 17: bad sku", "row 90210: bad sku"),
        ("order 8f3a9c1d2e rejected", "order 00ffa3b2c1 rejected"),
        ("order 0001eef rejected", "order 0000000 rejected"),
        (
            "no job 123e4567-e89b-12d3-a456-426614174000",
            "no job 00000000-0000-0000-0000-00000000abcd",
        ),
        ("connect 10.0.0.7:5432 failed", "connect 192.168.1.20:6379 failed"),
        ("db-3.prod.example.com refused", "db-9.prod.example.com refused"),
        ("mail to bob@x.com bounced", "mail to carol@y.org bounced"),
        ("field 'sku' invalid", "field 'name' invalid"),
        ('value "42 apples" invalid', 'value "nine" invalid'),
        ("object at 0x7f3a2b1c", "object at 0x55aa01"),
        (
            "GET https://api.x.io/v1/orders/17?x=1 gave 400",
            "GET http://10.1.1.1:81/v1/orders/99?x=5 gave 400",
        ),
        ("  spaced\n\tout  ", "spaced out"),
    ],
)
def test_what_varies_between_occurrences_is_normalised_away(one, other):
    assert normalise(one) == normalise(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("json.decoder.JSONDecodeError: x", "yaml.scanner.ScannerError: x"),
        ("validation failed", "constraint violated"),
        ("oauth2 token expired", "oauth token expired"),
    ],
)
def test_different_errors_stay_different(one, other):
    assert normalise(one) != normalise(other)


@pytest.mark.parametrize(
    ("error", "normalised"),
    [
        ("order42 failed", "order<n> failed"),
        ("key'abc' missing", "key<str> missing"),
        ("Xhttp://api.example/v1", "X<url>/v<n>"),
        ("node7:a::1 lost", "node<n><ip> lost"),
        ("deadbeef01 and xdeadbeef01", "<n> and xdeadbeef<n>"),
        ("v3 of 2fa", "v<n> of 2fa"),
    ],
)
def test_rules_that_can_start_inside_a_word_apply_there(error, normalised):
    assert normalise(error) == normalised


# Pieces that the rules treat specially, mixed with plain words and every
# kind of white space, so that generated texts put each rule's match next
# to each boundary the fast path cuts at.
_PIECES = [
    *("order", "Failed", "x", "HTTPError", "deadbeef", "ab", "Xhttp"),
    *("'", '"', "'quoted value'", '"two words"', "'", "0x7f", "42", "3.14"),
    *(":", "::", "a::1", ":5432", "@", "bob@x.com", ".", "db.example.com"),
    *("-", "123e4567-e89b-12d3-a456-426614174000", "10.0.0.7", "٣", "https://a.io/b"),
    "deadbeef-dead-beef-face-feedfacecafe",
    *(" ", " ", "  ", "\n", "\t", "\r\n", "\u2003", "(", ")", ",", "=", "_"),
]


def _whole_text(error: str) -> str:
    """What `normalise` gives, by the one pass over the whole head."""
    head = error[: grouping.NORMALISE_CHARS]
    return " ".join(grouping._ONE_PASS.sub(grouping._placeholder, head).split())


def test_skipping_plain_words_changes_nothing():
    rng = random.Random(7)
    for _ in range(5000):
        error = "".join(rng.choice(_PIECES) for _ in range(rng.randrange(1, 40)))
        assert normalise(error) == _whole_text(error), repr(error)


def test_same_failure_on_other_ids_shares_a_fingerprint():
    one = notification(task_id="a1", error="row 17: invalid sku 'AB-1'")
    other = notification(task_id="b2", error="row 99: invalid sku 'ZZ-9'")
    assert fingerprint(one) == fingerprint(other)


def test_other_task_or_user_is_another_group():
    base = notification(error="row 17 bad")
    assert fingerprint(base) != fingerprint(notification(task="x", error="row 1 bad"))
    alice = notification(audience=USER, user=User(id="alice"), error="e")
    bob = notification(audience=USER, user=User(id="bob"), error="e")
    assert fingerprint(alice) != fingerprint(bob)


@pytest.mark.parametrize(
    "message",
    [
        notification(error="row 17: invalid sku 'AB-1'"),
        notification(audience=USER, user=User(id="alice", push="t"), error="x 12"),
    ],
)
def test_a_fingerprint_from_parts_is_the_notifications(message):
    analysis = message.analysis
    parts = fingerprint_of(
        message.type,
        message.audience,
        message.task,
        analysis.category,
        analysis.pattern,
        normalise(message.error_message),
        message.user,
    )
    assert parts == fingerprint(message)


def state(**fields: int) -> GroupState:
    values = {
        "window_end_ms": 0,
        "since_ms": 0,
        "last_ms": 0,
        "last_sent_ms": 0,
        "pending": 0,
        "seen": 0,
        "summaries": 0,
    } | fields
    return GroupState(template=b"{}", channels=["email"], sample_ids=[], **values)


def test_first_window_followers_are_summarised_at_its_end():
    decision = plan(state(pending=999, seen=999), WINDOW_MS, WINDOW_MS, REPEAT_MS)
    assert decision.summarise and not decision.close
    assert decision.next_end_ms == 2 * WINDOW_MS


def test_a_quiet_window_closes_the_group():
    decision = plan(state(summaries=1), 2 * WINDOW_MS, WINDOW_MS, REPEAT_MS)
    assert decision.close and not decision.summarise


def test_a_failure_that_keeps_happening_is_repeated_only_every_repeat_interval():
    now_ms = 3 * WINDOW_MS
    busy = state(pending=50, seen=20, summaries=1, last_sent_ms=WINDOW_MS)
    assert not plan(busy, now_ms, WINDOW_MS, REPEAT_MS).summarise

    later = WINDOW_MS + REPEAT_MS
    assert plan(busy, later, WINDOW_MS, REPEAT_MS).summarise


def test_what_is_left_is_reported_when_the_failure_stops():
    now_ms = 4 * WINDOW_MS
    stopped = state(pending=50, seen=0, summaries=1, last_sent_ms=WINDOW_MS)
    decision = plan(stopped, now_ms, WINDOW_MS, REPEAT_MS)
    assert decision.summarise and decision.close
