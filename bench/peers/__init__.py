"""The peers' half of the benchmark: arq and RQ doing recoveryd's scheduling work.

``python -m bench.peers [--tiny] [--json OUT] [--only arq|rq]`` prints a table;
a combined runner calls :func:`run_peers`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_peers"]


def run_peers(tiny: bool, only: str | None = None) -> list[dict[str, Any]]:
    """One result row per peer, setting and (for RQ) worker class."""
    # Imported here, not at the top: each peer's worker process imports this
    # package, and must not carry the other peer's library into its forks.
    from bench.peers.suite import run_peers as run

    return run(tiny, only)
