"""The whole path, with the daemon as a subprocess against a real Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import redis

from recoveryd.keys import Keys
from tests.conftest import task_of, wait_for

FAST_NETWORK = """
[categories.recoverable_network]
base_delay = "300ms"
max_delay = "1s"
jitter = 0
"""


def push(client: redis.Redis, keys: Keys, **record: object) -> None:
    client.lpush(keys.failures, json.dumps(record))


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recoveryd", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_network_failure_is_redispatched_onto_its_queue(r, keys, start_daemon):
    start_daemon(FAST_NETWORK)
    push(
        r,
        keys,
        task="sync.pull",
        id="t-net",
        queue="q:sync",
        payload={"order": 7},
        error="ConnectionRefusedError: [Errno 111] Connection refused",
    )

    landed = wait_for(lambda: r.brpop(["q:sync"], timeout=0.1), what="re-dispatch")
    assert json.loads(landed[1]) == {"order": 7}
    task = task_of(r, keys, "t-net")
    assert task[b"category"] == b"recoverable_network"
    assert task[b"state"] == b"dispatched"
    assert r.zcard(keys.retry) == 0


def test_string_payload_is_pushed_as_is(r, keys, start_daemon):
    start_daemon(FAST_NETWORK)
    push(
        r,
        keys,
        task="t",
        id="s1",
        queue="q:s",
        payload="raw text",
        error="connection refused",
    )
    landed = wait_for(lambda: r.brpop(["q:s"], timeout=0.1), what="re-dispatch")
    assert landed[1] == b"raw text"


def test_data_failure_is_alerted_not_retried(r, keys, start_daemon, tmp_path):
    start_daemon()
    push(
        r,
        keys,
        task="orders.import",
        id="t-data",
        queue="q:orders",
        payload={},
        error="json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
        error_type="json.decoder.JSONDecodeError",
    )

    alerts = tmp_path / "state" / "admin_alerts.log"
    wait_for(lambda: alerts.exists() and alerts.read_text(), what="the admin alert")
    alert = json.loads(alerts.read_text().splitlines()[0])
    assert alert["task_id"] == "t-data"
    assert alert["analysis"]["category"] == "unrecoverable_data"
    for field in (
        "type",
        "severity",
        "title",
        "description",
        "error_message",
        "created_at",
    ):
        assert alert[field]
    assert r.zcard(keys.retry) == 0
    assert r.zscore(keys.dead, "t-data") is not None
    assert r.llen("q:orders") == 0


def test_malformed_record_is_parked_with_its_reason(r, keys, start_daemon):
    start_daemon()
    r.lpush(keys.failures, b"{not json", b"\xff\xfe\x00", json.dumps({"task": "x"}))

    wait_for(lambda: r.llen(keys.invalid) == 3, what="three parked records")
    parked = [json.loads(raw) for raw in r.lrange(keys.invalid, 0, -1)]
    reasons = sorted(p["reason"] for p in parked)
    assert any("not valid JSON" in reason for reason in reasons)
    assert any("not UTF-8" in reason for reason in reasons)
    assert any("missing required field `error`" in reason for reason in reasons)
    assert any(p.get("raw_base64") == "//4A" for p in parked)


def test_status_counts_what_is_where(r, keys, start_daemon, tmp_path):
    daemon = start_daemon()
    push(r, keys, task="a", id="n1", queue="q", error="connection refused")
    push(r, keys, task="b", id="d1", queue="q", error="malformed JSON in body")
    r.lpush(keys.failures, b"junk")
    wait_for(
        lambda: r.hget(keys.stats, "received") == b"2" and r.llen(keys.invalid),
        what="three records handled",
    )

    result = cli(daemon.config, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["waiting"] == 0
    assert status["in_flight"] == 0
    assert status["scheduled"] == 1
    assert status["dead"] == 1
    assert status["invalid"] == 1
    assert status["by_category"]["recoverable_network"] == 1
    assert len(status["daemons"]) == 1


def test_sigterm_stops_cleanly_and_loses_nothing(r, keys, start_daemon):
    daemon = start_daemon()
    for i in range(500):
        push(r, keys, task="t", id=f"x{i}", queue="q", error="connection refused")
    daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(15) == 0
    handled = int(r.hget(keys.stats, "received") or 0)
    assert handled + r.llen(keys.failures) == 500
    assert r.zcard(keys.retry) == handled
    assert not any(r.llen(k) for k in r.scan_iter(match=keys.inflight("*")))
    assert b"recoveryd stopped" in daemon.log().encode()


def test_sigterm_while_redis_hangs_still_stops_and_loses_nothing(
    r, keys, start_daemon, redis_server
):
    daemon = start_daemon("[intake]\nbatch = 50\n")
    record = json.dumps({"task": "t", "queue": "q", "error": "connection refused"})
    r.lpush(keys.failures, *[record] * 20_000)
    wait_for(lambda: int(r.hget(keys.stats, "received") or 0) > 0, what="intake")

    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        daemon.signal(signal.SIGTERM)
        # The stop grace (10 s) and the sign-off's (10 s), then out.
        assert daemon.process.wait(40) == 0
    finally:
        redis_server.process.send_signal(signal.SIGCONT)

    handled = int(r.hget(keys.stats, "received"))
    in_flight = sum(r.llen(k) for k in r.scan_iter(match=keys.inflight("*")))
    assert handled + in_flight + r.llen(keys.failures) == 20_000
