"""Each channel against a real server on loopback: SMTP, HTTP, Redis, files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from redis.asyncio import Redis

from recoveryd.classify import Classification
from recoveryd.config import (
    EmailSettings,
    InboxSettings,
    PushSettings,
    SmsSettings,
)
from recoveryd.keys import Keys
from recoveryd.notification import ADMIN, USER, Notification, for_unrecoverable
from recoveryd.notifiers import DeliveryError
from recoveryd.notifiers.alert_log import ADMIN_LOG, USER_LOG, AlertLog
from recoveryd.notifiers.email import EmailChannel
from recoveryd.notifiers.inbox import InboxChannel, read_inbox
from recoveryd.notifiers.push import PushChannel
from recoveryd.notifiers.secrets import Secret, SecretError, read_secret
from recoveryd.notifiers.sms import SmsChannel
from recoveryd.notifiers.text import SMS_CHARS, sms_text
from recoveryd.records import FailureRecord, User
from tests.servers import SmtpServer

SMS_TOKEN = "tok-sms-5f1e"
PUSH_TOKEN = "tok-push-77aa"


def notification(
    *,
    audience: str = ADMIN,
    user: User | None = None,
    error: str = "ValueError: invalid literal for int() with base 10: 'x7'",
    task: str = "orders.import",
    task_id: str = "t-42",
) -> Notification:
    record = FailureRecord(
        task=task, error=error, id=task_id, queue="q:orders", user=user
    )
    analysis = Classification(
        category="unrecoverable_data",
        action="notify",
        confidence=0.9,
        pattern="data.value_error",
    )
    return for_unrecoverable(
        record, analysis, audience=audience, now_ms=1_700_000_000_000, attempt=1
    )


def email_settings(server: SmtpServer, cert: Path, **extra: object) -> EmailSettings:
    return EmailSettings(
        host="127.0.0.1",
        port=server.port,
        security="starttls",
        username=server.username,
        password_env="TEST_SMTP_PASSWORD",
        sender="recoveryd@example.test",
        ca_file=str(cert),
        timeout_s=10.0,
        **extra,  # type: ignore[arg-type]
    )


async def test_email_arrives_over_starttls_after_login(
    smtp_server, tls_cert, monkeypatch
):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", smtp_server.password)
    channel = EmailChannel(
        email_settings(smtp_server, tls_cert[0]), ["ops@example.test", "b@x.test"]
    )

    await channel.send(notification())

    [received] = smtp_server.received
    assert received.tls and received.login == "recoveryd"
    assert received.sender == "recoveryd@example.test"
    assert received.recipients == ["ops@example.test", "b@x.test"]
    message = received.message
    assert message["Subject"] == (
        "[recoveryd] ERROR orders.import failed: unrecoverable data"
    )
    assert message["X-Recoveryd-Count"] == "1"
    text = message.get_content()
    for fact in (
        "Task:",
        "orders.import",
        "Task id:",
        "t-42",
        "unrecoverable_data (confidence 0.90, data.value_error)",
        "Action:",
        "When:",
        "2023-11-14T22:13:20.000Z",
        "Count:",
        "invalid literal for int()",
        "Queue:",
    ):
        assert fact in text


async def test_email_over_implicit_tls(tls_cert, monkeypatch):
    server = SmtpServer(*tls_cert, implicit_tls=True)
    server.start()
    try:
        monkeypatch.setenv("TEST_SMTP_PASSWORD", server.password)
        settings = email_settings(server, tls_cert[0])
        settings.security = "tls"
        await EmailChannel(settings, ["ops@example.test"]).send(notification())
    finally:
        server.stop()
    assert server.received[0].tls


async def test_email_refused_login_is_a_delivery_error_without_the_password(
    smtp_server, tls_cert, monkeypatch
):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong-pass-91x")
    channel = EmailChannel(email_settings(smtp_server, tls_cert[0]), ["a@x.test"])
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    assert "wrong-pass-91x" not in str(caught.value)
    assert not smtp_server.received


async def test_email_untrusted_certificate_is_a_delivery_error(
    smtp_server, tls_cert, monkeypatch
):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", smtp_server.password)
    settings = email_settings(smtp_server, tls_cert[0])
    settings.ca_file = None
    with pytest.raises(DeliveryError, match=r"smtp 127\.0\.0\.1"):
        await EmailChannel(settings, ["a@x.test"]).send(notification())


async def test_email_without_its_secret_names_the_key(smtp_server, tls_cert):
    settings = email_settings(smtp_server, tls_cert[0])
    settings.password_env = "TEST_UNSET_VARIABLE_4711"
    with pytest.raises(DeliveryError, match=r"notify\.email\.password_env"):
        await EmailChannel(settings, ["a@x.test"]).send(notification())


async def test_twilio_sms_is_a_form_post_with_basic_auth(http_provider, monkeypatch):
    provider = http_provider()
    monkeypatch.setenv("TEST_SMS_TOKEN", SMS_TOKEN)
    settings = SmsSettings(
        provider="twilio",
        url=f"{provider.url}/2010-04-01/Accounts/AC123/Messages.json",
        account="AC123",
        token_env="TEST_SMS_TOKEN",
        sender="+15550100",
    )
    channel = SmsChannel(settings, ["+15550111", "+15550122"])
    try:
        await channel.send(notification())
    finally:
        await channel.aclose()

    assert [r.path for r in provider.requests] == [
        "/2010-04-01/Accounts/AC123/Messages.json"
    ] * 2
    first = provider.requests[0]
    expected = base64.b64encode(f"AC123:{SMS_TOKEN}".encode()).decode()
    assert first.headers["Authorization"] == f"Basic {expected}"
    assert first.headers["Content-Type"] == "application/x-www-form-urlencoded"
    from urllib.parse import parse_qs

    form = parse_qs(first.body.decode())
    assert form["To"] == ["+15550111"] and form["From"] == ["+15550100"]
    assert form["Body"][0].startswith("recoveryd ERROR: orders.import failed")


async def test_webhook_sms_is_json_with_a_bearer_token(
    http_provider, tmp_path, monkeypatch
):
    provider = http_provider()
    token_file = tmp_path / "sms-token"
    token_file.write_text(SMS_TOKEN + "\n")
    settings = SmsSettings(
        provider="webhook", url=f"{provider.url}/sms", token_file=str(token_file)
    )
    channel = SmsChannel(settings, ["+15550111"])
    try:
        await channel.send(notification())
    finally:
        await channel.aclose()

    [request] = provider.requests
    assert request.headers["Authorization"] == f"Bearer {SMS_TOKEN}"
    body = request.json()
    assert body["to"] == ["+15550111"]
    assert body["notification"]["task_id"] == "t-42"
    assert len(body["text"]) <= SMS_CHARS


def test_sms_text_fits_in_two_messages():
    huge = notification(error="é" * 5000 + " {[|]} " + "x" * 5000)
    text = sms_text(huge)
    assert len(text) <= SMS_CHARS
    assert text.isascii()
    assert not set("[]{}|\\^~") & set(text)


async def test_provider_answering_500_is_a_delivery_error(http_provider):
    provider = http_provider(status=500)
    channel = SmsChannel(SmsSettings(url=provider.url), ["+15550111"])
    try:
        with pytest.raises(DeliveryError, match="answered 500"):
            await channel.send(notification())
    finally:
        await channel.aclose()


async def test_ntfy_push_goes_to_the_users_topic(http_provider, monkeypatch):
    provider = http_provider()
    monkeypatch.setenv("TEST_PUSH_TOKEN", PUSH_TOKEN)
    settings = PushSettings(
        provider="ntfy", url=f"{provider.url}/", token_env="TEST_PUSH_TOKEN"
    )
    channel = PushChannel(settings)
    user = User(id="u-9", push="alice_alerts")
    try:
        await channel.send(notification(audience=USER, user=user))
    finally:
        await channel.aclose()

    [request] = provider.requests
    assert request.path == "/alice_alerts"
    assert request.headers["Authorization"] == f"Bearer {PUSH_TOKEN}"
    assert request.headers["Title"] == "orders.import failed: unrecoverable data"
    assert request.headers["Priority"] == "3"
    assert request.headers["Tags"] == "warning,unrecoverable_data"
    assert b"will not retry it" in request.body


async def test_webhook_push_is_json(http_provider):
    provider = http_provider()
    channel = PushChannel(PushSettings(provider="webhook", url=f"{provider.url}/p"))
    user = User(id="u-9", push="device-1")
    try:
        await channel.send(notification(audience=USER, user=user))
    finally:
        await channel.aclose()
    body = provider.requests[0].json()
    assert body["to"] == "device-1"
    assert body["notification"]["user"]["id"] == "u-9"
    assert "Authorization" not in provider.requests[0].headers


async def test_push_refuses_a_target_that_is_not_a_topic(http_provider):
    provider = http_provider()
    channel = PushChannel(PushSettings(provider="ntfy", url=provider.url))
    user = User(id="u", push="http://elsewhere.test/x")
    try:
        with pytest.raises(DeliveryError, match="not a topic"):
            await channel.send(notification(audience=USER, user=user))
    finally:
        await channel.aclose()
    assert not provider.requests


async def test_inbox_keeps_the_newest_within_its_cap(redis_server, r):
    client = Redis.from_url(redis_server.url)
    keys = Keys("recoveryd")
    channel = InboxChannel(client, keys, InboxSettings(max_items=3))
    user = User(id="u-1")
    try:
        for i in range(5):
            await channel.send(notification(audience=USER, user=user, task_id=f"t{i}"))
    finally:
        await client.aclose()

    assert r.llen("recoveryd:inbox:u-1") == 3
    assert 0 < r.pttl("recoveryd:inbox:u-1") <= 30 * 86400 * 1000
    newest = [entry["task_id"] for entry in read_inbox(r, keys, "u-1")]
    assert newest == ["t4", "t3", "t2"]


async def test_inbox_needs_a_user_id(redis_server):
    client = Redis.from_url(redis_server.url)
    channel = InboxChannel(client, Keys(), InboxSettings())
    try:
        with pytest.raises(DeliveryError, match="no user id"):
            await channel.send(notification(audience=USER))
    finally:
        await client.aclose()


async def test_alert_log_reopen_follows_a_rotation(tmp_path):
    log = AlertLog(tmp_path)
    await log.send(notification(task_id="before"))
    (tmp_path / ADMIN_LOG).rename(tmp_path / "admin_alerts.log.1")
    log.reopen()
    await log.send(notification(task_id="after"))
    await log.aclose()

    line = (tmp_path / ADMIN_LOG).read_text().splitlines()
    assert [json.loads(x)["task_id"] for x in line] == ["after"]
    rotated = (tmp_path / "admin_alerts.log.1").read_text()
    assert json.loads(rotated)["task_id"] == "before"


def test_secret_never_shows_its_value(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SECRET_X", "hunter2-value")
    secret = read_secret("TEST_SECRET_X", None, key="notify.push.token")
    assert secret is not None and secret.reveal() == "hunter2-value"
    assert "hunter2" not in f"{secret} {secret!r} {[secret]}"
    assert isinstance(secret, Secret)


def test_unreadable_secret_file_names_its_key(tmp_path):
    with pytest.raises(SecretError) as caught:
        read_secret(None, str(tmp_path / "missing"), key="notify.sms.token")
    assert caught.value.key == "notify.sms.token_file"
    assert read_secret(None, None, key="notify.sms.token") is None


def test_a_line_break_in_a_task_id_cannot_reach_an_email_header():
    from recoveryd.notifiers.email import build_message

    note = notification(task_id="line1\nBcc: victim@example.test", task="a\r\nb")
    message = build_message(note, "recoveryd@example.test", ["ops@example.test"])
    headers = message.as_bytes().split(b"\n\n", 1)[0]
    assert b"\nBcc:" not in headers
    assert message["X-Recoveryd-Task-Id"] == "line1 Bcc: victim@example.test"


async def test_inbox_batch_reports_each_notification_on_its_own(redis_server, r):
    client = Redis.from_url(redis_server.url)
    keys = Keys("recoveryd")
    channel = InboxChannel(client, keys, InboxSettings())
    r.set(keys.inbox("broken"), "not a list")
    batch = [
        notification(audience=USER, user=User(id="a"), task_id="t1"),
        notification(audience=USER, task_id="t2"),
        notification(audience=USER, user=User(id="broken"), task_id="t3"),
        notification(audience=USER, user=User(id="a"), task_id="t4"),
    ]
    try:
        results = await channel.send_many(batch)
    finally:
        await client.aclose()

    assert results[0] is None and results[3] is None
    assert "no user id" in str(results[1])
    assert "WRONGTYPE" in str(results[2])
    assert [e["task_id"] for e in read_inbox(r, keys, "a")] == ["t4", "t1"]


async def test_alert_log_writes_a_batch_to_each_audience_in_order(tmp_path):
    log = AlertLog(tmp_path)
    batch = [
        notification(task_id="a1"),
        notification(audience=USER, user=User(id="u"), task_id="u1"),
        notification(task_id="a2"),
    ]
    assert await log.send_many(batch) == [None, None, None]
    await log.aclose()

    def ids(name: str) -> list[str]:
        lines = (tmp_path / name).read_text().splitlines()
        return [json.loads(line)["task_id"] for line in lines]

    assert ids(ADMIN_LOG) == ["a1", "a2"]
    assert ids(USER_LOG) == ["u1"]
