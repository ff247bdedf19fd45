"""The benchmark's failure records: a realistic mix, made up here, seeded.

Each record is what an application's worker would LPUSH: a task name, an
id, the queue and payload to retry with, an error message of the kind real
libraries write, often an exception type and a short traceback, sometimes
an HTTP status or a retry-after hint. The mix leans on network and
temporary failures, as production traffic does, and carries a few repeats
(the same task failing again) and a few records that are not records at
all. Big error texts for the classification rows are made here too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = [
    "MIX",
    "RETRYABLE",
    "Family",
    "RecordMaker",
    "big_error",
    "payload",
    "queue_names",
]

QUEUES = ("emails", "webhooks", "shipping", "billing", "exports", "search")
TASKS = {
    "emails": ("emails.send_receipt", "emails.send_digest"),
    "webhooks": ("webhooks.deliver", "webhooks.retry_hook"),
    "shipping": ("shipping.track_parcel", "shipping.book_courier"),
    "billing": ("billing.charge_card", "billing.sync_invoice"),
    "exports": ("exports.build_csv", "exports.upload_report"),
    "search": ("search.reindex_product", "search.refresh_facets"),
}
HOSTS = ("api.carrier.example", "db-primary.internal", "hooks.partner.example")

Fill = Callable[[random.Random], str]


@dataclass(frozen=True, slots=True)
class Family:
    """One kind of failure: what a library says, and how often it is seen."""

    name: str
    weight: int
    error_type: str
    message: Fill
    status_code: int | None = None
    retry_after_s: float | None = None


def _host(rng: random.Random) -> str:
    return rng.choice(HOSTS)


def _n(rng: random.Random) -> int:
    return rng.randrange(1, 10_000_000)


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(48):012x}"


# Messages as the libraries word them; fill-ins vary so no two are alike.
MIX: tuple[Family, ...] = (
    Family(
        "network.connect_timeout",
        14,
        "requests.exceptions.ConnectTimeout",
        lambda r: (
            f"HTTPSConnectionPool(host='{_host(r)}', port=443): Max retries "
            f"exceeded with url: /v2/parcels/{_n(r)}/events (Caused by "
            f"ConnectTimeoutError(<urllib3.connection.HTTPSConnection object at "
            f"0x7f{_hex(r)}>, 'Connection to {_host(r)} timed out. (connect "
            "timeout=10)'))"
        ),
    ),
    Family(
        "network.refused",
        8,
        "ConnectionRefusedError",
        lambda r: (
            f"[Errno 111] Connect call failed ('10.0.{r.randrange(255)}.7', 5432)"
        ),
    ),
    Family(
        "network.dns",
        4,
        "socket.gaierror",
        lambda r: f"[Errno -3] Temporary failure in name resolution: '{_host(r)}'",
    ),
    Family(
        "network.node_reset",
        5,
        "Error",
        lambda r: (
            f"Error: read ECONNRESET\n    at TCP.onStreamRead "
            f"(node:internal/stream_base_commons:217:20) request id {_hex(r)}"
        ),
    ),
    Family(
        "network.gateway",
        4,
        "httpx.HTTPStatusError",
        lambda r: (
            f"Server error '504 Gateway Timeout' for url "
            f"'https://{_host(r)}/v1/hooks/{_n(r)}'"
        ),
        status_code=504,
    ),
    Family(
        "temporary.unavailable",
        6,
        "httpx.HTTPStatusError",
        lambda r: (
            f"Server error '503 Service Unavailable' for url "
            f"'https://{_host(r)}/v1/charges/{_n(r)}'"
        ),
        status_code=503,
    ),
    Family(
        "temporary.deadlock",
        4,
        "psycopg2.errors.DeadlockDetected",
        lambda r: (
            f"deadlock detected\nDETAIL:  Process {_n(r)} waits for ShareLock on "
            f"transaction {_n(r)}; blocked by process {_n(r)}."
        ),
    ),
    Family(
        "temporary.redis_loading",
        2,
        "redis.exceptions.BusyLoadingError",
        lambda r: "LOADING Redis is loading the dataset in memory",
    ),
    Family(
        "rate.http_429",
        6,
        "httpx.HTTPStatusError",
        lambda r: (
            f"Client error '429 Too Many Requests' for url "
            f"'https://{_host(r)}/v1/send': rate limit exceeded, retry in 30s"
        ),
        status_code=429,
        retry_after_s=30.0,
    ),
    Family(
        "rate.aws_throttling",
        3,
        "botocore.exceptions.ClientError",
        lambda r: (
            "An error occurred (ThrottlingException) when calling the "
            "PutRecord operation (reached max retries: 4): Rate exceeded"
        ),
    ),
    Family(
        "system.disk",
        2,
        "OSError",
        lambda r: f"[Errno 28] No space left on device: '/var/tmp/export-{_n(r)}.csv'",
    ),
    Family(
        "system.memory",
        2,
        "MemoryError",
        lambda r: f"Unable to allocate {r.randrange(2, 9)}.1 GiB for an array",
    ),
    Family(
        "data.json",
        6,
        "json.decoder.JSONDecodeError",
        lambda r: f"Expecting ',' delimiter: line 1 column {_n(r) % 900} (char 0)",
    ),
    Family(
        "data.unique",
        4,
        "psycopg2.errors.UniqueViolation",
        lambda r: (
            'duplicate key value violates unique constraint "orders_pkey"\n'
            f"DETAIL:  Key (id)=({_n(r)}) already exists."
        ),
    ),
    Family(
        "data.validation",
        4,
        "pydantic_core._pydantic_core.ValidationError",
        lambda r: (
            "1 validation error for Shipment\nweight_kg\n  Input should be a "
            f"valid number [type=float_parsing, input_value='{_hex(r)}', "
            "input_type=str]"
        ),
    ),
    Family(
        "config.api_key",
        3,
        "stripe.error.AuthenticationError",
        lambda r: f"Invalid API Key provided: sk_live_****{_hex(r)[:4]}",
        status_code=401,
    ),
    Family(
        "config.tls",
        2,
        "ssl.SSLCertVerificationError",
        lambda r: (
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
            f"unable to get local issuer certificate ({_host(r)})"
        ),
    ),
    Family(
        "business.not_found",
        5,
        "carriers.TrackingError",
        lambda r: f"tracking number 1Z{_hex(r).upper()} not found at the courier",
        status_code=404,
    ),
    Family(
        "business.card",
        3,
        "stripe.error.CardError",
        lambda r: "Your card was declined. (decline_code: insufficient_funds)",
        status_code=402,
    ),
    Family(
        "unknown",
        4,
        "app.errors.JobError",
        lambda r: f"job {_hex(r)} gave up in step {r.randrange(9)} (code 0x{_hex(r)})",
    ),
)

RETRYABLE = tuple(
    family
    for family in MIX
    if family.name.split(".")[0] in {"network", "temporary", "rate", "system"}
)

_TRACE_FRAMES = (
    ("/opt/app/worker/runner.py", 88, "run_job", "return await handler(job)"),
    ("/opt/app/tasks/{module}.py", 142, "handle", "result = await client.send(req)"),
    ("/opt/app/lib/client.py", 57, "send", "response.raise_for_status()"),
)


def queue_names(prefix: str = "app:queue") -> list[str]:
    """The application queues the workload's payloads go back to."""
    return [f"{prefix}:{name}" for name in QUEUES]


# A bare record's payload: one float, a due time as a peer's bare job holds.
BARE_PAYLOAD = 1_800_000_000.125


def payload(rng: random.Random, queue: str, n: int) -> dict[str, Any]:
    """A job's arguments, about a hundred bytes of JSON."""
    return {
        "job": n,
        "queue": queue,
        "args": [rng.randrange(1_000_000), f"ref-{_hex(rng)}"],
        "kwargs": {"priority": rng.choice(("low", "normal", "high")), "try": 1},
    }


def _traceback(module: str, final: str) -> str:
    lines = ["Traceback (most recent call last):"]
    for path, line, func, code in _TRACE_FRAMES:
        path = path.format(module=module)
        lines += [f'  File "{path}", line {line}, in {func}', f"    {code}"]
    return "\n".join([*lines, final, ""])


class RecordMaker:
    """Failure records as JSON bytes, from one seed, in a stable order.

    ``repeat_share`` of the records reuse the id of an earlier one (the same
    task failing again); ``invalid_share`` are not failure records at all.
    A ``bare`` record's payload is one float, as a peer's bare job carries.
    """

    def __init__(
        self,
        seed: int,
        families: tuple[Family, ...] = MIX,
        *,
        repeat_share: float = 0.0,
        invalid_share: float = 0.0,
        retry_after_s: float | None = None,
        bare: bool = False,
    ) -> None:
        self._rng = random.Random(seed)
        self._bare = bare
        self._families = families
        self._weights = [family.weight for family in families]
        self._repeat = repeat_share
        self._invalid = invalid_share
        self._retry_after_s = retry_after_s
        self._recent: list[str] = []
        self._encode = msgspec.json.Encoder().encode
        self.made = 0
        self.invalid = 0

    def batches(self, count: int, size: int) -> Iterator[list[bytes]]:
        """``count`` records in lists of at most ``size``."""
        while count > 0:
            take = min(size, count)
            yield [self.one() for _ in range(take)]
            count -= take

    def one(self) -> bytes:
        rng = self._rng
        self.made += 1
        if rng.random() < self._invalid:
            self.invalid += 1
            return self._not_a_record()
        family = rng.choices(self._families, self._weights)[0]
        return self._encode(self._record(family))

    def _record(self, family: Family) -> dict[str, Any]:
        rng = self._rng
        queue = rng.choice(QUEUES)
        message = family.message(rng)
        record: dict[str, Any] = {
            "task": rng.choice(TASKS[queue]),
            "id": self._task_id(),
            "queue": f"app:queue:{queue}",
            "payload": (
                BARE_PAYLOAD + self.made
                if self._bare
                else payload(rng, f"app:queue:{queue}", self.made)
            ),
            "error": message,
            "error_type": family.error_type,
        }
        if rng.random() < 0.5:
            final = f"{family.error_type}: {message.splitlines()[0]}"
            record["traceback"] = _traceback(queue, final)
        if family.status_code is not None:
            record["status_code"] = family.status_code
        retry_after_s = self._retry_after_s or family.retry_after_s
        if retry_after_s is not None:
            record["retry_after"] = retry_after_s
        if family.name.startswith("business"):
            record["user"] = {"id": rng.randrange(100_000), "email": "u@shop.example"}
        return record

    def _task_id(self) -> str:
        rng = self._rng
        if self._recent and rng.random() < self._repeat:
            return rng.choice(self._recent)
        task_id = f"{rng.getrandbits(128):032x}"
        if len(self._recent) < 10_000:
            self._recent.append(task_id)
        else:
            self._recent[rng.randrange(10_000)] = task_id
        return task_id

    def _not_a_record(self) -> bytes:
        if self._rng.random() < 0.5:
            return b'{"task": "emails.send_receipt", "error": "Connection res'
        return b'{"task": "emails.send_receipt", "queue": "app:queue:emails"}'


def big_error(size: int, *, matching: bool) -> str:
    """An error text of ``size`` bytes: a deep traceback, or a noisy log dump.

    ``matching`` ends it with a root cause the patterns know (the last line,
    as in a real traceback); otherwise nothing in it names a known failure,
    which makes every pattern read the whole text.
    """
    rng = random.Random(size)
    final = "ConnectionResetError: [Errno 104] Connection reset by peer\n"
    lines = ["Traceback (most recent call last):"] if matching else []
    used = sum(len(line) + 1 for line in lines) + len(final)
    while used < size:
        if matching:
            depth = rng.randrange(1000)
            line = (
                f'  File "/opt/app/lib/module_{depth}.py", line {depth + 10}, '
                f"in step_{depth}\n    value = step_{depth + 1}(value, "
                f"context={_hex(rng)})"
            )
        else:
            line = (
                f"2024-06-0{rng.randrange(1, 9)} worker[{rng.randrange(999)}] "
                f"item {_hex(rng)} stage={rng.randrange(64)} "
                f"bytes={rng.randrange(1 << 20)} checksum={_hex(rng)}{_hex(rng)}"
            )
        lines.append(line)
        used += len(line) + 1
    text = "\n".join(lines) + "\n" + (final if matching else "")
    return text[:size] if not matching else text[-size:]
