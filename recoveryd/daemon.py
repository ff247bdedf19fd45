"""The daemon: one event loop, one task group, a handful of long-lived loops.

Intake, due-dispatch, notification delivery (one loop per channel), the wake
listener, the heartbeat and housekeeping all run under one anyio task group.
SIGTERM or SIGINT stops intake first (a batch being committed finishes),
returns whatever is still in flight to the failures list, then cancels the
rest; SIGHUP reloads the config file, keeping the old config if the new one
is bad.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import msgspec
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskGroup, TaskStatus
from redis.asyncio import Redis
from redis.exceptions import RedisError

from recoveryd.config import Config, ConfigError, file_key, load_config
from recoveryd.connection import REDIS_AWAY, Link, connect, redact_url, time_ms
from recoveryd.consumers import Consumers, new_consumer_id
from recoveryd.dispatch import DispatchLoop
from recoveryd.embedded import EmbeddedRedis
from recoveryd.housekeeping import Housekeeping
from recoveryd.intake import Intake
from recoveryd.jobs import Context, JobBusy, JobRunner, upkeep_jobs
from recoveryd.metrics import METRICS
from recoveryd.migrate import move_legacy_tasks
from recoveryd.notifiers import Channel
from recoveryd.notify import DeliveryLoop, GroupFlusher, limits_for, open_channels
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts
from recoveryd.systemd import SystemdNotifier
from recoveryd.wake import Wakeup

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger(__name__)

# Tasks moved from an earlier version's keys between progress lines.
MOVE_LOG_EVERY = 50_000

STOP_GRACE_S = 10.0
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0


@dataclass
class Daemon:
    """One running recoveryd: its Redis client, its loops and its config."""

    runtime: Runtime
    redis: Redis
    url: str
    config_path: str | None = None
    consumer: str = field(default_factory=new_consumer_id)
    link: Link = field(default_factory=Link)
    channels: dict[str, Channel] = field(default_factory=dict)
    ready: anyio.Event = field(default_factory=anyio.Event)

    def __post_init__(self) -> None:
        keys = self.runtime.keys
        self.scripts = Scripts(self.redis)
        # Pub/Sub waits for messages without a reply timeout: a client of its own.
        self.listener = connect(self.url, read_timeout_s=None)
        self.wakeup = Wakeup(self.listener, keys.wake, self.link)
        self.consumers = Consumers(
            self.redis, self.scripts, keys, self.consumer, self.link
        )
        self.intake = Intake(
            self.redis,
            self.scripts,
            self.consumer,
            lambda: self.runtime,
            self.link,
            self.wakeup.alarm("retry"),
            lambda: set(self.channels),
        )
        self.dispatcher = DispatchLoop(
            self.redis,
            self.scripts,
            keys,
            self.wakeup.alarm("retry"),
            self.link,
            batch=self.runtime.config.retry.dispatch_batch,
            on_dead=self._scan_soon,
        )
        self._scan_wanted = anyio.Event()
        self.housekeeping = Housekeeping(
            self.redis, self.scripts, lambda: self.runtime, self.link
        )
        self._intake_scope = anyio.CancelScope()
        self._intake_stopped = anyio.Event()
        self.systemd = SystemdNotifier()
        self._move_logged = 0
        self._channels_scope = anyio.CancelScope()
        # Set by a reload that changes [notify]; the channels loop rebuilds.
        self._channels_stale = False

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT; returns once everything has stopped."""
        try:
            async with anyio.create_task_group() as tg:
                # Signals first: a SIGHUP or SIGTERM that arrives while Redis
                # is still awaited is handled, not fatal by default action.
                await tg.start(self._watch_signals, tg)
                await self._connect()
                self._open_channels()
                self._serve_metrics()
                self._start_loops(tg)
                tg.start_soon(self.systemd.run, self.status_line, name="systemd")
                self.ready.set()
                self.systemd.notify("READY=1", f"STATUS={self.status_line()}")
                log.info(
                    "recoveryd is running as %s; applications LPUSH failure records "
                    "onto %s at %s",
                    self.consumer,
                    self.runtime.keys.failures,
                    redact_url(self.url),
                )
        finally:
            await self._close()

    async def _connect(self) -> None:
        """Wait for Redis, load the scripts and recover dead daemons' records."""
        while True:
            try:
                await self.scripts.load(self.redis)
                await move_legacy_tasks(
                    self.redis,
                    self.runtime.keys,
                    await time_ms(self.redis),
                    self.runtime.config.retry.task_ttl_ms,
                    self._moving,
                )
                await self.consumers.beat()
                self.link.ok("startup")
                return
            except REDIS_AWAY as exc:
                await self.link.wait_out(exc, "startup")

    def _moving(self, moved: int) -> None:
        """Progress of moving an earlier version's tasks, before READY."""
        if moved // MOVE_LOG_EVERY > self._move_logged:
            self._move_logged = moved // MOVE_LOG_EVERY
            log.info("moved %d tasks kept by an earlier version so far", moved)
        # Each chunk is quick; systemd's start timeout is given a minute more.
        self.systemd.notify(
            "EXTEND_TIMEOUT_USEC=60000000",
            f"STATUS=moving tasks kept by an earlier version: {moved} done",
        )

    def status_line(self) -> str:
        """One line for `systemctl status`: what has been done, and Redis's state."""
        problems = self.link.problems
        redis_state = "redis up"
        if problems:
            who, why = next(iter(problems.items()))
            redis_state = f"REDIS UNREACHABLE ({who}: {why})"
        return (
            f"{self.intake.processed} records taken, "
            f"{self.dispatcher.dispatched} retries dispatched; {redis_state}"
        )

    def _serve_metrics(self) -> None:
        listen = self.runtime.config.metrics.listen
        if listen is None:
            return
        try:
            METRICS.serve(listen, self.url, self.runtime.keys)
        except OSError as exc:
            log.error("metrics are off: cannot listen on %s: %s", listen, exc)

    def _open_channels(self) -> None:
        runtime = self.runtime
        self.channels = open_channels(runtime.config, self.redis, runtime.keys)

    def _start_loops(self, tg: TaskGroup) -> None:
        supervise(tg, "wake", self.wakeup.run)
        supervise(tg, "heartbeat", self.consumers.run)
        supervise(tg, "dispatch", self.dispatcher.run)
        supervise(tg, "housekeeping", self.housekeeping.run)
        jobs = self._job_runner()
        supervise(tg, "jobs", jobs.run)
        supervise(tg, "scan on demand", lambda: self._scan_on_demand(jobs))
        tg.start_soon(self._run_intake, name="intake")
        tg.start_soon(self._run_channels, name="channels")

    async def _run_channels(self) -> None:
        """The delivery loops; rebuilt whole when a reload changes ``[notify]``."""
        while True:
            if self._channels_stale:
                # Also when the reload came before this loop first ran.
                self._channels_stale = False
                with anyio.CancelScope(shield=True):
                    for channel in self.channels.values():
                        await channel.aclose()
                self._open_channels()
                log.info("channels now: %s", ", ".join(sorted(self.channels)))
            self._channels_scope = anyio.CancelScope()
            with self._channels_scope:
                async with anyio.create_task_group() as tg:
                    self._start_channel_loops(tg)
            # Only a reload cancels this scope; a stop cancels from outside
            # and never gets here.

    def _start_channel_loops(self, tg: TaskGroup) -> None:
        alert_log = self.channels["alert_log"]
        settings = self.runtime.config.notify
        for channel in self.channels.values():
            loop = DeliveryLoop(
                self.redis,
                self.scripts,
                self.runtime.keys,
                channel,
                self.wakeup.alarm(f"outbox:{channel.name}"),
                self.link,
                limits=limits_for(settings, channel.name),
                fallback=alert_log,
            )
            supervise(tg, f"deliver:{channel.name}", loop.run)
        flusher = GroupFlusher(
            self.redis,
            self.runtime.keys,
            self.wakeup.alarm("groups"),
            self.link,
            window_s=settings.group_window_s,
            repeat_s=settings.repeat_every_s,
        )
        supervise(tg, "groups", flusher.run)

    def _scan_soon(self) -> None:
        """Ask for a scan now: tasks died where their notice could not be queued."""
        self._scan_wanted.set()

    async def _scan_on_demand(self, jobs: JobRunner) -> None:
        while True:
            await self._scan_wanted.wait()
            self._scan_wanted = anyio.Event()
            try:
                await jobs.run_now("scan")
            except JobBusy:
                pass  # running elsewhere right now: that run finds them
            except REDIS_AWAY as exc:
                await self.link.wait_out(exc, "scan")
                self._scan_wanted.set()

    def _job_runner(self) -> JobRunner:
        """Scan, analysis, adaptive backoff: once per period across daemons."""
        context = Context(
            self.redis,
            self.scripts,
            lambda: self.runtime,
            self.consumer,
            lambda: set(self.channels),
        )
        return JobRunner(
            self.redis,
            self.scripts,
            lambda: self.runtime,
            self.consumer,
            upkeep_jobs(context),
            link=self.link,
        )

    async def _run_intake(self) -> None:
        try:
            with self._intake_scope:
                await restarting("intake", self.intake.run)
        finally:
            self._intake_stopped.set()

    async def _watch_signals(
        self, tg: TaskGroup, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(
            signal.SIGTERM, signal.SIGINT, signal.SIGHUP
        ) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload()
                    continue
                log.info("stopping on %s", signal.Signals(signum).name)
                await self.stop(tg)
                return

    async def stop(self, tg: TaskGroup) -> None:
        """Stop intake (letting a batch in commit finish), then everything else."""
        self._intake_scope.cancel()
        with anyio.move_on_after(STOP_GRACE_S if self.ready.is_set() else 0) as grace:
            await self._intake_stopped.wait()
        if grace.cancelled_caught and self.ready.is_set():
            log.warning(
                "intake did not finish its batch within %gs; its records stay in "
                "flight, to be taken again",
                STOP_GRACE_S,
            )
            self.intake.abandon()
        tg.cancel_scope.cancel()

    def reload(self) -> None:
        """Re-read the config file; a bad file keeps the running config."""
        if self.config_path is None:
            log.info("SIGHUP: no config file to reload")
            return
        self.systemd.notify("RELOADING=1")
        try:
            config = load_config(self.config_path)
            runtime = Runtime.from_config(config)
        except ConfigError as exc:
            log.error("config not reloaded, keeping the running one: %s", exc)
            return
        finally:
            self.systemd.notify("READY=1")
        if config.redis != self.runtime.config.redis:
            log.warning("[redis] changes take effect at the next start; kept the old")
            config.redis = self.runtime.config.redis
            runtime = Runtime.from_config(config)
        changed = changed_keys(self.runtime.config, config)
        channels_changed = (
            config.notify != self.runtime.config.notify
            or config.state_dir != self.runtime.config.state_dir
        )
        self.runtime = runtime
        if channels_changed:
            self._channels_stale = True
            self._channels_scope.cancel()
        else:
            # A log rotator sends SIGHUP after moving the alert logs away.
            for channel in self.channels.values():
                reopen = getattr(channel, "reopen", None)
                if reopen is not None:
                    reopen()
        log.info(
            "config reloaded from %s; changed: %s",
            self.config_path,
            ", ".join(changed) if changed else "nothing",
        )

    async def _close(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_GRACE_S):
            try:
                returned = await self.consumers.leave()
                if returned:
                    log.info(
                        "returned %d in-flight records to the failures list", returned
                    )
            except (RedisError, OSError) as exc:
                log.warning(
                    "could not return in-flight records (%s); the next start will", exc
                )
            for channel in self.channels.values():
                await channel.aclose()
            await self.redis.aclose()
            await self.listener.aclose()
        self.systemd.notify("STOPPING=1")
        self.systemd.close()
        log.info("recoveryd stopped")


def supervise(tg: TaskGroup, name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Start a long-lived loop in ``tg`` that survives its own bugs."""
    tg.start_soon(restarting, name, loop, name=name)


async def restarting(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run ``loop``; if it fails, log the bug, back off and run it again."""
    delay_s = RESTART_MIN_S
    while True:
        started = anyio.current_time()
        try:
            await loop()
            return
        except Exception:
            log.exception("the %s loop failed; restarting it in %gs", name, delay_s)
        await anyio.sleep(delay_s)
        if anyio.current_time() - started > RESTART_MAX_S:
            delay_s = RESTART_MIN_S
        else:
            delay_s = min(delay_s * 2, RESTART_MAX_S)


def changed_keys(old: Config, new: Config) -> list[str]:
    """What a reload changed, as config keys (never their values)."""
    changed: list[str] = []
    for name in sorted(old.categories.keys() | new.categories.keys()):
        if name not in new.categories:
            changed.append(f"categories.{name} (removed)")
        elif name not in old.categories:
            changed.append(f"categories.{name} (added)")
    whole = {c.partition(" ")[0] for c in changed}
    before = _flatten(msgspec.to_builtins(old))
    after = _flatten(msgspec.to_builtins(new))
    for key in sorted(before.keys() | after.keys()):
        section = ".".join(key.split(".")[:2])
        if before.get(key) != after.get(key) and section not in whole:
            changed.append(file_key(key))
    return changed


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, object] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat


def resolve_redis(config: Config) -> tuple[str, EmbeddedRedis | None]:
    """The configured Redis, or a started embedded one when none is set."""
    if config.redis.url:
        return config.redis.url, None
    embedded = EmbeddedRedis(Path(config.paths.state_dir))
    url = embedded.start()
    return url, embedded


def run_daemon(config: Config, config_path: str | None) -> None:
    """Run the daemon in the foreground until it is told to stop."""
    url, embedded = resolve_redis(config)
    if embedded is not None:
        log.info("embedded redis at %s (data in %s)", url, embedded.dir)
    try:
        anyio.run(
            _serve,
            config,
            config_path,
            url,
            backend="asyncio",
            backend_options={"use_uvloop": True},
        )
    finally:
        if embedded is not None:
            embedded.stop()


async def _serve(config: Config, config_path: str | None, url: str) -> None:
    daemon = Daemon(
        Runtime.from_config(config), connect(url), url, config_path=config_path
    )
    # What start-up built (the classifier, the config, modules) lives as
    # long as the daemon: kept out of the collector's way, it is not scanned
    # again at every full collection, which under load are frequent.
    gc.collect()
    gc.freeze()
    await daemon.serve()
