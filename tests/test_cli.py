"""The command line: submit, classify, retry and their errors in use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recoveryd.manual import MANUAL_SCORE
from tests.conftest import put_task, write_config


def run(config: Path | None, *args: str, stdin: str | None = None):
    command = [sys.executable, "-m", "recoveryd", *args]
    if config is not None:
        command += ["-c", str(config)]
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def config(tmp_path, redis_server) -> Path:
    return write_config(tmp_path / "c.toml", redis_server.url)


def test_submit_with_flags_pushes_a_record(config, r, keys):
    result = run(
        config,
        "submit",
        "--task",
        "t",
        "--error",
        "boom",
        "--queue",
        "q",
        "--payload",
        '{"n": 1}',
        "--status-code",
        "503",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    task_id = json.loads(result.stdout)["id"]
    record = json.loads(r.lindex(keys.failures, 0))
    assert record == {
        "task": "t",
        "error": "boom",
        "queue": "q",
        "payload": {"n": 1},
        "status_code": 503,
        "id": task_id,
    }


@pytest.mark.parametrize("how", ["flags", "stdin"])
def test_submit_keeps_the_payload_as_written(config, r, keys, how):
    payload = '{"order": 7,  "lines": [1, 2.50, "\\u00e9"]}'
    if how == "flags":
        args = ["--task", "t", "--error", "boom", "--queue", "q", "--payload", payload]
        result = run(config, "submit", *args)
    else:
        record = f'{{"task": "t", "error": "boom", "queue": "q", "payload": {payload}}}'
        result = run(config, "submit", stdin=record)
    assert result.returncode == 0, result.stderr

    pushed = r.lindex(keys.failures, 0).decode()
    assert f'"payload":{payload}' in pushed.replace('"payload": ', '"payload":')
    assert json.loads(pushed)["id"], "the id it printed is in the record"


def test_an_argument_that_is_not_utf8_is_a_usage_error(config, r, keys):
    command = [sys.executable, "-m", "recoveryd", "submit", "-c", str(config)]
    command += ["--task", "t", "--error", "e", "--payload", b"\xff\xfe{}"]
    result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.decode() == "recoveryd submit: payload is not UTF-8 text\n"
    assert r.llen(keys.failures) == 0


def test_submit_rejects_a_bad_record_in_one_line(config, r, keys):
    result = run(config, "submit", stdin='{"task": "t"}')
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "recoveryd submit: not a failure record: missing required field `error`"
    )
    assert r.llen(keys.failures) == 0


def test_classify_stream_keeps_order_and_reports_bad_lines(tmp_path):
    lines = [
        {"task": "a", "error": "Connection refused"},
        "this is not json",
        {"task": "b", "error": "x", "status_code": 429},
    ]
    stdin = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    result = run(None, "classify", "-", stdin=stdin + "\n")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == 3
    assert out[0]["category"] == "recoverable_network"
    assert "error" in out[1]
    assert out[2]["category"] == "rate_limited"
    assert {"category", "action", "confidence", "pattern"} <= out[0].keys()


def test_status_shows_one_task(config, r, keys):
    put_task(r, keys, "t1", queue="q", payload='{"a": 1}', attempt=2)
    result = run(config, "status", "--task", "t1", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["id"], shown["state"], shown["attempt"]) == ("t1", "scheduled", "2")
    assert (shown["queue"], shown["payload"]) == ("q", '{"a": 1}')
    assert "due_at" not in shown, "it has no retry entry"

    seconds, _ = r.time()
    r.zadd(keys.retry, {"t1": (seconds + 90) * 1000})
    shown = json.loads(run(config, "status", "--task", "t1", "--json").stdout)
    assert shown["due_at"] == str((seconds + 90) * 1000)
    assert 80 < float(shown["due_in_s"]) <= 90

    missing = run(config, "status", "--task", "nope")
    assert missing.returncode == 1
    assert "no such task" in missing.stderr

    r.hset(keys.tasks, "junk", "not a record")
    junk = run(config, "status", "--task", "junk")
    assert junk.returncode == 1
    assert "junk: cannot be read: its record is not one recoveryd wrote" in (
        junk.stderr
    )


def test_status_of_a_task_escapes_what_its_record_holds(config, r, keys):
    put_task(r, keys, "odd", task="x\n2099-01-01 CRITICAL forged\x1b[31m")

    result = run(config, "status", "--task", "odd")

    assert result.returncode == 0, result.stderr
    [task_line] = [line for line in result.stdout.splitlines() if "forged" in line]
    assert task_line.split(None, 1)[1] == "x\\n2099-01-01 CRITICAL forged\\x1b[31m"


def test_retry_of_a_task_whose_category_is_paused_succeeds(config, r, keys):
    put_task(r, keys, "held-back", queue="q", payload="p", category="slow")
    r.zadd(keys.retry, {"held-back": 10**13})
    assert run(config, "pause", "category:slow").returncode == 0

    result = run(config, "retry", "held-back")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == (
        "held-back: scheduled; now due (held while category:slow is paused)\n"
    )


def test_retry_makes_a_scheduled_task_due_first(config, r, keys):
    put_task(r, keys, "later", queue="q", payload="p")
    r.zadd(keys.retry, {"later": 10**13, "other": 10**12})
    result = run(config, "retry", "later")
    assert result.returncode == 0, result.stderr
    assert "now due" in result.stdout
    assert r.zrange(keys.retry, 0, 0, withscores=True) == [(b"later", MANUAL_SCORE)]


def test_retry_dead_by_category(config, r, keys):
    for task_id, category in [
        ("d1", "recoverable_network"),
        ("d2", "unrecoverable_data"),
        ("d3", "recoverable_network"),
    ]:
        put_task(
            r,
            keys,
            task_id,
            queue="q",
            payload=task_id,
            category=category,
            state="dead",
        )
        r.zadd(keys.dead, {task_id: 1})
    result = run(config, "retry", "--dead", "--category", "recoverable_network")
    assert result.returncode == 0, result.stderr
    assert "requeued 2" in result.stdout
    assert sorted(r.zrange(keys.retry, 0, -1)) == [b"d1", b"d3"]
    assert r.zrange(keys.dead, 0, -1) == [b"d2"]


def test_retry_of_an_unknown_task_says_so(config):
    result = run(config, "retry", "nope")
    assert result.returncode == 1
    assert "not found" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retry"], "name a task id, or --dead"),
        (["retry", "x", "--dead"], "not both"),
        (["submit", "--task", "t"], "--task and --error are both needed"),
    ],
)
def test_mistakes_in_use_are_one_line(config, args, message):
    result = run(config, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_redis_is_one_line(tmp_path):
    from tests.conftest import free_port

    config = write_config(tmp_path / "c.toml", f"redis://127.0.0.1:{free_port()}/0")
    result = run(config, "status")
    assert result.returncode == 3
    assert "redis is unreachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_argument_mistakes_are_one_line_too(config):
    result = run(config, "classify")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--help" in result.stderr


def test_a_bad_log_level_is_one_line(config):
    result = subprocess.run(
        [sys.executable, "-m", "recoveryd", "run", "-c", str(config)],
        env={**os.environ, "RECOVERYD_LOG_LEVEL": "bogus"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "RECOVERYD_LOG_LEVEL" in result.stderr and "Traceback" not in result.stderr


def test_an_unwritable_state_dir_is_one_line(tmp_path, redis_server):
    (tmp_path / "file").write_text("")
    config = tmp_path / "c.toml"
    state = tmp_path / "file" / "x"
    config.write_text(
        f'[redis]\nurl = "{redis_server.url}"\n[paths]\nstate_dir = "{state}"\n'
    )
    result = run(config, "run")
    assert result.returncode == 2
    assert "paths.state_dir" in result.stderr and "Traceback" not in result.stderr


def test_a_key_of_the_wrong_type_is_one_line_not_a_traceback(config, r, keys):
    r.set(keys.inbox("u2"), "not a list")

    result = run(config, "inbox", "u2")

    assert result.returncode == 1
    assert result.stderr.startswith("recoveryd inbox: redis refused: WRONGTYPE")
    assert "Traceback" not in result.stderr
