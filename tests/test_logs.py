"""The daemon's log lines."""

from __future__ import annotations

import json
import logging
import re

import pytest

from recoveryd import logs


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_huge_name_in_a_message_is_cut(restore_logging, capsys, json_lines):
    logs.setup(json_lines=json_lines, level="info")
    name = "T" * 500_000

    logging.getLogger("recoveryd.intake").info("task %s (%s) is dead", name, "id-1")

    [line] = capsys.readouterr().err.splitlines()
    message = json.loads(line)["message"] if json_lines else line
    assert len(message) < logs.MESSAGE_CHARS + 200
    cut = re.search(r"T… \[(\d+) characters cut\]$", message)
    assert cut is not None, message[-80:]
    assert int(cut[1]) == len("task  (id-1) is dead") + 500_000 - logs.MESSAGE_CHARS


def test_a_message_under_the_limit_is_whole(restore_logging, capsys):
    logs.setup(level="info")

    logging.getLogger("recoveryd").warning("channel %s is failing: %s", "sms", "503")

    line = capsys.readouterr().err.rstrip()
    assert line.endswith("recoveryd: channel sms is failing: 503")


def test_a_name_cannot_start_a_line_of_its_own(restore_logging, capsys):
    logs.setup(level="info")
    forged = "x\n2099-01-01 00:00:00 CRITICAL recoveryd: forged\r\x1b[31mred\u2028"

    logging.getLogger("recoveryd.intake").info("task %s is dead", forged)

    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(
        "task x\\n2099-01-01 00:00:00 CRITICAL recoveryd: forged"
        "\\r\\x1b[31mred\\u2028 is dead"
    )


def test_escapes_count_towards_the_limit(restore_logging, capsys):
    logs.setup(level="info")

    logging.getLogger("recoveryd").info("task %s", "\u2028" * 300_000)

    [line] = capsys.readouterr().err.splitlines()
    assert len(line) < logs.MESSAGE_CHARS + 200


@pytest.mark.parametrize("mark", ["\x9b", "\u202e", "\u2066", "\x85"])
def test_c1_controls_and_reordering_marks_are_escaped(mark):
    assert logs.escape(f"a{mark}b") == f"a\\{'x' if ord(mark) < 0x100 else 'u'}" + (
        f"{ord(mark):02x}b" if ord(mark) < 0x100 else f"{ord(mark):04x}b"
    )
