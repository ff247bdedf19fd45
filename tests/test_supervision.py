"""Long-lived loops survive their own bugs; config reload reports changes."""

from __future__ import annotations

import logging

from recoveryd import daemon
from recoveryd.config import parse_config


async def test_a_failing_loop_is_logged_and_restarted(monkeypatch, caplog):
    monkeypatch.setattr(daemon, "RESTART_MIN_S", 0)
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR):
        await daemon.restarting("flaky", flaky)
    assert len(calls) == 3
    assert caplog.text.count("the flaky loop failed") == 2
    assert "RuntimeError: a bug" in caplog.text


def test_reload_names_what_changed_never_values():
    admin = '[notify.admin]\nemail = ["ops@example.com"]\n'
    old = parse_config(admin + '[notify.email]\nhost = "a"\npassword_env = "X"\n')
    new = parse_config(
        admin + '[notify.email]\nhost = "b"\npassword_env = "X"\n'
        '[categories.vendor]\nbase_delay = "2m"\n'
    )
    changed = daemon.changed_keys(old, new)
    assert changed == ["categories.vendor (added)", "notify.email.host"]
