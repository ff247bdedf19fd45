"""The results as Markdown: recoveryd against its targets, then against the peers.

A ratio says how far recoveryd is ahead of a peer on one figure: ×10 is ten
times the rate, or a tenth of the delay, commands, CPU or bytes; below ×1
recoveryd is behind. A peer figure marked * is a lower bound (the peer did
not finish the work in the time allowed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["TARGETS", "comparisons", "render", "target_rows"]

Figure = Callable[[dict[str, Any]], float | None]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    unit: str
    goal: str
    value: Figure
    met: Callable[[float], bool]


def _get(*path: str) -> Figure:
    def figure(results: dict[str, Any]) -> float | None:
        value: Any = results
        for step in path:
            if not isinstance(value, dict) or step not in value:
                return None
            value = value[step]
        return float(value) if isinstance(value, int | float) else None

    return figure


def _classify_flatness(results: dict[str, Any]) -> float | None:
    """Bytes/s at 1 MB over bytes/s at 100 KB, the worse of the two text kinds."""
    rows = results.get("classification")
    if not isinstance(rows, list):
        return None
    ratios = []
    for kind in {row["text"] for row in rows}:
        by_size = {row["bytes"]: row["mb_per_s"] for row in rows if row["text"] == kind}
        big, mid = by_size.get(max(by_size)), by_size.get(sorted(by_size)[-2])
        if big and mid:
            ratios.append(big / mid)
    return min(ratios) if ratios else None


TARGETS = (
    Target(
        "ingest → classified → scheduled (pushed first)",
        "records/s",
        "≥ 20,000",
        _get("ingest", "per_s"),
        lambda v: v >= 20_000,
    ),
    Target(
        "due → re-dispatched",
        "entries/s",
        "≥ 50,000",
        _get("dispatch", "per_s"),
        lambda v: v >= 50_000,
    ),
    Target(
        "lateness at the worker, p99",
        "ms",
        "≤ 20",
        _get("lateness", "at_worker_ms", "p99"),
        lambda v: v <= 20,
    ),
    Target(
        "idle daemon CPU",
        "% of a core",
        "< 1",
        _get("idle", "daemon_cpu_pct"),
        lambda v: v < 1,
    ),
    Target(
        "daemon resident memory, N pending",
        "MB",
        "< 60",
        _get("memory", "daemon_rss_mb"),
        lambda v: v < 60,
    ),
    Target(
        "classification bytes/s, 1 MB over 100 KB",
        "ratio",
        "≥ 0.8 (flat)",
        _classify_flatness,
        lambda v: v >= 0.8,
    ),
)


@dataclass(frozen=True, slots=True)
class Comparison:
    name: str
    mine: Figure
    theirs: Figure
    higher_is_better: bool
    capped: Figure = lambda row: None


COMPARISONS = (
    Comparison(
        "dispatch, entries/s",
        _get("dispatch", "per_s"),
        _get("dispatch", "per_s"),
        True,
        capped=_get("dispatch", "capped"),
    ),
    Comparison(
        "lateness p50, ms",
        _get("lateness", "at_worker_ms", "p50"),
        _get("lateness", "p50_ms"),
        False,
    ),
    Comparison(
        "lateness p99, ms",
        _get("lateness", "at_worker_ms", "p99"),
        _get("lateness", "p99_ms"),
        False,
    ),
    Comparison(
        "lateness max, ms",
        _get("lateness", "at_worker_ms", "max"),
        _get("lateness", "max_ms"),
        False,
    ),
    Comparison(
        "idle, Redis commands/s",
        _get("idle", "commands_per_s"),
        _get("idle", "commands_per_s"),
        False,
    ),
    Comparison(
        "idle, CPU % of a core",
        _get("idle", "daemon_cpu_pct"),
        _get("idle", "worker_cpu_pct"),
        False,
    ),
    Comparison(
        "Redis bytes per pending, peer job with the same ~113-byte payload",
        _get("memory", "redis_bytes_per_pending"),
        _get("bytes_per_pending"),
        False,
    ),
    Comparison(
        "Redis bytes per pending, bare job (one float as its payload)",
        _get("memory_bare", "redis_bytes_per_pending"),
        _get("bytes_per_pending_bare"),
        False,
    ),
)


def peer_name(row: dict[str, Any]) -> str:
    """``arq tuned (poll_delay=0.05s)``; RQ's rows also name the worker class."""
    worker = f"{row['worker'].split()[0]}, " if row["peer"] == "rq" else ""
    return f"{row['peer']} {row['setting']} ({worker}{row['knob']})"


def ratio(mine: float | None, theirs: float | None, higher_is_better: bool) -> float:
    """How many times better recoveryd is (nan when it cannot be said)."""
    if mine is None or theirs is None or math.isnan(mine) or math.isnan(theirs):
        return math.nan
    if theirs < 0:  # a peer that ran a job early is not "faster" for it
        return math.nan
    top, bottom = (mine, theirs) if higher_is_better else (theirs, mine)
    if bottom <= 0:
        return math.inf if top > 0 else math.nan
    return top / bottom


def target_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        value = target.value(results)
        met = None if value is None else target.met(value)
        rows.append(
            {
                "name": target.name,
                "unit": target.unit,
                "goal": target.goal,
                "value": value,
                "met": met,
            }
        )
    return rows


def comparisons(results: dict[str, Any], peers: list[dict[str, Any]]) -> list[Any]:
    """Per figure: recoveryd's value and, per peer row, its value and the ratio."""
    table = []
    for comparison in COMPARISONS:
        mine = comparison.mine(results)
        cells = []
        for row in peers:
            theirs = comparison.theirs(row)
            cells.append(
                {
                    "peer": peer_name(row),
                    "value": theirs,
                    "capped": bool(comparison.capped(row)),
                    "ratio": ratio(mine, theirs, comparison.higher_is_better),
                }
            )
        table.append({"name": comparison.name, "recoveryd": mine, "peers": cells})
    return table


def render(report: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    results = report["recoveryd"]
    parts = [
        _targets_table(report["targets"]),
        _details_table(results),
        _classification_table(results.get("classification")),
    ]
    if report["comparisons"] and report["comparisons"][0]["peers"]:
        parts.append(_peers_table(report["comparisons"]))
    elif report.get("peers_error"):
        parts.append(f"Peers not measured: {report['peers_error']}")
    return "\n\n".join(part for part in parts if part) + "\n"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "∞"
    if abs(value) >= 100 or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _times(value: float) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "×∞"
    return f"×{value:,.0f}" if value >= 10 else f"×{value:.2g}"


def _targets_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| target | unit | recoveryd | goal | met |",
        "|---|---|---:|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "–"}[row["met"]]
        value = _num(row["value"], 2)
        lines.append(
            f"| {row['name']} | {row['unit']} | {value} | {row['goal']} | {met} |"
        )
    return "\n".join(lines)


def _details_table(results: dict[str, Any]) -> str:
    ingest, live = results.get("ingest", {}), results.get("ingest_live", {})
    dispatch, late = results.get("dispatch", {}), results.get("lateness", {})
    idle, memory = results.get("idle", {}), results.get("memory", {})
    bare = results.get("memory_bare", {})
    n_bare, bare_bytes = bare.get("pending"), _mb(bare, "redis_bytes_per_pending")
    worker, script = late.get("at_worker_ms", {}), late.get("in_script_ms", {})
    n_in, n_out = ingest.get("records"), dispatch.get("entries")
    n_late, n_mem = late.get("entries"), memory.get("pending")
    rows = [
        ("ingest, pushed first", n_in, _num(ingest.get("per_s")), "/s"),
        ("ingest, pushed while running", n_in, _num(live.get("per_s")), "/s"),
        ("ingest: daemon CPU per record", n_in, _per(ingest, "daemon_cpu_s"), "µs"),
        ("ingest: Redis CPU per record", n_in, _per(ingest, "redis_cpu_s"), "µs"),
        ("dispatch, all due at once", n_out, _num(dispatch.get("per_s")), "/s"),
        ("dispatch: Redis CPU per entry", n_out, _per(dispatch, "redis_cpu_s"), "µs"),
        ("dispatch: daemon CPU per entry", n_out, _per(dispatch, "daemon_cpu_s"), "µs"),
        ("lateness at the worker p50 / p99 / max", n_late, _trio(worker), "ms"),
        ("lateness in the script p50 / p99 / max", n_late, _trio(script), "ms"),
        ("idle daemon CPU", None, _num(idle.get("daemon_cpu_pct"), 3), "% of a core"),
        ("idle Redis commands caused", None, _num(idle.get("commands_per_s"), 2), "/s"),
        ("daemon RSS with N pending", n_mem, _mb(memory, "daemon_rss_mb"), "MB"),
        ("daemon peak RSS meanwhile", n_mem, _mb(memory, "daemon_peak_rss_mb"), "MB"),
        ("Redis per pending", n_mem, _mb(memory, "redis_bytes_per_pending"), "bytes"),
        ("ingest while filling memory", n_mem, _num(memory.get("ingest_per_s")), "/s"),
        ("Redis per pending, bare record", n_bare, bare_bytes, "bytes"),
    ]  # fmt: skip
    lines = ["| measure | N | result | unit |", "|---|---:|---:|---|"]
    for name, count, value, unit in rows:
        lines.append(f"| {name} | {_num(count)} | {value} | {unit} |")
    return "\n".join(lines)


def _mb(result: dict[str, Any], name: str) -> str:
    return _num(result.get(name), 1)


def _trio(percentiles: dict[str, float]) -> str:
    return " / ".join(_num(percentiles.get(k), 1) for k in ("p50", "p99", "max"))


def _per(result: dict[str, Any], cpu: str) -> str:
    """CPU microseconds per item handled in one measurement."""
    count = result.get("handled") or result.get("dispatched")
    if not count or cpu not in result:
        return "–"
    return _num(1e6 * result[cpu] / count, 1)


def _classification_table(rows: list[dict[str, Any]] | None) -> str:
    if not rows:
        return ""
    lines = [
        "| classification text | bytes | records/s | MB/s | category (pattern) |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['text']} | {row['bytes']:,} | {_num(row['per_s'], 1)} | "
            f"{row['mb_per_s']:.1f} | {row['category']} ({row['pattern']}) |"
        )
    return "\n".join(lines)


def _peer_cell(cell: dict[str, Any]) -> str:
    value = cell["value"]
    shown = f"{_num(value, 1)}{'*' if cell['capped'] else ''}"
    if value is not None and value < 0:
        return f"{shown} (early)"
    return f"{shown} ({_times(cell['ratio'])})"


def _peers_table(table: list[dict[str, Any]]) -> str:
    names = [cell["peer"] for cell in table[0]["peers"]]
    lines = [
        "| figure | recoveryd | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for row in table:
        cells = [_peer_cell(cell) for cell in row["peers"]]
        mine = _num(row["recoveryd"], 1)
        lines.append(f"| {row['name']} | {mine} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
