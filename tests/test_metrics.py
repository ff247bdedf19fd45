"""The Prometheus endpoint, after some traffic."""

from __future__ import annotations

import json

import httpx

from recoveryd.metrics import parse_listen
from tests.conftest import free_port, wait_for


def test_metrics_endpoint_has_the_expected_series(r, keys, start_daemon):
    port = free_port()
    start_daemon(
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        '[categories.recoverable_network]\nbase_delay = "100ms"\njitter = 0\n'
    )
    r.lpush(
        keys.failures,
        json.dumps(
            {"task": "t", "id": "m1", "queue": "q", "error": "Connection refused"}
        ),
    )
    r.lpush(keys.failures, b"not json")
    wait_for(lambda: r.llen("q") == 1, what="the retry to be dispatched")

    def scrape() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return ""

    text = wait_for(
        lambda: (t := scrape()) and "recoveryd_retries_dispatched_total 1.0" in t and t,
        what="the dispatch to show in the metrics",
    )
    assert (
        'recoveryd_failures_received_total{category="recoverable_network"} 1.0' in text
    )
    assert 'recoveryd_outcomes_total{outcome="invalid"} 1.0' in text
    assert "recoveryd_dispatch_lateness_seconds_count 1.0" in text
    assert "recoveryd_redis_up 1.0" in text
    assert "recoveryd_invalid_records 1.0" in text
    assert "recoveryd_retries_pending 0.0" in text
    assert "process_resident_memory_bytes" in text


def test_listen_address_forms():
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
