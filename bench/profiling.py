"""Sampling the daemon while a measurement runs, with py-spy, when asked.

``--profile DIR`` attaches ``py-spy record`` to the daemon for each timed
phase and writes the raw collapsed stacks plus a summary: the functions
where samples were taken (self) and the functions on the stack (inclusive),
as shares of all samples. py-spy pauses the daemon for each sample, which
keeps every stack whole (non-blocking sampling truncates many of them) and
slows the daemon by a few percent: a profiled run's rates are diagnostics,
not the results. Without py-spy (``pip install py-spy``) it says so and
carries on.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import TracebackType

__all__ = ["Sampler", "summarise"]

RATE_HZ = 100
STOP_TIMEOUT_S = 30.0
TOP = 30
_LINE = re.compile(r":\d+\)$")


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Sampler:
    """``with Sampler(pid, out_dir, "ingest"):`` samples ``pid`` meanwhile."""

    def __init__(self, pid: int, out_dir: Path | None, name: str) -> None:
        self.pid = pid
        self.out_dir = out_dir
        self.name = name
        self.summary: dict[str, list[tuple[str, float]]] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def raw_path(self) -> Path:
        assert self.out_dir is not None
        return self.out_dir / f"{self.name}.collapsed.txt"

    def __enter__(self) -> Sampler:
        if self.out_dir is None:
            return self
        binary = _py_spy()
        if binary is None:
            print("profile: py-spy not found; not sampling", file=sys.stderr)
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "record", "--pid", str(self.pid), "--rate", str(RATE_HZ)]
        argv += ["--format", "raw", "--output", str(self.raw_path)]
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # py-spy writes what it has when interrupted.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self.raw_path.exists():
            self.summary = summarise(self.raw_path)
            self.raw_path.with_suffix(".top.txt").write_text(_render(self.summary))


def summarise(raw_path: Path, top: int = TOP) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive sample shares (%) per function, largest first."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {"self": [], "inclusive": []}
    return {
        "samples": [("all", float(total))],
        "self": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
        "inclusive": [
            (f, round(100 * n / total, 1)) for f, n in inclusive.most_common(top)
        ],
    }


def _render(summary: dict[str, list[tuple[str, float]]]) -> str:
    lines: list[str] = []
    for kind, rows in summary.items():
        if kind == "samples":
            lines.append(f"== samples: {rows[0][1]:.0f} at {RATE_HZ} Hz")
            continue
        lines.append(f"== {kind}")
        lines += [f"{share:6.1f}%  {frame}" for frame, share in rows]
    return "\n".join(lines) + "\n"
