"""Classification speed against the size of the error text.

Runs the classifier the daemon builds from its config (built-in patterns,
default settings) in this process, on error texts of 1 KB, 100 KB and
1 MB: a deep traceback whose last line names the cause, and a log dump
that names nothing known. Bytes per second that stay flat as the text
grows show the time per record is linear in its size.
"""

from __future__ import annotations

import time
from typing import Any

from bench.workload import big_error
from recoveryd.classify import Classifier
from recoveryd.config import parse_config
from recoveryd.records import FailureRecord

__all__ = ["SIZES", "measure_classification"]

SIZES = (1_000, 100_000, 1_000_000)
MIN_CALLS = 3


def measure_classification(min_s: float) -> list[dict[str, Any]]:
    """One row per text size and kind: records/s and bytes/s."""
    classifier = Classifier.from_config(parse_config(""))
    rows: list[dict[str, Any]] = []
    for matching in (True, False):
        for size in SIZES:
            rows.append(_measure(classifier, size, matching, min_s))
    return rows


def _measure(
    classifier: Classifier, size: int, matching: bool, min_s: float
) -> dict[str, Any]:
    text = big_error(size, matching=matching)
    record = FailureRecord(task="exports.build_csv", error=text, id="bench")
    result = classifier.classify(record)  # also warms any lazy state

    calls = 0
    started = time.perf_counter()
    elapsed = 0.0
    while calls < MIN_CALLS or elapsed < min_s:
        classifier.classify(record)
        calls += 1
        elapsed = time.perf_counter() - started
    per_s = calls / elapsed
    return {
        "bytes": len(text.encode()),
        "text": "traceback, cause last" if matching else "log dump, no known cause",
        "category": result.category,
        "pattern": result.pattern,
        "calls": calls,
        "per_s": per_s,
        "mb_per_s": per_s * len(text.encode()) / 1e6,
    }
