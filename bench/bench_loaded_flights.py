"""Flights per scene family and machine condition: collisions, goals, time limits.

Flies seeded courses with ``spinn fly`` in each mode asked for: on a quiet machine
(``idle``), while busy loops take both cores (``loaded``, ``--stress-cpus``), optionally
with stale answers as well (the camera delivering late and the drone node frozen at
intervals); reports per family, condition and mode how many flights reached the goal, hit
the time limit, or collided (target: 0 collisions).

    .venv/bin/python bench/bench_loaded_flights.py [--seeds 1-10] [--modes spinn,device-only]
        [--conditions loaded[,loaded+stale,idle]] [--kinds forest[,composite,gates]] [--full-course]

``idle`` flies the same courses without stress, so that a collision under load can be told
apart from a course the model cannot fly at all (reported as ``collided_also_idle``).
Families other than forest (``--kinds``) put obstacles on the straight line to the goal;
``composite`` and ``gates`` are never in the model's training data (docs/model.md).
``--full-course`` flies all 20 m instead of the CI flights' first ~10 m.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spinn_ros.sim.world import COURSE_KINDS
from spinn_ros.testing.bench_io import print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
# the CI flights' course and drone (test/system/test_fly.py): ~10 m of forest, a drone 4x slower than the profile
COMMON = ("--slowdown", "4")
SHORT_COURSE = ("--max-time", "30", "--set", "sim.goal_radius=10")
FULL_COURSE = ("--max-time", "60")
CONDITIONS = {
    "idle": (),         # the same courses on a quiet machine: a collision here is the model's, not the load's
    "loaded": ("--stress-cpus", "2"),
    "loaded+stale": ("--stress-cpus", "2", "--set", "sim.camera.latency_s=0.45", "--stall-drone", "300@2"),
}


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def fly(out: Path, seed: int, mode: str, condition: str, kind: str = "forest", full_course: bool = False) -> dict:
    argv = [sys.executable, "-m", "spinn_ros.tools.fly", "--quiet", "--out", str(out), "--seed", str(seed),
            "--mode", mode, "--kind", kind, *COMMON, *(FULL_COURSE if full_course else SHORT_COURSE),
            *CONDITIONS[condition]]
    if mode == "spinn":
        argv += ["--set", "drone.follow_plans=false"]   # the CI flights' pinned split 2 / threshold 0.999
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    row = {"kind": kind, "seed": seed, "mode": mode, "condition": condition, "wall_s": round(time.monotonic() - t0, 1)}
    try:
        s = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return {**row, "end": f"failed ({proc.returncode}): {proc.stderr.strip()[-200:]}", "collisions": None}
    o = s["outcome"]
    return {**row, "end": o["end_reason"], "collisions": o["collisions"], "goal": o["reached_goal"],
            "distance_m": round(o["distance_flown_m"], 1), "answer_age_p50_ms": s["drone_latency_ms"].get("final_p50")}


def idle_collision(rows: list[dict], row: dict) -> bool:
    """Whether the same seed and mode also collided without stress in this run."""
    return any(r["condition"] == "idle" and r["kind"] == row["kind"] and r["seed"] == row["seed"]
               and r["mode"] == row["mode"] and r["collisions"] for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1-10", help="course seeds, e.g. 1-10 (default)")
    ap.add_argument("--modes", default="spinn,device-only")
    ap.add_argument("--conditions", default="loaded", help=f"comma-separated, of {', '.join(CONDITIONS)}")
    ap.add_argument("--kinds", default="forest", help=f"comma-separated scene families, of {', '.join(COURSE_KINDS)}")
    ap.add_argument("--full-course", action="store_true", help="fly the whole 20 m course (60 s limit)")
    ap.add_argument("--name", default="loaded_flights", help="results file name (bench/results/<name>.json)")
    opts = ap.parse_args(argv)
    conditions, kinds = opts.conditions.split(","), opts.kinds.split(",")
    if set(conditions) - set(CONDITIONS):
        ap.error(f"--conditions takes {', '.join(CONDITIONS)}")
    if set(kinds) - set(COURSE_KINDS):
        ap.error(f"--kinds takes {', '.join(COURSE_KINDS)}")
    rows = []
    plan = [(k, c, m) for k in kinds for c in conditions for m in opts.modes.split(",")]
    with tempfile.TemporaryDirectory(prefix="spinn-flights-") as tmp:
        for kind, condition, mode in plan:
            for seed in seeds(opts.seeds):
                row = fly(Path(tmp) / f"{kind}-{condition}-{mode}-{seed}", seed, mode, condition, kind,
                          opts.full_course)
                print(json.dumps(row), flush=True)
                rows.append(row)
    totals = []
    for kind, condition, mode in plan:
        mine = [r for r in rows if r["kind"] == kind and r["condition"] == condition and r["mode"] == mode]
        totals.append({"kind": kind, "condition": condition, "mode": mode, "flights": len(mine),
                       "goal": sum(1 for r in mine if r.get("goal")),
                       "time_limit": sum(1 for r in mine if r["end"] == "time_limit"),
                       "collided": sum(1 for r in mine if r["collisions"]),
                       "collided_also_idle": sum(1 for r in mine if r["collisions"] and idle_collision(rows, r)),
                       "failed": sum(1 for r in mine if r["collisions"] is None)})
    print_table(totals, title="flights (target: 0 collided)")
    write_json(opts.name, {"totals": totals, "flights": rows})
    return 1 if any(t["collided"] or t["failed"] for t in totals) else 0


if __name__ == "__main__":
    sys.exit(main())
