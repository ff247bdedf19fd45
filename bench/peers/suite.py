"""Run every peer's rows and gather them with the versions that produced them."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.peers.arq_bench import ArqPeer
from bench.peers.common import FULL, TINY, Row, Sizes
from bench.peers.redis_server import redis_server_binary, server_version
from bench.peers.rq_bench import RqPeer
from bench.peers.scenarios import Peer, measure_peer

__all__ = ["PEERS", "run_peers", "run_report", "versions"]

PEERS: dict[str, Peer] = {"arq": ArqPeer(), "rq": RqPeer()}

NOTES = [
    "dispatch: N jobs due at one whole second; rate = jobs started / seconds "
    "from due until all started, or until dispatch_cap_s (capped: true)",
    "lateness: job start - due; jobs never started count at the time waited",
    "idle commands: every command Redis executed (commandstats), including "
    "MULTI/EXEC and commands run inside Lua scripts, less the harness's INFO",
    "idle CPU: worker process and its children (RQ's scheduler), % of one core",
    "every job carries, besides due_s, a payload as recoveryd's records do "
    "(bench.workload.payload, seeded, ~113 bytes as JSON); the job ignores it",
    "bytes_per_pending: used_memory delta / K jobs with that payload; "
    "bytes_per_pending_bare: the same for K bare jobs (due_s alone); "
    "each measured once per peer, no worker",
]


def run_peers(
    tiny: bool, only: str | None = None, sizes: Sizes | None = None
) -> list[dict[str, Any]]:
    """One row per peer and setting (and RQ worker class), as plain dicts."""
    chosen = sizes or (TINY if tiny else FULL)
    names = [only] if only else list(PEERS)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-logs-") as log_dir:
        for name in names:
            rows += measure_peer(PEERS[name], chosen, Path(log_dir))
    return [dict(row) for row in rows]


def run_report(tiny: bool, only: str | None = None) -> dict[str, Any]:
    """``run_peers`` plus what a reader needs to trust the rows: versions, sizes."""
    sizes = TINY if tiny else FULL
    started = time.monotonic()
    rows = run_peers(tiny, only, sizes)
    return {
        "mode": "tiny" if tiny else "full",
        "versions": versions(),
        "cpus": os.cpu_count(),
        "sizes": asdict(sizes),
        "wall_s": round(time.monotonic() - started, 1),
        "notes": NOTES,
        "rows": rows,
    }


def versions() -> dict[str, str]:
    binary = redis_server_binary()
    return {
        **{name: peer.version() for name, peer in PEERS.items()},
        "redis-py": version("redis"),
        "redis-server": server_version(binary),
        "redis-server-path": binary,
    }
