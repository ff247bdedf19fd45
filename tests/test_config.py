"""Config validation: every kind of mistake names its key (and its line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recoveryd.config import ConfigError, load_config, parse_config, parse_duration

EXAMPLE = Path(__file__).parents[1] / "recoveryd.toml"


def test_the_example_config_is_valid():
    config = load_config(EXAMPLE)
    assert config.categories["recoverable_network"].base_delay_s == 30


def test_the_commented_operator_example_works_when_uncommented():
    text = EXAMPLE.read_text()
    start = text.index("# [categories.payment]")
    end = text.index("[notify]\n")
    example = "\n".join(
        line.removeprefix("# ")
        for line in text[start:end].splitlines()
        if not line.startswith("# # ")
    )
    config = parse_config(example)
    assert config.categories["payment"].action == "notify"
    assert config.patterns[0].error_types == ["stripe.error.CardError", "CardError"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("6h", 21600),
        ("1d", 86400),
        ("250ms", 0.25),
        (45, 45),
        (1.5, 1.5),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("toml", "key", "line", "words"),
    [
        (
            '[categories.recoverable_network]\nbase_delay = "soon"\n',
            "categories.recoverable_network.base_delay",
            2,
            "duration",
        ),
        (
            '[categories.recoverable_network]\nmax_retries = "five"\n',
            "categories.recoverable_network.max_retries",
            2,
            "int",
        ),
        (
            "[categories.recoverable_network]\njitter = 0.9\n",
            "categories.recoverable_network.jitter",
            2,
            "fraction",
        ),
        (
            '[categories.payment]\naction = "maybe"\n',
            "categories.payment.action",
            2,
            "retry",
        ),
        ('[redis]\nurll = "redis://x"\n', "redis.urll", 2, "unknown key"),
        ("[notify.email]\nport = 25\n", "notify.email.host", 1, "missing"),
        (
            '[notify.email]\nhost = "h"\nsecurity = "ssl"\n',
            "notify.email.security",
            3,
            "starttls",
        ),
        (
            '\n[[patterns]]\ncategory = "nope"\nregex = "x"\n',
            "patterns[0].category",
            3,
            "no category",
        ),
        (
            '[[patterns]]\ncategory = "unrecoverable_data"\nregex = "a(?=b)"\n',
            "patterns[0].regex",
            3,
            "RE2",
        ),
        ('[classify]\nfallback = "nope"\n', "classify.fallback", 2, "no category"),
        ('[intake]\nmax_record_size = "huge"\n', "intake.max_record_size", 2, "size"),
        (
            '[categories.x]\nbase_delay = "1m"\nmax_delay = "10s"\n',
            "categories.x.max_delay",
            3,
            "shorter",
        ),
    ],
)
def test_each_mistake_names_its_key_and_line(toml, key, line, words):
    with pytest.raises(ConfigError) as caught:
        parse_config(toml)
    assert caught.value.key == key
    assert caught.value.line == line
    assert words in str(caught.value)


def test_broken_toml_says_where():
    with pytest.raises(ConfigError, match="line 2"):
        parse_config("[redis]\nprefix = \n")


def test_operator_category_overrides_only_what_it_names():
    config = parse_config("[categories.recoverable_network]\nmax_retries = 9\n")
    network = config.categories["recoverable_network"]
    assert network.max_retries == 9
    assert network.base_delay_s == 30


def recoveryd_cli(config, command="check-config"):
    """``recoveryd COMMAND -c CONFIG`` as a process, its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "recoveryd", command, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_config_exits_non_zero_with_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[schedule]\nscan_every = "often"\n')
    result = recoveryd_cli(bad)
    assert result.returncode == 2
    assert "schedule.scan_every (line 2)" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_config_names_a_state_dir_that_cannot_be_made(tmp_path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    config = tmp_path / "recoveryd.toml"
    config.write_text(f'[paths]\nstate_dir = "{in_the_way}/state"\n')
    result = recoveryd_cli(config)
    assert result.returncode == 2
    assert "paths.state_dir (line 2)" in result.stderr
    assert f"cannot create {in_the_way}/state" in result.stderr
    assert result.stderr.endswith(": Not a directory\n")


@pytest.mark.parametrize("where", ["loop", "nowhere", "relative-loop"])
def test_check_config_names_a_state_dir_behind_a_broken_link(tmp_path, where):
    if where == "nowhere":
        (tmp_path / "link").symlink_to(tmp_path / "gone")
    else:
        (tmp_path / "link").symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(tmp_path / "link")
    state_dir = "link" if where == "relative-loop" else str(tmp_path / "link")
    config = tmp_path / "recoveryd.toml"
    config.write_text(f'[paths]\nstate_dir = "{state_dir}"\n')

    checked = recoveryd_cli(config)
    assert checked.returncode == 2, checked.stderr
    assert "paths.state_dir (line 2): cannot " in checked.stderr
    assert len(checked.stderr.splitlines()) == 1, "one line, no traceback"

    # And the daemon refuses it alike, rather than starting.
    run = recoveryd_cli(config, "run")
    assert run.returncode == 2, run.stderr
    assert "paths.state_dir (line 2): cannot create" in run.stderr


def test_a_nul_in_state_dir_is_named_not_a_traceback(tmp_path):
    config = tmp_path / "recoveryd.toml"
    config.write_text('[paths]\nstate_dir = "a\\u0000b"\n')
    for command in ("check-config", "run"):
        result = recoveryd_cli(config, command)
        assert result.returncode == 2, result.stderr
        assert "paths.state_dir (line 2)" in result.stderr
        assert "Traceback" not in result.stderr


def test_check_config_checks_where_the_embedded_redis_keeps_its_data(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "redis").write_text("in the way")
    config = tmp_path / "recoveryd.toml"
    config.write_text('[paths]\nstate_dir = "state"\n')

    for command in ("check-config", "run"):
        result = recoveryd_cli(config, command)
        assert result.returncode == 2, result.stderr
        assert "paths.state_dir (line 2): cannot use" in result.stderr
        assert result.stderr.endswith("state/redis: not a directory\n")


def test_check_config_leaves_no_state_dir_behind(tmp_path):
    state_dir = tmp_path / "not-yet" / "state"
    config = tmp_path / "recoveryd.toml"
    config.write_text(f'[paths]\nstate_dir = "{state_dir}"\n')
    result = recoveryd_cli(config)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "not-yet").exists()


def test_a_long_base_delay_lifts_the_default_cap():
    config = parse_config('[categories.slow]\nbase_delay = "2h"\n')
    assert config.categories["slow"].max_delay_s == 7200
