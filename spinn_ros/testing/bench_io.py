"""Shared benchmark plumbing: a printed table, a JSON record and a results folder.

Every benchmark writes ``bench/results/<name>.json`` (machine, date, rows) and its
plots beside it, and prints the same rows as a table. Figures are meant to be read
as ratios measured side by side in one run: the machine is noisy.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

from ..core.stats import percentile

#: bench/results of the checkout this package runs from (benchmarks run from a checkout);
#: SPINN_BENCH_RESULTS puts them elsewhere
RESULTS = Path(os.environ.get("SPINN_BENCH_RESULTS") or Path(__file__).resolve().parents[2] / "bench" / "results")


def results_dir() -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS


def machine() -> dict:
    return {
        "host": platform.node(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def summary_ms(samples_s) -> dict:
    """median / p95 / p99 / mean of durations given in seconds, reported in ms."""
    ms = [s * 1e3 for s in samples_s]
    return {
        "n": len(ms),
        "median_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }


def print_table(rows: list[dict], columns: list[str] | None = None, title: str | None = None) -> str:
    """Print rows as an aligned table (floats to 3 significant places); return the text."""
    if not rows:
        return ""
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(name: str, payload: dict) -> Path:
    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=float))
    print(f"wrote {path}", flush=True)
    return path
