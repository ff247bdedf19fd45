"""The lateness run's worker: takes payloads off their queues, notes when.

Run as ``python -m bench.consumer --port P --count N --until S --out FILE
QUEUE...``. It stands in for the application's worker: one BRPOP loop over
every queue, each arrival stamped on this process's clock and carried over
to Redis's with an offset measured against ``TIME``. It prints ``ready``
once it is waiting, and writes ``{"offset_ms", "rtt_ms", "arrivals"}`` as
JSON when N payloads have come or the deadline (epoch seconds) passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import cast

import redis

from bench.probe import Clock

BLOCK_S = 0.5


def consume(
    client: redis.Redis, queues: list[str], count: int, until_s: float
) -> list[tuple[str, float]]:
    """(payload, arrival on the local clock, s) for up to ``count`` payloads."""
    arrivals: list[tuple[str, float]] = []
    while len(arrivals) < count and time.time() < until_s:
        # redis-py types the timeout as int; Redis 6 and later take fractions.
        reply = client.brpop(queues, timeout=cast(int, BLOCK_S))
        stamp = time.time()
        if reply is not None:
            _, payload = cast(tuple[bytes, bytes], reply)
            arrivals.append((payload.decode(), stamp))
    return arrivals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.consumer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--until", type=float, required=True, help="epoch seconds")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("queues", nargs="+")
    args = parser.parse_args(argv)

    client = redis.Redis(host="127.0.0.1", port=args.port)
    clock = Clock(client)
    print("ready", flush=True)
    arrivals = consume(client, args.queues, args.count, args.until)
    result = {
        "offset_ms": clock.offset_ms,
        "rtt_ms": clock.rtt_ms,
        "arrivals": [[payload, clock.to_redis_ms(at)] for payload, at in arrivals],
    }
    args.out.write_text(json.dumps(result))
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
