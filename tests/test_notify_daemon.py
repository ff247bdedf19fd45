"""Notifications end to end: the daemon as a subprocess, real providers on loopback.

Failures are pushed onto Redis; what arrives at the SMTP server and the HTTP
providers is what the tests check, with the daemon restarted in between
where durability is the point.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import redis

from recoveryd.keys import Keys
from tests.conftest import wait_for
from tests.servers import SmtpServer, StalledServer

SMTP_ENV = "TEST_SMTP_PASSWORD"
SMS_TOKEN = "sms-token-3c9d0e"
PUSH_TOKEN = "push-token-b41f7a"
SECRETS_ENV = {"TEST_SMS_TOKEN": SMS_TOKEN, "TEST_PUSH_TOKEN": PUSH_TOKEN}

# Text no built-in pattern knows, so it takes the fallback category, which
# here notifies on every channel.
ODD_ERROR = "quux frobnicator wobbled at step 17"
EVERY_CHANNEL = """
[classify]
fallback = "alerting"

[categories.alerting]
action = "notify"
notify = ["email", "sms", "inbox", "push"]
"""

PUSH_ONLY = """
[classify]
fallback = "alerting"

[categories.alerting]
action = "notify"
notify = ["push"]
"""


def notify_toml(
    *,
    window: str = "1s",
    smtp_port: int | None = None,
    cert: Path | None = None,
    sms_url: str | None = None,
    push_url: str | None = None,
    notify_extra: str = "",
    email_extra: str = "",
) -> str:
    parts = [
        f'[notify]\ngroup_window = "{window}"\nbase_delay = "200ms"\n'
        f'max_delay = "1s"\n{notify_extra}\n',
        '[notify.admin]\nemail = ["ops@example.test"]\nphone = ["+15550111"]\n',
    ]
    if smtp_port is not None:
        parts.append(
            f'[notify.email]\nhost = "127.0.0.1"\nport = {smtp_port}\n'
            'security = "starttls"\nusername = "recoveryd"\n'
            f'password_env = "{SMTP_ENV}"\nsender = "recoveryd@example.test"\n'
            f'ca_file = "{cert}"\ntimeout = "10s"\n{email_extra}\n'
        )
    if sms_url is not None:
        parts.append(
            f'[notify.sms]\nprovider = "twilio"\nurl = "{sms_url}/Messages.json"\n'
            'account = "AC77"\ntoken_env = "TEST_SMS_TOKEN"\nsender = "+15550100"\n'
        )
    if push_url is not None:
        parts.append(
            f'[notify.push]\nprovider = "ntfy"\nurl = "{push_url}"\n'
            'token_env = "TEST_PUSH_TOKEN"\n'
        )
    return "\n".join(parts)


def push(client: redis.Redis, keys: Keys, **record: object) -> float:
    client.lpush(keys.failures, json.dumps(record))
    return time.monotonic()


def counts(server: SmtpServer) -> list[int]:
    return [int(m.message["X-Recoveryd-Count"]) for m in server.received]


def cli(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recoveryd", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_fresh_data_failure_is_emailed_within_seconds(
    r, keys, start_daemon, smtp_server, tls_cert, capsys
):
    env = {SMTP_ENV: smtp_server.password}
    start_daemon(notify_toml(smtp_port=smtp_server.port, cert=tls_cert[0]), env=env)

    pushed = push(
        r,
        keys,
        task="orders.import",
        id="t-data-1",
        error="json.decoder.JSONDecodeError: Expecting value: line 1 column 1",
        error_type="json.decoder.JSONDecodeError",
    )
    [mail] = wait_for(lambda: smtp_server.received, what="the email")

    latency_s = mail.at - pushed
    with capsys.disabled():
        print(f"\n[measured] record pushed -> email at SMTP: {latency_s * 1000:.0f} ms")
    assert latency_s < 5.0
    assert mail.tls and mail.login == "recoveryd"
    assert mail.recipients == ["ops@example.test"]
    assert mail.message["Subject"] == (
        "[recoveryd] ERROR orders.import failed: unrecoverable data"
    )
    body = mail.message.get_content()
    assert "t-data-1" in body and "unrecoverable_data" in body
    assert "Expecting value" in body


def test_stalled_smtp_server_delays_neither_sms_nor_push(
    r, keys, start_daemon, http_provider, tls_cert, tmp_path
):
    stalled = StalledServer()
    sms, push_provider = http_provider(), http_provider()
    config = notify_toml(
        smtp_port=stalled.port,
        cert=tls_cert[0],
        sms_url=sms.url,
        push_url=push_provider.url,
    )
    try:
        daemon = start_daemon(
            config + EVERY_CHANNEL, env={SMTP_ENV: "x", **SECRETS_ENV}
        )
        pushed = push(
            r,
            keys,
            task="ship.label",
            id="t-stall",
            error=ODD_ERROR,
            user={"id": "u-7", "push": "u7_alerts"},
        )
        wait_for(lambda: sms.accepted() and push_provider.accepted(), what="sms+push")
        elapsed_s = max(sms.requests[0].at, push_provider.requests[0].at) - pushed
        assert elapsed_s < 5.0, "a stalled SMTP server held up the other channels"
        wait_for(lambda: r.llen(keys.inbox("u-7")), what="the inbox entry")
        # The email is still out with the stalled server, held by its lease.
        assert r.zcard(keys.outbox("email")) == 1
        assert "t-stall" in (tmp_path / "state" / "admin_alerts.log").read_text()
        daemon.stop()
    finally:
        stalled.stop()

    form = sms.requests[0].body.decode()
    assert "To=%2B15550111" in form and "From=%2B15550100" in form
    assert push_provider.requests[0].path == "/u7_alerts"
    assert push_provider.requests[0].headers["Authorization"] == f"Bearer {PUSH_TOKEN}"


def refused_push(r, keys, start_daemon, http_provider, task_id: str):
    """A daemon whose push provider answers 500, and one push on its way there."""
    provider = http_provider(status=500)
    config = notify_toml(push_url=provider.url) + PUSH_ONLY
    daemon = start_daemon(config, env=SECRETS_ENV)
    push(
        r, keys, task="t", id=task_id, error=ODD_ERROR, user={"id": "u-1", "push": "u1"}
    )
    return daemon, provider, config


def test_provider_answering_500_gets_it_after_a_restart(
    r, keys, start_daemon, http_provider
):
    first, provider, config = refused_push(
        r, keys, start_daemon, http_provider, "t-500"
    )
    wait_for(lambda: len(provider.requests) >= 2, what="two refused tries")
    assert first.stop() == 0
    assert r.zcard(keys.outbox("push")) == 1, "the delivery left the outbox"

    provider.status = 200
    start_daemon(config, env=SECRETS_ENV)
    [delivered] = wait_for(provider.accepted, what="delivery after the restart")
    assert delivered.path == "/u1"
    assert b"t-500" in delivered.body or b"quux" in delivered.body
    wait_for(lambda: r.zcard(keys.outbox("push")) == 0, what="the outbox to empty")


def test_undeliverable_after_max_attempts_across_a_restart(
    r, keys, start_daemon, http_provider, tmp_path
):
    provider = http_provider(status=500)
    config = notify_toml(push_url=provider.url, notify_extra="max_attempts = 3")
    config += PUSH_ONLY
    first = start_daemon(config, env=SECRETS_ENV)
    push(r, keys, task="t", id="t-lost", error=ODD_ERROR, user={"push": "u1"})
    wait_for(lambda: provider.requests, what="the first refused try")
    first.stop()

    start_daemon(config, env=SECRETS_ENV)
    alerts = tmp_path / "state" / "admin_alerts.log"

    def undeliverable() -> list[dict[str, object]]:
        lines = alerts.read_text().splitlines() if alerts.exists() else []
        found = [json.loads(line) for line in lines]
        return [a for a in found if a["type"] == "undeliverable"]

    [notice] = wait_for(undeliverable, what="the undeliverable notice")
    assert notice["task_id"] == "t-lost"
    assert "3 tries" in str(notice["description"])
    assert len(provider.requests) >= 3
    assert r.zcard(keys.outbox("push")) == 0


def test_burst_of_1000_identical_failures_sends_a_handful_of_emails(
    r, keys, start_daemon, smtp_server, tls_cert, tmp_path, capsys
):
    env = {SMTP_ENV: smtp_server.password}
    config = notify_toml(smtp_port=smtp_server.port, cert=tls_cert[0], window="1s")
    start_daemon(config + '\n[classify]\nfallback = "unrecoverable_data"\n', env=env)

    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        error = f"malformed JSON in row {i} of order {i * 7919:08x}: {{'sku': {i}}}"
        pipe.lpush(
            keys.failures,
            json.dumps({"task": "orders.import", "id": f"b-{i}", "error": error}),
        )
    pipe.execute()

    wait_for(lambda: sum(counts(smtp_server)) >= 1000, what="all 1000 reported")
    wait_for(lambda: r.zcard(keys.groups) == 0, what="the group to close")
    wait_for(lambda: not r.zcard(keys.outbox("email")), what="the outbox to empty")

    sent = counts(smtp_server)
    with capsys.disabled():
        print(f"\n[measured] 1000 identical failures -> {len(sent)} emails: {sent}")
    assert sum(sent) == 1000
    assert 2 <= len(sent) <= 5
    assert sent[0] == 1
    summary = smtp_server.received[1].message
    assert "failed" in summary["Subject"] and "more times" in summary["Subject"]
    assert "Sample ids:" in summary.get_content()
    lines = (tmp_path / "state" / "admin_alerts.log").read_text().splitlines()
    assert len(lines) == len(sent)


def test_rate_limit_caps_a_burst_of_distinct_failures(
    r, keys, start_daemon, smtp_server, tls_cert
):
    env = {SMTP_ENV: smtp_server.password}
    config = notify_toml(
        smtp_port=smtp_server.port, cert=tls_cert[0], email_extra="max_per_hour = 4"
    )
    start_daemon(config + '\n[classify]\nfallback = "unrecoverable_data"\n', env=env)

    pipe = r.pipeline(transaction=False)
    for i in range(300):
        record = {"task": f"import.{i}", "id": f"r-{i}", "error": "malformed JSON"}
        pipe.lpush(keys.failures, json.dumps(record))
    pipe.execute()

    def covered() -> int:
        return sum(counts(smtp_server)) + r.zcard(keys.outbox("email"))

    wait_for(
        lambda: len(smtp_server.received) == 4 and covered() == 300,
        what="four emails covering the burst, the rest waiting",
    )
    assert max(counts(smtp_server)) > 1, "no digest of the overflow"

    # An hour later (the send log emptied), the rest goes out as a digest.
    r.delete(keys.sent("email"))
    r.publish(keys.wake, "outbox:email 0")
    wait_for(lambda: sum(counts(smtp_server)) == 300, what="the held rest")
    assert len(smtp_server.received) <= 8


def test_no_secret_reaches_the_log_or_the_alert_files(
    r, keys, start_daemon, http_provider, smtp_server, tls_cert, tmp_path
):
    sms, push_provider = http_provider(status=401), http_provider()
    config = notify_toml(
        smtp_port=smtp_server.port,
        cert=tls_cert[0],
        sms_url=sms.url,
        push_url=push_provider.url,
    )
    wrong_password = "wr0ng-smtp-pass-5e1"
    env = {SMTP_ENV: wrong_password, **SECRETS_ENV}
    daemon = start_daemon(config + EVERY_CHANNEL, env=env)
    push(r, keys, task="t", id="t-sec", error=ODD_ERROR, user={"id": "u", "push": "p"})

    wait_for(lambda: push_provider.accepted() and len(sms.requests) >= 2, what="tries")
    wait_for(lambda: "channel email is failing" in daemon.log(), what="email failing")
    daemon.stop()

    texts = [daemon.log()]
    texts += [p.read_text() for p in (tmp_path / "state").glob("*.log")]
    texts += [
        str(v)
        for k in r.scan_iter()
        if r.type(k) == b"zset"
        for v in r.zrange(k, 0, -1)
    ]
    for secret in (wrong_password, SMS_TOKEN, PUSH_TOKEN, smtp_server.password):
        assert not any(secret in text for text in texts), secret


def test_inbox_command_shows_a_users_notifications(r, keys, start_daemon):
    daemon = start_daemon(EVERY_CHANNEL)
    push(r, keys, task="ship", id="t-in", error=ODD_ERROR, user={"id": "u-5"})
    wait_for(lambda: r.llen(keys.inbox("u-5")), what="the inbox entry")

    as_json = cli(daemon.config, "inbox", "u-5", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [entry] = json.loads(as_json.stdout)
    assert entry["task_id"] == "t-in" and entry["audience"] == "user"
    plain = cli(daemon.config, "inbox", "u-5")
    assert "ship failed: alerting" in plain.stdout
    assert "is empty" in cli(daemon.config, "inbox", "nobody").stdout


def test_check_config_names_a_channel_missing_its_secret(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[notify.admin]\nemail = ["a@x.test"]\n\n[notify.email]\nhost = "h"\n'
        'username = "u"\npassword_env = "TEST_RECOVERYD_UNSET_4711"\n'
    )
    result = cli(config, "check-config")
    assert result.returncode == 2
    assert "notify.email.password_env (line 7)" in result.stderr
    assert "TEST_RECOVERYD_UNSET_4711 is not set" in result.stderr


def test_a_silence_also_quiets_what_was_already_waiting(
    r, keys, start_daemon, http_provider
):
    daemon, provider, _ = refused_push(r, keys, start_daemon, http_provider, "t-quiet")
    wait_for(lambda: provider.requests, what="a refused try")

    silenced = cli(daemon.config, "silence", "category:alerting", "--for", "1h")
    assert silenced.returncode == 0, silenced.stderr
    provider.status = 200
    wait_for(lambda: r.zcard(keys.outbox("push")) == 0, what="the outbox to empty")
    assert provider.accepted() == []
    assert "deliveries silenced" in daemon.log()
