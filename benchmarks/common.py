"""Shared pieces: results, timing helpers, tables."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The checkout: the working directory of the benchmarks' child processes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """One measured figure, with its target when it has one."""

    bench: str
    figure: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    def formatted(self) -> str:
        """The value with its unit, rounded for reading."""
        if self.unit == "x":
            return f"{self.value:.2f}×"
        if self.unit == "%":
            return f"{self.value:.1f} %"
        if abs(self.value) >= 100:
            return f"{self.value:,.0f} {self.unit}"
        if abs(self.value) >= 1:
            return f"{self.value:.2f} {self.unit}"
        return f"{self.value:.3g} {self.unit}"


def median_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def process_time(code: str, repeat: int = 9, env: dict[str, str] | None = None) -> float:
    """Median wall time of ``python -c code`` in a fresh process, seconds."""
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def table(results: Sequence[Result], markdown: bool = False) -> str:
    """Results as a plain or Markdown table."""
    rows = [("benchmark", "figure", "value", "target", "met", "note")]
    for r in results:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        rows.append((r.bench, r.figure, r.formatted(), r.target, met, r.note))
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
