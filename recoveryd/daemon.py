"""The daemon: one event loop, one task group, a handful of long-lived loops.

Intake, due-dispatch, notification delivery (one loop per channel), the wake
listener, the heartbeat and housekeeping all run under one anyio task group.
SIGTERM or SIGINT stops intake first (a batch being committed finishes),
returns whatever is still in flight to the failures list, then cancels the
rest; SIGHUP reloads the config file, keeping the old config if the new one
is bad.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import Redis
from redis.exceptions import RedisError

from recoveryd.config import Config, ConfigError, load_config
from recoveryd.connection import Link, connect, redact_url
from recoveryd.consumers import Consumers, new_consumer_id
from recoveryd.dispatch import DispatchLoop
from recoveryd.embedded import EmbeddedRedis
from recoveryd.housekeeping import Housekeeping
from recoveryd.intake import Intake
from recoveryd.notifiers import Channel
from recoveryd.notifiers.alert_log import AlertLog
from recoveryd.notify import DeliveryLoop
from recoveryd.runtime import Runtime
from recoveryd.scripts import Scripts
from recoveryd.wake import Wakeup

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0


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
        self.wakeup = Wakeup(self.redis, keys.wake, self.link)
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
        )
        self.housekeeping = Housekeeping(
            self.redis, self.scripts, lambda: self.runtime, self.link
        )
        self._intake_scope = anyio.CancelScope()
        self._intake_stopped = anyio.Event()

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT; returns once everything has stopped."""
        await self._connect()
        self._open_channels()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_signals, tg)
                self._start_loops(tg)
                self.ready.set()
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
                await self.consumers.beat()
                self.link.ok("startup")
                return
            except (RedisError, OSError) as exc:
                await self.link.wait_out(exc, "startup")

    def _open_channels(self) -> None:
        alert_log = AlertLog(self.runtime.config.state_dir)
        self.channels = {alert_log.name: alert_log}

    def _start_loops(self, tg: TaskGroup) -> None:
        tg.start_soon(self.wakeup.run, name="wake")
        tg.start_soon(self.consumers.run, name="heartbeat")
        tg.start_soon(self.dispatcher.run, name="dispatch")
        tg.start_soon(self.housekeeping.run, name="housekeeping")
        tg.start_soon(self._run_intake, name="intake")
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
                max_attempts=settings.max_attempts,
                timeout_s=30.0,
                fallback=alert_log,
            )
            tg.start_soon(loop.run, name=f"deliver:{channel.name}")

    async def _run_intake(self) -> None:
        try:
            with self._intake_scope:
                await self.intake.run()
        finally:
            self._intake_stopped.set()

    async def _watch_signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(
            signal.SIGTERM, signal.SIGINT, signal.SIGHUP
        ) as signals:
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
        with anyio.move_on_after(STOP_GRACE_S) as grace:
            await self._intake_stopped.wait()
        if grace.cancelled_caught:
            log.warning("intake did not finish its batch within %gs", STOP_GRACE_S)
        tg.cancel_scope.cancel()

    def reload(self) -> None:
        """Re-read the config file; a bad file keeps the running config."""
        if self.config_path is None:
            log.info("SIGHUP: no config file to reload")
            return
        try:
            config = load_config(self.config_path)
            runtime = Runtime.from_config(config)
        except ConfigError as exc:
            log.error("config not reloaded, keeping the running one: %s", exc)
            return
        self.runtime = runtime
        log.info("config reloaded from %s", self.config_path)

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
        log.info("recoveryd stopped")


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
    await daemon.serve()
