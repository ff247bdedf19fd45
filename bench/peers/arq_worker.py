"""arq's side of the benchmark: the job it runs and its worker entry point.

Run as ``python -m bench.peers.arq_worker --port P [--poll-delay-s S]``; it sets
up logging as arq's own CLI does and then runs arq's worker with its default
settings, apart from ``poll_delay`` when one is given.
"""

from __future__ import annotations

import argparse
import logging.config
import time
from typing import Any

from arq.connections import RedisSettings
from arq.logs import default_log_config
from arq.worker import run_worker

from bench.peers.common import STARTS_KEY, Payload, encode_start

__all__ = ["mark_start"]


async def mark_start(
    ctx: dict[str, Any], due_s: float, payload: Payload | None = None
) -> None:
    """The benchmark's job: note when it started against when it was due.

    ``payload`` is only carried (a bare job has none), never read.
    """
    start_s = time.time()
    await ctx["redis"].rpush(STARTS_KEY, encode_start(due_s, start_s))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.arq_worker")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--poll-delay-s", type=float)
    args = parser.parse_args(argv)

    settings: dict[str, Any] = {
        "functions": [mark_start],
        "redis_settings": RedisSettings(host="127.0.0.1", port=args.port),
    }
    if args.poll_delay_s is not None:
        settings["poll_delay"] = args.poll_delay_s
    logging.config.dictConfig(default_log_config(verbose=False))
    run_worker(settings)


if __name__ == "__main__":
    main()
