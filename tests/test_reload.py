"""SIGHUP: a good config takes effect for the next record, a bad one is refused."""

from __future__ import annotations

import json
import signal

from tests.conftest import task_of, wait_for

ORIGINAL = """
[categories.recoverable_network]
base_delay = "1h"
"""

WITH_PATTERN = (
    ORIGINAL
    + """
[categories.vendor_outage]
action = "retry"
base_delay = "2h"

[[patterns]]
name = "vendor.acme_down"
category = "vendor_outage"
regex = "acme gateway (is )?down"
"""
)


def classify_next(r, keys, task_id: str) -> str:
    r.lpush(
        keys.failures,
        json.dumps(
            {"task": "t", "id": task_id, "queue": "q", "error": "ACME gateway is down"}
        ),
    )
    found = wait_for(
        lambda: task_of(r, keys, task_id).get(b"category"),
        what=f"{task_id} to be classified",
    )
    return found.decode()


def test_good_config_changes_classification_of_the_next_record(r, keys, start_daemon):
    daemon = start_daemon(ORIGINAL)
    before = classify_next(r, keys, "before")
    assert before != "vendor_outage"

    daemon.config.write_text(
        daemon.config.read_text() + WITH_PATTERN.replace(ORIGINAL, "")
    )
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in daemon.log(), what="the reload")

    assert classify_next(r, keys, "after") == "vendor_outage"
    assert "patterns" in daemon.log()
    assert daemon.process.poll() is None


def test_bad_config_keeps_the_old_one_running(r, keys, start_daemon):
    daemon = start_daemon(ORIGINAL)
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace('base_delay = "1h"', 'base_delay = "soon"'))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded" in daemon.log(), what="the refusal")

    log = daemon.log()
    assert "categories.recoverable_network" in log
    assert daemon.process.poll() is None
    # Still the old config: records flow as before.
    assert classify_next(r, keys, "still") != "vendor_outage"
    assert task_of(r, keys, "still").get(b"state") == b"scheduled"


def test_reload_turns_on_a_new_channel(r, keys, start_daemon, http_provider):
    from tests.test_notify_daemon import ODD_ERROR, PUSH_ONLY, SECRETS_ENV, notify_toml

    provider = http_provider()
    daemon = start_daemon(PUSH_ONLY, env=SECRETS_ENV)
    daemon.config.write_text(
        daemon.config.read_text() + notify_toml(push_url=provider.url)
    )
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "channels now:" in daemon.log(), what="the channels rebuilt")
    assert "push" in daemon.log().split("channels now:")[1].splitlines()[0]

    r.lpush(
        keys.failures,
        json.dumps(
            {
                "task": "t",
                "id": "p1",
                "error": ODD_ERROR,
                "user": {"id": "u", "push": "topic"},
            }
        ),
    )
    [request] = wait_for(provider.accepted, what="the push through the new channel")
    assert request.path == "/topic"


def test_sighup_reopens_a_moved_alert_log(r, keys, start_daemon, tmp_path):
    daemon = start_daemon()
    alerts = tmp_path / "state" / "admin_alerts.log"

    def data_failure(task_id: str) -> None:
        # A task of its own each, so notification grouping keeps them apart.
        r.lpush(
            keys.failures,
            json.dumps(
                {"task": task_id, "id": task_id, "error": "malformed JSON in the body"}
            ),
        )

    data_failure("before")
    wait_for(lambda: alerts.exists() and "before" in alerts.read_text(), what="alert")
    alerts.rename(tmp_path / "state" / "admin_alerts.log.1")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in daemon.log(), what="the reload")
    data_failure("after")
    wait_for(
        lambda: alerts.exists() and "after" in alerts.read_text(),
        what="the alert in a new file",
    )
    assert "after" not in (tmp_path / "state" / "admin_alerts.log.1").read_text()
