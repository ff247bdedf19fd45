"""The `recoveryd` command: the daemon and the operator's tools around it.

A mistake in use prints one line on stderr and exits 2; Redis that cannot be
reached exits 3. Tracebacks are kept for bugs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import msgspec
import redis

from recoveryd import __version__, logs
from recoveryd.classify import Classifier
from recoveryd.config import Config, ConfigError, key_line, load_config
from recoveryd.embedded import EmbeddedError, embedded_url
from recoveryd.keys import Keys
from recoveryd.records import FailureRecord, InvalidRecord, decode_record

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_REDIS = 3
# The command ran, but what it was asked to act on was not there.
EXIT_NOT_DONE = 1
DEFAULT_CONFIG = "recoveryd.toml"


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr, as everywhere else."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


class NoRedis(Exception):
    """There is no Redis to talk to; exits like an unreachable one."""


class UsageError(Exception):
    """A mistake in how the command was used; printed as one line."""


def _not_utf8(args: argparse.Namespace) -> str | None:
    """The argument whose bytes were not UTF-8, if any.

    Python keeps such bytes as lone surrogates, which nothing downstream
    (JSON, Redis) can encode.
    """
    for name, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    text.encode()
                except UnicodeEncodeError:
                    return name.replace("_", "-")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if (name := _not_utf8(args)) is not None:
        return _fail(f"recoveryd {args.command}: {name} is not UTF-8 text", EXIT_USAGE)
    try:
        result: int = args.handler(args)
        return result
    except (UsageError, ConfigError, EmbeddedError) as exc:
        return _fail(f"recoveryd {args.command}: {exc}", EXIT_USAGE)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return _fail(
            f"recoveryd {args.command}: redis is unreachable: {exc}", EXIT_REDIS
        )
    except NoRedis as exc:
        return _fail(f"recoveryd {args.command}: {exc}", EXIT_REDIS)
    except redis.ResponseError as exc:
        # Redis refused a command: a key holds the wrong kind of value.
        return _fail(f"recoveryd {args.command}: redis refused: {exc}", 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); nothing left worth saying.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


def _common_options(*, top: bool) -> argparse.ArgumentParser:
    # The options are accepted before and after the command; after it, they
    # must not reset what was given before, hence no defaults there.
    common = argparse.ArgumentParser(add_help=False)
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"config file (default: $RECOVERYD_CONFIG, else ./{DEFAULT_CONFIG})",
        **default,
    )
    common.add_argument(
        "--json", action="store_true", help="machine-readable output", **default
    )
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common_options(top=False)
    parser = _Parser(
        prog="recoveryd",
        description="Failed-task recovery daemon: classify, retry, notify.",
        parents=[_common_options(top=True)],
    )
    parser.add_argument(
        "--version", action="version", version=f"recoveryd {__version__}"
    )
    sub: Any = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], text: str
    ) -> Any:
        cmd = sub.add_parser(name, help=text, description=text, parents=[common])
        cmd.set_defaults(handler=handler)
        return cmd

    command("run", _run, "run the daemon in the foreground")
    submit = command(
        "submit", _submit, "report a failure (flags, or a JSON record on stdin)"
    )
    submit.add_argument("--task")
    submit.add_argument("--error")
    submit.add_argument("--queue")
    submit.add_argument("--payload", help="JSON, or plain text pushed as is")
    submit.add_argument("--id")
    submit.add_argument("--error-type")
    submit.add_argument("--status-code", type=int)
    submit.add_argument("--retry-after", type=float, metavar="SECONDS")
    submit.add_argument("--attempt", type=int)
    submit.add_argument(
        "--ok", metavar="ID", help="report instead that task ID succeeded"
    )

    classify = command(
        "classify", _classify, "classify an error text, or JSON Lines on stdin"
    )
    classify.add_argument(
        "text", help="the error text, or - for JSON Lines records on stdin"
    )
    classify.add_argument("--error-type")
    classify.add_argument("--status-code", type=int)

    status = command(
        "status", _status, "counts of waiting, in flight, scheduled, dead, invalid"
    )
    status.add_argument(
        "--task", metavar="ID", help="show what Redis holds of one task instead"
    )

    retry = command("retry", _retry, "make a task due now, ahead of everything else")
    retry.add_argument("id", nargs="?", help="the task's id")
    retry.add_argument(
        "--dead", action="store_true", help="all dead tasks (with filters)"
    )
    retry.add_argument("--category", help="with --dead: only this category")
    retry.add_argument(
        "--task", help="with --dead: only tasks of this name (* matches any run)"
    )
    retry.add_argument(
        "--since",
        help='with --dead: only tasks dead since then: "2h" ago, or an RFC 3339 time',
    )
    retry.add_argument(
        "--rate",
        type=float,
        help="with --dead: retries per second (default: [manual] rate; 0: no limit)",
    )
    _upkeep_commands(command)

    command("check-config", _check_config, "validate a config file")

    inbox = command("inbox", _inbox, "show a user's in-app notifications, newest first")
    inbox.add_argument("user_id", metavar="USER_ID")
    inbox.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    return parser


def _config(args: argparse.Namespace) -> tuple[Config, str | None]:
    path = args.config or os.environ.get("RECOVERYD_CONFIG")
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return load_config(path), path


def _client(config: Config) -> tuple[redis.Redis, Keys]:
    url = _url(config)
    return redis.Redis.from_url(url, socket_connect_timeout=5), Keys(
        config.redis.prefix
    )


def _url(config: Config) -> str:
    url = config.redis.url or embedded_url(config.state_dir)
    if url is None:
        raise NoRedis(
            f"no [redis] url is configured and no embedded redis is running under "
            f"{config.state_dir}; start `recoveryd run` first"
        )
    return url


def _print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _run(args: argparse.Namespace) -> int:
    from recoveryd.daemon import run_daemon

    config, path = _config(args)
    logs.setup(
        json_lines=args.json or config.log.format == "json", level=config.log.level
    )
    _check_state_dir(_state_target(config), path)
    run_daemon(config, path)
    return 0


def _check_state_dir(state_dir: Path, path: str | None) -> None:
    """Make ``state_dir``, or fail naming the key and its line."""
    key = "paths.state_dir"
    reason = _state_dir_problem(state_dir)
    if reason is None:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = f"cannot create {state_dir}: {exc.strerror}"
    if reason is not None:
        raise ConfigError(reason, key=key, line=key_line(path, key))


def _state_target(config: Config) -> Path:
    """Where the daemon writes: state_dir, or with the embedded Redis, its
    data folder inside it."""
    return config.state_dir if config.redis.url else config.state_dir / "redis"


def _state_dir_problem(state_dir: Path) -> str | None:
    """Why the daemon could not make and use ``state_dir``, found by trying.

    The directories made to find out are removed again.
    """
    missing = []
    there = state_dir
    while not os.path.lexists(there) and there != there.parent:
        missing.append(there)
        there = there.parent
    made: list[Path] = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            made.append(directory)
        if not state_dir.is_dir():
            return f"cannot use {state_dir}: not a directory"
        if not os.access(state_dir, os.W_OK | os.X_OK):
            return f"cannot write to {state_dir}"
        return None
    except OSError as exc:
        return f"cannot create {state_dir}: {exc.strerror}"
    except ValueError as exc:  # a NUL in the path
        return f"cannot create {str(state_dir)!r}: {exc}"
    finally:
        for directory in reversed(made):
            directory.rmdir()


def _submit(args: argparse.Namespace) -> int:
    config, _ = _config(args)
    if args.ok is not None:
        return _submit_ok(args, config)
    if args.task is None and args.error is None:
        raw = sys.stdin.buffer.read().strip()
    else:
        raw = _record_from_flags(args)
    checked = decode_record(raw, config.intake.max_record_size)
    if isinstance(checked, InvalidRecord):
        raise UsageError(f"not a failure record: {checked.reason}")

    raw = _with_id(raw, checked.task_id)
    client, keys = _client(config)
    client.lpush(keys.failures, raw)
    if args.json:
        _print_json({"id": checked.task_id, "list": keys.failures})
    else:
        print(f"submitted {checked.task_id} to {keys.failures}")
    return 0


def _record_from_flags(args: argparse.Namespace) -> bytes:
    if args.task is None or args.error is None:
        raise UsageError(
            "--task and --error are both needed (or a JSON record on stdin)"
        )
    record: dict[str, Any] = {"task": args.task, "error": args.error}
    if args.payload is not None:
        try:
            msgspec.json.decode(args.payload)
        except msgspec.DecodeError:
            record["payload"] = args.payload
        else:
            # JSON goes in as it was written: the retry pushes this text.
            record["payload"] = msgspec.Raw(args.payload.strip().encode())
    for name in ("queue", "id", "error_type", "status_code", "retry_after", "attempt"):
        value = getattr(args, name)
        if value is not None:
            record[name] = value
    return msgspec.json.encode(record)


def _with_id(raw: bytes, task_id: str) -> bytes:
    """The record with the id it was given, so `submit` can print it."""
    # Each value is kept as its JSON text, so the payload's stays as written.
    data = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    if "id" in data and msgspec.json.decode(data["id"]) == task_id:
        return raw
    data["id"] = msgspec.Raw(msgspec.json.encode(task_id))
    return msgspec.json.encode(data)


def _classify(args: argparse.Namespace) -> int:
    config, _ = _config(args)
    classifier = Classifier.from_config(config)
    if args.text == "-":
        return _classify_stream(classifier, config.intake.max_record_size)
    record = FailureRecord(
        task="-",
        error=args.text,
        error_type=args.error_type,
        status_code=args.status_code,
    )
    result = classifier.classify(record)
    if args.json:
        _print_json(result)
    else:
        print(
            f"{result.category}  action={result.action}  "
            f"confidence={result.confidence:.2f}  pattern={result.pattern}"
        )
    return 0


def _classify_stream(classifier: Classifier, max_size: int) -> int:
    out = sys.stdout
    encode = msgspec.json.encode
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        item = decode_record(line.rstrip(b"\r\n"), max_size)
        if isinstance(item, InvalidRecord):
            out.write(encode({"error": item.reason}).decode() + "\n")
        else:
            out.write(encode(classifier.classify(item)).decode() + "\n")
    out.flush()
    return 0


def _status(args: argparse.Namespace) -> int:
    from recoveryd.status import read_status, render_status

    config, _ = _config(args)
    client, keys = _client(config)
    if args.task is not None:
        return _task_status(client, keys, args.task, as_json=args.json)
    status = read_status(client, keys, config)
    if args.json:
        _print_json(status)
    else:
        print(render_status(status))
    return 0


def _task_status(client: Any, keys: Any, task_id: str, *, as_json: bool) -> int:
    from recoveryd import tasks

    wanted = tasks.ALL_FIELDS
    [found] = client.eval(
        tasks.READ, 2, keys.tasks, keys.names, *tasks.fields_args(wanted, [task_id])
    )
    if found is None:
        print(f"{task_id}: no such task", file=sys.stderr)
        return EXIT_NOT_DONE
    if isinstance(found, bytes):
        print(
            f"{task_id}: cannot be read: {found.decode(errors='replace')}",
            file=sys.stderr,
        )
        return EXIT_NOT_DONE
    fields = {
        name: value.decode(errors="replace")
        for name, value in zip(wanted, found, strict=True)
        if value is not None
    }
    due_ms = client.zscore(keys.retry, task_id)
    if due_ms is not None:
        seconds, micros = client.time()
        now_ms = seconds * 1000 + micros // 1000
        fields["due_at"] = f"{due_ms:.0f}"
        fields["due_in_s"] = f"{max(due_ms - now_ms, 0) / 1000:.1f}"
    if as_json:
        _print_json({"id": task_id, **fields})
    else:
        width = max(map(len, fields))
        for name, value in fields.items():
            # A record's text may hold anything; a terminal gets it escaped.
            print(f"{name:<{width}}  {logs.escape(value)}")
    return 0


def _retry(args: argparse.Namespace) -> int:
    from recoveryd.manual import retry_dead, retry_task

    config, _ = _config(args)
    if args.id is None and not args.dead:
        raise UsageError("name a task id, or --dead for all dead tasks")
    if args.id is not None and args.dead:
        raise UsageError("give a task id or --dead, not both")
    filters = ("category", "task", "since", "rate")
    used = [f"--{name}" for name in filters if getattr(args, name) is not None]
    if used and not args.dead:
        verb = "goes" if len(used) == 1 else "go"
        raise UsageError(f"{' and '.join(used)} {verb} with --dead")
    if args.rate is not None and args.rate < 0:
        raise UsageError("--rate cannot be negative (0: no limit)")
    client, keys = _client(config)
    if args.id is not None:
        retried = retry_task(client, keys, args.id)
        if args.json:
            _print_json({"id": args.id, "result": retried.message})
        else:
            print(f"{args.id}: {retried.message}")
        return 0 if retried.due else EXIT_NOT_DONE
    rate = config.manual.rate if args.rate is None else args.rate
    count = retry_dead(
        client,
        keys,
        category=args.category,
        task=args.task,
        since_ms=_since_ms(client, args.since),
        rate=rate or None,
        progress=None if args.json else _ProgressBar("requeue"),
    )
    if args.json:
        _print_json({"requeued": count})
    else:
        print(f"requeued {count} dead task(s)")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from recoveryd.notifiers.secrets import missing_secrets

    config, path = _config(args)
    # A channel that is on but cannot log in fails every delivery.
    problems = [(p.key, p.reason) for p in missing_secrets(config)]
    if reason := _state_dir_problem(_state_target(config)):
        problems.append(("paths.state_dir", reason))
    if problems:
        key, reason = problems[0]
        raise ConfigError(reason, key=key, line=key_line(path, key))
    if args.json:
        _print_json({"ok": True, "path": path, "categories": sorted(config.categories)})
    else:
        where = path or "built-in defaults"
        print(
            f"ok: {where} ({len(config.categories)} categories, "
            f"{len(config.patterns)} operator patterns)"
        )
    return 0


def _inbox(args: argparse.Namespace) -> int:
    from recoveryd.notifiers.inbox import read_inbox

    config, _ = _config(args)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    client, keys = _client(config)
    entries = read_inbox(client, keys, args.user_id, args.limit)
    if args.json:
        _print_json(entries)
        return 0
    if not entries:
        print(f"the inbox of {args.user_id} is empty")
    for entry in entries:
        count = entry.get("count", 1)
        times = f"  (×{count})" if count > 1 else ""
        print(
            f"{entry.get('created_at', '')}  {entry.get('severity', ''):<8} "
            f"{entry.get('title', '')}{times}  [{entry.get('task_id', '')}]"
        )
    return 0


# Issue 4: success reports, retry filters, scan, analyze, pause, resume,
# silence. The work is done in recoveryd.manual, .jobs and .pause.


def _upkeep_commands(command: Callable[..., Any]) -> None:
    command("scan", _scan, "run the scan now: find unhandled failures, handle them")
    command("analyze", _analyze, "run the failure analysis now")
    pause = command("pause", _pause, "hold the retries of a category or a task")
    pause.add_argument("matcher", metavar="MATCHER", help="category:NAME or task:NAME")
    pause.add_argument("--reason", default="", help="shown by `status`")
    resume = command("resume", _resume, "lift a pause; held retries go out paced")
    resume.add_argument("matcher", metavar="MATCHER", help="category:NAME or task:NAME")
    resume.add_argument(
        "--rate", type=float, help="held retries per second (default: [manual] rate)"
    )
    silence = command("silence", _silence, "quiet the notifications a matcher names")
    silence.add_argument(
        "matcher",
        metavar="MATCHER",
        help="category:, task:, pattern: or type: and a name (* matches any run)",
    )
    silence.add_argument("--for", dest="duration", help='how long, e.g. "2h"')
    silence.add_argument("--reason", default="", help="shown by `status`")
    silence.add_argument("--off", action="store_true", help="lift the silence now")


def _submit_ok(args: argparse.Namespace, config: Config) -> int:
    if args.error is not None:
        raise UsageError("--ok reports a success; it takes no --error")
    if not args.ok.strip():
        raise UsageError("--ok needs the task's id")
    report: dict[str, Any] = {"id": args.ok, "ok": True}
    if args.task is not None:
        report["task"] = args.task
    client, keys = _client(config)
    client.lpush(keys.failures, msgspec.json.encode(report))
    if args.json:
        _print_json({"id": args.ok, "ok": True, "list": keys.failures})
    else:
        print(f"reported that {args.ok} succeeded, on {keys.failures}")
    return 0


def _since_ms(client: redis.Redis, since: str | None) -> int | None:
    """Epoch ms from "2h" (that long ago) or an RFC 3339 time."""
    from recoveryd.config import parse_duration
    from recoveryd.connection import time_ms_sync
    from recoveryd.records import parse_failed_at

    if since is None:
        return None
    try:
        return time_ms_sync(client) - round(parse_duration(since) * 1000)
    except ValueError:
        pass
    try:
        return round(parse_failed_at(since) * 1000)
    except ValueError:
        raise UsageError(
            f'--since: expected a duration like "2h" or an RFC 3339 time, got {since!r}'
        ) from None


class _ProgressBar:
    """A bar on stderr when it is a terminal; nothing otherwise."""

    WIDTH = 30

    def __init__(self, label: str) -> None:
        self.label = label
        self.on = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.on or total == 0:
            return
        filled = self.WIDTH * done // total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{total}{end}")
        sys.stderr.flush()


def _scan(args: argparse.Namespace) -> int:
    return _run_job(args, "scan")


def _analyze(args: argparse.Namespace) -> int:
    return _run_job(args, "analyze")


def _run_job(args: argparse.Namespace, name: str) -> int:
    from recoveryd.jobs import JobBusy, run_once

    config, _ = _config(args)
    try:
        result = run_once(_url(config), config, name)
    except JobBusy as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _print_json(result)
    else:
        print(result.summary)
        print(f"report: {result.report}")
    return EXIT_NOT_DONE if result.summary.startswith("failed:") else 0


def _matcher(text: str, config: Config, *, silence: bool = False) -> str:
    from recoveryd.pause import PAUSE_KINDS, SILENCE_KINDS, PauseError, parse_matcher

    kinds = SILENCE_KINDS if silence else PAUSE_KINDS
    try:
        return parse_matcher(text, kinds, config.categories)
    except PauseError as exc:
        raise UsageError(str(exc)) from None


def _pause(args: argparse.Namespace) -> int:
    from recoveryd.pause import pause

    config, _ = _config(args)
    matcher = _matcher(args.matcher, config)
    client, keys = _client(config)
    added = pause(client, keys, matcher, args.reason)
    if args.json:
        _print_json({"paused": matcher, "new": added})
    elif added:
        print(f"paused {matcher}: its due retries are held until it is resumed")
    else:
        print(f"{matcher} was paused already")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from recoveryd.pause import PauseError, resume

    config, _ = _config(args)
    matcher = _matcher(args.matcher, config)
    rate = config.manual.rate if args.rate is None else args.rate
    client, keys = _client(config)
    try:
        released = resume(client, keys, matcher, rate=rate)
    except PauseError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _print_json(released)
        return 0
    text = f"resumed {matcher}: {released.released} held retries released"
    if released.released:
        text += f" at {rate:g}/s, over {released.released / rate:.1f}s"
    print(text)
    return 0


def _silence(args: argparse.Namespace) -> int:
    from recoveryd.config import parse_duration
    from recoveryd.notification import iso_utc
    from recoveryd.pause import PauseError, silence, unsilence

    config, _ = _config(args)
    matcher = _matcher(args.matcher, config, silence=True)
    if args.off == (args.duration is not None):
        raise UsageError("give --for DURATION (e.g. --for 2h), or --off")
    client, keys = _client(config)
    if args.off:
        lifted = unsilence(client, keys, matcher)
        print(f"{matcher}: " + ("silence lifted" if lifted else "was not silenced"))
        return 0
    try:
        item = silence(
            client,
            keys,
            matcher,
            for_s=parse_duration(args.duration),
            reason=args.reason,
        )
    except (ValueError, PauseError) as exc:
        raise UsageError(f"--for: {exc}") from None
    if args.json:
        _print_json(item)
    else:
        print(
            f"silenced {matcher} until {iso_utc(item.until_ms)}: matching "
            "notifications go to the alert log only"
        )
    return 0


def entry_point() -> NoReturn:
    sys.exit(main())
