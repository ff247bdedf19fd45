"""``python -m bench``: recoveryd's benchmark and the peers', in one run.

Prints the results as Markdown (targets, details, classification, and every
figure as a ratio against arq and RQ) and writes them as JSON with
``--json OUT``. ``--tiny`` runs CI's sizes, well under a minute with
``--skip-peers``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.classify_bench import measure_classification
from bench.peers.redis_server import RedisServer, server_version
from bench.recoveryd_bench import FULL, TINY, RecoverydBench, Sizes
from bench.report import comparisons, render, target_rows

NO_PEERS = "bench.peers cannot be imported"
MEASUREMENTS = (
    "idle",
    "ingest",
    "ingest_live",
    "dispatch",
    "lateness",
    "memory",
    "memory_bare",
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = TINY if args.tiny else FULL
    started = time.monotonic()
    source = source_state()

    results, failed = run_recoveryd(args, sizes)
    peers, peers_error = run_peers(args)
    report = {
        "mode": "tiny" if args.tiny else "full",
        "machine": machine(),
        "versions": versions(),
        "source": source,
        "sizes": asdict(sizes),
        "recoveryd": results,
        "peers": peers,
        "peers_error": peers_error,
        "targets": target_rows(results),
        "comparisons": comparisons(results, peers),
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(render(report))
    print(f"mode {report['mode']}, wall {report['wall_s']} s")
    if args.json:
        args.json.write_text(json.dumps(_plain(report), indent=2) + "\n")
    # Peers that cannot be imported (arq or rq not installed) are only noted;
    # a peer measurement that broke fails the run like one of recoveryd's.
    peers_broke = peers_error is not None and not peers_error.startswith(NO_PEERS)
    return 1 if failed or peers_broke else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="CI sizes (~1%%)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write results here")
    parser.add_argument(
        "--only",
        action="append",
        choices=[*MEASUREMENTS, "classification"],
        help="run just these of recoveryd's measurements (repeatable)",
    )
    parser.add_argument("--skip-peers", action="store_true", help="no arq or RQ")
    parser.add_argument(
        "--peers-json",
        type=Path,
        metavar="FILE",
        help="take the peers' rows from an earlier `python -m bench.peers --json`",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the daemon with py-spy in each timed phase; write here",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep daemon logs and config here"
    )
    return parser


def run_recoveryd(
    args: argparse.Namespace, sizes: Sizes
) -> tuple[dict[str, Any], bool]:
    """recoveryd's measurements; one that fails is reported and skipped."""
    chosen = args.only or [*MEASUREMENTS, "classification"]
    results: dict[str, Any] = {}
    failed = False
    with _work_dir(args.keep) as work_dir, RedisServer() as server:
        bench = RecoverydBench(server, work_dir, sizes, args.profile)
        try:
            for name in MEASUREMENTS:
                if name in chosen:
                    failed |= _attempt(results, name, getattr(bench, name))
        finally:
            bench.close()
        results["profiles"] = {
            name: sampler.summary for name, sampler in bench.profiles.items()
        }
    if "classification" in chosen:
        failed |= _attempt(
            results,
            "classification",
            lambda: measure_classification(sizes.classify_min_s),
        )
    return results, failed


def _attempt(results: dict[str, Any], name: str, measure: Callable[[], Any]) -> bool:
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        results[name] = measure()
        if isinstance(results[name], dict):
            results[name]["loadavg_1m_before"] = load_before
    except Exception as exc:  # a broken measurement must not hide the others
        traceback.print_exc()
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return True
    print(
        f"bench: {name} done in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return False


class _work_dir:
    """A temp dir removed afterwards, or the ``--keep`` dir left in place."""

    def __init__(self, keep: Path | None) -> None:
        self._keep = keep
        self._temp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        if self._keep is not None:
            self._keep.mkdir(parents=True, exist_ok=True)
            return self._keep.resolve()
        self._temp = tempfile.TemporaryDirectory(prefix="recoveryd-bench-")
        return Path(self._temp.name)

    def __exit__(self, *exc: object) -> None:
        if self._temp is not None:
            self._temp.cleanup()


def run_peers(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str | None]:
    """arq's and RQ's rows, measured now, read from a file, or skipped."""
    if args.skip_peers:
        return [], None
    if args.peers_json:
        return list(json.loads(args.peers_json.read_text())["rows"]), None
    print("bench: peers (arq, RQ) ...", file=sys.stderr, flush=True)
    try:
        from bench.peers import run_peers as measure_peers
    except ImportError as exc:
        return [], f"{NO_PEERS}: {exc}"
    try:
        return measure_peers(args.tiny), None
    except Exception as exc:
        traceback.print_exc()
        return [], f"{type(exc).__name__}: {exc}"


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    server = RedisServer().binary
    found["redis-server"] = f"{server_version(server)} ({server})"
    for package in ("recoveryd", "redis", "hiredis", "msgspec", "google-re2"):
        found[package] = _version(package)
    for package in ("uvloop", "anyio", "arq", "rq"):
        found[package] = _version(package)
    return found


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def source_state() -> dict[str, Any]:
    """Which code was measured: the commit, and what differs from it."""

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", *argv], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "changed": changed}


def _plain(value: Any) -> Any:
    """JSON without NaN or infinity (null instead), tuples as lists."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
