"""``python -m bench.peers``: run the peers' benchmark, print a table, write JSON."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from bench.peers.suite import PEERS, run_report

COLUMNS = [
    ("peer", 4),
    ("setting", 30),
    ("worker", 26),
    ("dispatch/s", 10),
    ("late p50", 9),
    ("p99", 8),
    ("max", 8),
    ("min", 8),
    ("idle cmd/s", 10),
    ("idle CPU%", 9),
    ("B/pending", 9),
    ("B/bare", 7),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument(
        "--tiny", action="store_true", help="CI sizes: well under a minute"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write results here")
    parser.add_argument("--only", choices=sorted(PEERS), help="run one peer")
    args = parser.parse_args(argv)

    report = run_report(args.tiny, args.only)
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def format_table(report: dict[str, Any]) -> str:
    """The rows as a fixed-width table, lateness in ms, with versions and notes."""
    lines = [
        "  ".join(f"{title:>{width}}" for title, width in COLUMNS),
        *("  ".join(_cells(row)) for row in report["rows"]),
        "",
        "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"mode {report['mode']}, wall {report['wall_s']}s; lateness in ms "
        "(min < 0: started early; >= some never started, counted at the wait);",
        "* dispatch capped before all jobs ran; B/pending: Redis bytes per pending "
        "job with the same ~113-byte payload as recoveryd's, B/bare: per bare job",
    ]
    return "\n".join(lines)


def _cells(row: dict[str, Any]) -> list[str]:
    dispatch, late, idle = row["dispatch"], row["lateness"], row["idle"]
    capped = "*" if dispatch["capped"] else ""
    at_least = ">=" if late["done"] < late["jobs"] else ""
    values = [
        row["peer"],
        f"{row['setting']} {row['knob']}",
        row["worker"],
        f"{dispatch['per_s']:,.0f}{capped}",
        _ms(late["p50_ms"]),
        at_least + _ms(late["p99_ms"]),
        at_least + _ms(late["max_ms"]),
        _ms(late["min_ms"]),
        f"{idle['commands_per_s']:.1f}",
        f"{idle['worker_cpu_pct']:.2f}",
        f"{row['bytes_per_pending']:,.0f}",
        f"{row['bytes_per_pending_bare']:,.0f}",
    ]
    return [
        f"{value:>{width}}" for value, (_, width) in zip(values, COLUMNS, strict=True)
    ]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


if __name__ == "__main__":
    sys.exit(main())
