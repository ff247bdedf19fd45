"""Configuration: `recoveryd.toml` decoded into typed settings.

Durations are written as ``"30s"``, ``"5m"``, ``"6h"``, ``"7d"`` or plain
seconds, and sizes as ``"1MiB"`` or plain bytes; both become numbers once,
here. Every mistake is reported as a `ConfigError` naming the key's dotted
path and, where the file has it, its line.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from recoveryd.categories import BUILTIN_CATEGORIES, CategorySettings

__all__ = [
    "Config",
    "ConfigError",
    "key_line",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]


_T = TypeVar("_T")


class ConfigError(Exception):
    """A config file that cannot be used, with the key and line at fault."""

    def __init__(self, message: str, *, key: str = "", line: int | None = None):
        self.key = key
        self.line = line
        where = key
        if line is not None:
            where = f"{key} (line {line})" if key else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


# Ten years: far past any sensible setting, and well inside what the clocks
# and millisecond scores downstream can hold (it also refuses nan and inf).
MAX_DURATION_S = 10 * 365 * 86400.0
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
NOTIFY_TARGETS = ("alert_log", "email", "sms", "inbox", "push", "admin", "user")


def parse_duration(value: object) -> float:
    """Seconds from ``"30s"``, ``"5m"``, ``"6h"``, ``"1d"``, ``"250ms"`` or a number."""
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "30s", got {value!r}')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _DURATION_UNITS_S[match[2] or "s"]
    else:
        raise ValueError(f'expected a duration like "30s", got {value!r}')
    if not 0 <= seconds <= MAX_DURATION_S:
        raise ValueError(
            f"a duration is from 0 to {MAX_DURATION_S // 86400:g} days, got {value!r}"
        )
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``"1MiB"``, ``"512KB"`` or a whole number."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (match := _SIZE.match(value)):
        return int(match[1]) * _SIZE_UNITS[(match[2] or "b").lower()]
    raise ValueError(f'expected a size like "1MiB", got {value!r}')


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every section: unknown keys are mistakes, not silently ignored."""


class RedisSettings(_Section, kw_only=True):
    url: str | None = None
    prefix: str = "recoveryd"


class PathSettings(_Section, kw_only=True):
    state_dir: str = "state"


class IntakeSettings(_Section, kw_only=True):
    max_record_size: int = 1024 * 1024
    batch: int = 500
    batch_bytes: int = 8 * 1024 * 1024
    invalid_max: int = 100_000


class ClassifySettings(_Section, kw_only=True):
    fallback: str = "recoverable_temporary"


class RetrySettings(_Section, kw_only=True):
    retry_after_ceiling_s: float = 86400.0
    task_ttl_s: float = 7 * 86400.0
    dispatch_batch: int = 1000

    @property
    def task_ttl_ms(self) -> int:
        """How long a recovered or succeeded task is remembered, in ms."""
        return round(self.task_ttl_s * 1000)


class DeadSettings(_Section, kw_only=True):
    max_age_s: float = 30 * 86400.0
    max_count: int = 100_000


class PatternSettings(_Section, kw_only=True):
    category: str
    regex: str
    error_types: list[str] = []
    name: str | None = None


class AdminSettings(_Section, kw_only=True):
    email: list[str] = []
    phone: list[str] = []


class EmailSettings(_Section, kw_only=True):
    host: str
    port: int = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    sender: str = "recoveryd@localhost"
    # A PEM bundle to trust instead of the system's (a private CA, a test).
    ca_file: str | None = None
    timeout_s: float = 30.0
    max_per_hour: int = 60


class SmsSettings(_Section, kw_only=True):
    provider: Literal["twilio", "webhook"] = "webhook"
    url: str
    account: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    sender: str | None = None
    timeout_s: float = 15.0
    max_per_hour: int = 10


class PushSettings(_Section, kw_only=True):
    provider: Literal["ntfy", "webhook"] = "webhook"
    url: str
    token_env: str | None = None
    token_file: str | None = None
    timeout_s: float = 15.0
    max_per_hour: int = 120


class InboxSettings(_Section, kw_only=True):
    enabled: bool = True
    max_items: int = 100
    max_age_s: float = 30 * 86400.0


class NotifySettings(_Section, kw_only=True):
    group_window_s: float = 300.0
    repeat_every_s: float = 3600.0
    max_attempts: int = 10
    base_delay_s: float = 5.0
    max_delay_s: float = 3600.0
    admin: AdminSettings = msgspec.field(default_factory=AdminSettings)
    email: EmailSettings | None = None
    sms: SmsSettings | None = None
    push: PushSettings | None = None
    inbox: InboxSettings = msgspec.field(default_factory=InboxSettings)


class ScheduleSettings(_Section, kw_only=True):
    scan_every_s: float = 1800.0
    scan_window_s: float = 86400.0
    analyze_every_s: float = 6 * 3600.0
    analyze_window_s: float = 86400.0
    # A re-dispatched task that does not fail again within this counts as
    # recovered (unless its application reports otherwise).
    recovery_window_s: float = 3600.0


class AdaptiveSettings(_Section, kw_only=True):
    """Adaptive backoff: the base delay per category follows its success rate."""

    enabled: bool = True
    every_s: float = 3600.0
    min_samples: int = 20
    low_rate: float = 0.6
    high_rate: float = 0.9
    low_factor: float = 1.5
    high_factor: float = 0.8
    # Bounds, as multiples of the category's configured base_delay.
    min_scale: float = 0.25
    max_scale: float = 8.0


class ManualSettings(_Section, kw_only=True):
    # Retries per second for `retry --dead` and for releasing held retries.
    rate: float = 100.0


class MetricsSettings(_Section, kw_only=True):
    listen: str | None = None


class LogSettings(_Section, kw_only=True):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Section, kw_only=True):
    """The whole configuration, with every duration in seconds."""

    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    paths: PathSettings = msgspec.field(default_factory=PathSettings)
    intake: IntakeSettings = msgspec.field(default_factory=IntakeSettings)
    classify: ClassifySettings = msgspec.field(default_factory=ClassifySettings)
    retry: RetrySettings = msgspec.field(default_factory=RetrySettings)
    dead: DeadSettings = msgspec.field(default_factory=DeadSettings)
    categories: dict[str, CategorySettings] = msgspec.field(
        default_factory=lambda: dict(BUILTIN_CATEGORIES)
    )
    patterns: list[PatternSettings] = []
    notify: NotifySettings = msgspec.field(default_factory=NotifySettings)
    schedule: ScheduleSettings = msgspec.field(default_factory=ScheduleSettings)
    adaptive: AdaptiveSettings = msgspec.field(default_factory=AdaptiveSettings)
    manual: ManualSettings = msgspec.field(default_factory=ManualSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    source: str | None = None

    @property
    def state_dir(self) -> Path:
        return Path(self.paths.state_dir)


# Keys written in the file as durations or sizes, and the field each becomes.
_DURATION_KEYS = {
    "base_delay": "base_delay_s",
    "max_delay": "max_delay_s",
    "retry_after_ceiling": "retry_after_ceiling_s",
    "task_ttl": "task_ttl_s",
    "max_age": "max_age_s",
    "group_window": "group_window_s",
    "repeat_every": "repeat_every_s",
    "scan_every": "scan_every_s",
    "scan_window": "scan_window_s",
    "analyze_every": "analyze_every_s",
    "analyze_window": "analyze_window_s",
    "recovery_window": "recovery_window_s",
    "every": "every_s",
    "timeout": "timeout_s",
}
_SIZE_KEYS = {"max_record_size", "batch_bytes"}


def file_key(field_path: str) -> str:
    """A dotted field path as the file spells it (``base_delay_s`` → ``base_delay``)."""
    names = {field: key for key, field in _DURATION_KEYS.items()}
    return ".".join(names.get(part, part) for part in field_path.split("."))


def load_config(path: str | Path | None) -> Config:
    """Read and validate a config file; no path gives the built-in defaults."""
    if path is None:
        return parse_config("", source=None)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    config = parse_config(text, source=str(path))
    if not Path(config.paths.state_dir).is_absolute():
        # A relative state_dir is relative to the config file, not to
        # wherever the daemon happened to be started from.
        # Made absolute without following links: a link that leads nowhere
        # is for the check of state_dir to name, not a crash here.
        config.paths.state_dir = os.path.abspath(path.parent / config.paths.state_dir)
    return config


def key_line(path: str | Path | None, key: str) -> int | None:
    """The line of the file at ``path`` that ``key`` is written on, if found.

    For problems found after the file was read, such as a directory that
    cannot be made.
    """
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return _KeyLocator(text)(key)


def parse_config(text: str, *, source: str | None = None) -> Config:
    """Validate TOML text; raises `ConfigError` naming the key and line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None

    locate = _KeyLocator(text)
    try:
        data = _normalise(raw, ())
    except _KeyError as exc:
        raise ConfigError(exc.message, key=exc.key, line=locate(exc.key)) from None

    categories = dict(BUILTIN_CATEGORIES)
    for name, table in data.pop("categories", {}).items():
        key = f"categories.{name}"
        base = categories.get(name)
        merged = msgspec.structs.asdict(base) if base else {}
        merged.update(table)
        category = _convert(merged, CategorySettings, key, locate)
        if "max_delay_s" not in table and category.max_delay_s < category.base_delay_s:
            # A longer base_delay with no max_delay given lifts the cap with
            # it, rather than failing on a cap the operator never wrote.
            category.max_delay_s = category.base_delay_s
        categories[name] = category

    config = _convert(data, Config, "", locate)
    config.categories = categories
    config.source = source
    _check(config, locate)
    return config


class _KeyError(Exception):
    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message


def _normalise(table: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """Turn duration and size strings into numbers, renaming keys to their units."""
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = ".".join((*path, name))
        if isinstance(value, dict):
            out[name] = _normalise(value, (*path, name))
        elif (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
        ):
            out[name] = [
                _normalise(item, (*path, f"{name}[{i}]"))
                for i, item in enumerate(value)
            ]
        elif name in _DURATION_KEYS:
            try:
                out[_DURATION_KEYS[name]] = parse_duration(value)
            except ValueError as exc:
                raise _KeyError(key, str(exc)) from None
        elif name in _SIZE_KEYS:
            try:
                out[name] = parse_size(value)
            except ValueError as exc:
                raise _KeyError(key, str(exc)) from None
        elif name in _DURATION_KEYS.values():
            raise _KeyError(key, f"unknown key (write {name.removesuffix('_s')})")
        else:
            out[name] = value
    return out


_MSGSPEC_PATH = re.compile(r"^(.*) - at `\$(.*)`$")


def _convert(data: Any, kind: type[_T], key: str, locate: _KeyLocator) -> _T:
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        message, sub = str(exc), ""
        if match := _MSGSPEC_PATH.match(message):
            message, sub = match[1], match[2]
        message, sub = _explain(message, sub)
        if message.startswith("Invalid enum value"):
            choices = ", ".join(_literal_choices(kind, sub))
            message = f"expected one of {choices}; got {message.split(' ', 3)[-1]}"
        full = (key + sub).lstrip(".")
        for unit_key, field in _DURATION_KEYS.items():
            full = full.replace(field, unit_key)
        raise ConfigError(_lower_first(message), key=full, line=locate(full)) from None


def _explain(message: str, sub: str) -> tuple[str, str]:
    if match := re.match(r"Object contains unknown field `(.+)`", message):
        return "unknown key", f"{sub}.{match[1]}"
    if match := re.match(r"Object missing required field `(.+)`", message):
        return "required key is missing", f"{sub}.{match[1]}"
    return message, sub


def _literal_choices(kind: Any, sub: str) -> list[str]:
    """The allowed values of the Literal field at ``sub`` (``.a.b``) in ``kind``."""
    for name in sub.strip(".").split("."):
        hints = typing.get_type_hints(kind) if isinstance(kind, type) else {}
        kind = hints.get(name)
        # Optional sections are ``X | None``: step into the X.
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if typing.get_origin(kind) is not Literal and len(args) == 1:
            kind = args[0]
    return [str(value) for value in typing.get_args(kind)]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _check(config: Config, locate: _KeyLocator) -> None:
    """Rules that span keys: names that must refer to each other, sane bounds."""

    def fail(key: str, message: str) -> None:
        raise ConfigError(message, key=key, line=locate(key))

    for name, category in config.categories.items():
        key = f"categories.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            fail(key, "a category name is lower-case letters, digits and _")
        for j, target in enumerate(category.notify):
            if target not in NOTIFY_TARGETS:
                fail(
                    f"{key}.notify",
                    f"[{j}] {target!r} is not one of {', '.join(NOTIFY_TARGETS)}",
                )
        if category.action not in ("retry", "notify"):
            fail(
                f"{key}.action",
                f'expected "retry" or "notify", got {category.action!r}',
            )
        if category.max_retries < 0:
            fail(f"{key}.max_retries", "cannot be negative")
        if not 0.0 <= category.jitter <= 0.5:
            fail(
                f"{key}.jitter",
                f"expected a fraction from 0 to 0.5, got {category.jitter}",
            )
        if category.max_delay_s < category.base_delay_s:
            fail(f"{key}.max_delay", "is shorter than base_delay")
        if category.action == "retry" and category.base_delay_s <= 0:
            fail(f"{key}.base_delay", "a retried category needs a delay above zero")

    if config.classify.fallback not in config.categories:
        fail("classify.fallback", f"no category named {config.classify.fallback!r}")
    for i, pattern in enumerate(config.patterns):
        if pattern.category not in config.categories:
            fail(f"patterns[{i}].category", f"no category named {pattern.category!r}")
    if config.redis.url is not None and not config.redis.url.startswith(REDIS_SCHEMES):
        fail("redis.url", f"expected a URL starting {', '.join(REDIS_SCHEMES)}")
    if not re.fullmatch(r"[^\s]+", config.redis.prefix):
        fail("redis.prefix", "must be non-empty and without spaces")
    if config.intake.batch < 1:
        fail("intake.batch", "must be at least 1")
    if config.intake.max_record_size < 64:
        fail("intake.max_record_size", "must be at least 64 bytes")
    if config.retry.dispatch_batch < 1:
        fail("retry.dispatch_batch", "must be at least 1")
    for key, message in _upkeep_problems(config):
        fail(key, message)
    for key, message in _notify_problems(config.notify):
        fail(key, message)
    if config.metrics.listen is not None:
        from recoveryd.metrics import parse_listen

        try:
            parse_listen(config.metrics.listen)
        except ValueError as exc:
            fail("metrics.listen", str(exc))

    # Operator regexes are compiled here so that a pattern the engine cannot
    # run stops the config at load time, not the daemon at the first record.
    from recoveryd.classify import PatternError, compile_pattern

    for i, pattern in enumerate(config.patterns):
        if not pattern.regex:
            fail(f"patterns[{i}].regex", "an empty regex would match every failure")
        try:
            compile_pattern(pattern.regex)
        except PatternError as exc:
            fail(f"patterns[{i}].regex", str(exc))


def _notify_problems(notify: NotifySettings) -> list[tuple[str, str]]:
    """Notify settings that cannot work together; secrets are checked at use."""
    problems: list[tuple[str, str]] = []
    if notify.max_attempts < 1:
        problems.append(("notify.max_attempts", "must be at least 1"))
    if notify.max_delay_s < notify.base_delay_s:
        problems.append(("notify.max_delay", "is shorter than base_delay"))
    if notify.inbox.max_items < 1:
        problems.append(("notify.inbox.max_items", "must be at least 1"))
    channels: dict[str, EmailSettings | SmsSettings | PushSettings | None] = {
        "email": notify.email,
        "sms": notify.sms,
        "push": notify.push,
    }
    for name, settings in channels.items():
        if settings is None:
            continue
        key = f"notify.{name}"
        if settings.max_per_hour < 0:
            problems.append((f"{key}.max_per_hour", "cannot be negative (0: no cap)"))
        secret = "password" if name == "email" else "token"
        if getattr(settings, f"{secret}_env") and getattr(settings, f"{secret}_file"):
            problems.append(
                (
                    f"{key}.{secret}_file",
                    f"give {secret}_env or {secret}_file, not both",
                )
            )
        url = getattr(settings, "url", "")
        if url and not re.match(r"^https?://[^/\s]+", url):
            problems.append((f"{key}.url", f"expected an http(s) URL, got {url!r}"))
    email, sms = notify.email, notify.sms
    if (
        email is not None
        and email.username
        and not (email.password_env or email.password_file)
    ):
        problems.append(
            ("notify.email.password_env", "username is set but no password source")
        )
    if email is not None and not notify.admin.email:
        problems.append(("notify.admin.email", "[notify.email] is on but lists no one"))
    if sms is not None and not notify.admin.phone:
        problems.append(("notify.admin.phone", "[notify.sms] is on but lists no one"))
    if sms is not None and sms.provider == "twilio":
        if not sms.account:
            problems.append(("notify.sms.account", "twilio needs the account SID"))
        if not (sms.token_env or sms.token_file):
            problems.append(("notify.sms.token_env", "twilio needs an auth token"))
        if not sms.sender:
            problems.append(("notify.sms.sender", "twilio needs a sender number"))
    return problems


def _upkeep_problems(config: Config) -> list[tuple[str, str]]:
    """Scan, analysis, adaptive backoff and manual settings out of range."""
    problems: list[tuple[str, str]] = []
    schedule, adaptive = config.schedule, config.adaptive
    day_s = 86400.0
    for name in ("scan_every", "analyze_every", "recovery_window"):
        if getattr(schedule, f"{name}_s") < 1.0:
            problems.append((f"schedule.{name}", "must be at least 1s"))
    # History keeps 49 hours: a window and the one before it must fit.
    if not 60.0 <= schedule.scan_window_s <= 2 * day_s:
        problems.append(("schedule.scan_window", "must be from 1m to 48h"))
    if not 60.0 <= schedule.analyze_window_s <= day_s:
        problems.append(("schedule.analyze_window", "must be from 1m to 24h"))
    if adaptive.every_s < 1.0:
        problems.append(("adaptive.every", "must be at least 1s"))
    if adaptive.min_samples < 1:
        problems.append(("adaptive.min_samples", "must be at least 1"))
    if not 0.0 <= adaptive.low_rate <= adaptive.high_rate <= 1.0:
        problems.append(
            ("adaptive.high_rate", "expected 0 <= low_rate <= high_rate <= 1")
        )
    if adaptive.low_factor < 1.0:
        problems.append(("adaptive.low_factor", "must be at least 1 (slower)"))
    if not 0.0 < adaptive.high_factor <= 1.0:
        problems.append(("adaptive.high_factor", "must be above 0, at most 1"))
    if not 0.0 < adaptive.min_scale <= 1.0:
        problems.append(("adaptive.min_scale", "must be above 0, at most 1"))
    if adaptive.max_scale < 1.0:
        problems.append(("adaptive.max_scale", "must be at least 1"))
    if config.manual.rate <= 0:
        problems.append(("manual.rate", "must be above 0 (retries per second)"))
    return problems


class _KeyLocator:
    """Finds the line a dotted key is written on, for error messages.

    tomllib keeps no positions, so this follows table headers and key names
    through the text; it knows the plain layouts an operator writes
    (``[a.b]``, ``[[a]]``, ``key = value``) and gives up quietly otherwise.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r'^\s*("?)([A-Za-z0-9_\-.]+)\1\s*=')

    def __init__(self, text: str):
        self._lines: dict[str, int] = {}
        table: list[str] = []
        arrays: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if header := self._HEADER.match(line):
                name = header[2].replace('"', "")
                if header[1] == "[[":
                    index = arrays.get(name, -1) + 1
                    arrays[name] = index
                    table = [f"{name}[{index}]"]
                else:
                    table = [name]
                self._lines.setdefault(table[0], number)
            elif key := self._KEY.match(line):
                self._lines.setdefault(".".join([*table, key[2]]), number)

    def __call__(self, key: str) -> int | None:
        while key:
            if key in self._lines:
                return self._lines[key]
            key = key.rpartition(".")[0]
        return None
