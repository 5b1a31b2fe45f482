"""Scheduler benchmark: how long one decision takes, and what each strategy picks.

For each link condition (fast, slow, lossy, outage) and each strategy (SPINN and the
baselines), times ``Scheduler.decide`` and prints the chosen plan with its predictions.
Profiles and calibration are the real ones when given; otherwise synthetic ones of the
model's geometry (device and cloud times proportional to MACs, bytes to the u8 split
tensor, a seeded random calibration), so the timing reflects the real search size.

    python bench/bench_scheduler.py                                  # small model geometry, synthetic
    python bench/bench_scheduler.py --device profiles/<id>-<host>-device.json \\
        --cloud profiles/<id>-<host>-cloud.json --calibration spinn_ros/models/small.calib.json
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from spinn_ros.core.calibration import Calibration, build_calibration, load_calibration
from spinn_ros.core.model import build_model
from spinn_ros.core.performance import PerformanceModel
from spinn_ros.core.prediction import Conditions
from spinn_ros.core.profile import load_profile, synthetic_profile
from spinn_ros.core.scheduler import STRATEGIES, Scheduler
from spinn_ros.core.sla import default_sla_path, load_sla
from spinn_ros.testing.bench_io import print_table, summary_ms, write_json
from spinn_ros.testing.conditions import CONDITIONS

#: the monitor re-plans within a control period; one decision should take a small share of it
TARGET_MS = 5.0


def synthetic_inputs(size: str, device_gmacs: float, cloud_gmacs: float, seed: int = 0) -> PerformanceModel:
    """Profiles and calibration with the geometry of a model size (no measurement, no training)."""
    model = build_model(size, seed=seed)
    rng = np.random.default_rng(seed)
    n, e, mid = model.num_stages, model.num_exits, f"synthetic-{size}"
    stage_macs, exit_macs = np.asarray(model.stage_macs), np.asarray(model.exit_macs)
    wire = [0.5 * np.prod(model.split_shape(s)) for s in range(n)]        # u8 + lz4 at about 2:1
    device = synthetic_profile("device", model_id=mid, exit_stages=model.exit_stages, wire_bytes=wire,
                               stage_ms=stage_macs / device_gmacs / 1e6, exit_ms=exit_macs / device_gmacs / 1e6)
    cloud = synthetic_profile("cloud", model_id=mid, exit_stages=model.exit_stages,
                              stage_ms=stage_macs / cloud_gmacs / 1e6, exit_ms=exit_macs / cloud_gmacs / 1e6,
                              batch_scale={1: 1.0, 2: 1.3, 4: 2.0, 8: 3.5})
    frames = 2000
    labels = rng.random(frames) < 0.3
    conf = np.sort(0.5 + 0.5 * rng.random((e, frames)), axis=0)            # deeper exits are more confident
    right = rng.random((e, frames)) < np.linspace(0.75, 0.93, e)[:, None]
    cal = build_calibration(confidences=conf, predictions=np.where(right, labels, ~labels), labels=labels,
                            steering_errors=rng.random((e, frames)) * 0.2, exit_stages=model.exit_stages,
                            stage_macs=model.stage_macs, exit_head_macs=model.exit_macs, model_id=mid,
                            model_name=size)
    return PerformanceModel(device, cloud, Calibration(cal, "synthetic"))


def time_decisions(scheduler: Scheduler, cond: Conditions, repeats: int):
    times, decision = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        decision = scheduler.decide(cond)
        times.append(time.perf_counter() - t0)
    return summary_ms(times), decision


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small", choices=("small", "large"), help="geometry for synthetic inputs")
    ap.add_argument("--device", help="device profile (with --cloud and --calibration: real inputs)")
    ap.add_argument("--cloud")
    ap.add_argument("--calibration")
    ap.add_argument("--sla", default=str(default_sla_path()))
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--device-gmacs", type=float, default=0.5, help="synthetic drone speed, GMAC/s (one slow core)")
    ap.add_argument("--cloud-gmacs", type=float, default=100.0, help="synthetic cloud speed, GMAC/s")
    args = ap.parse_args(argv)
    if args.device:
        cal = load_calibration(args.calibration, None)
        perf = PerformanceModel(load_profile(args.device, cal.model_id, "device"),
                                load_profile(args.cloud, cal.model_id, "cloud"), cal)
        source = f"profiles {args.device}, {args.cloud}; calibration {args.calibration}"
    else:
        perf = synthetic_inputs(args.size, args.device_gmacs, args.cloud_gmacs)
        source = f"synthetic {args.size} geometry, drone {args.device_gmacs} / cloud {args.cloud_gmacs} GMAC/s"
    sla = load_sla(args.sla)
    rows = []
    for cname, cond in CONDITIONS.items():
        for strategy in STRATEGIES:
            stats, d = time_decisions(Scheduler(perf, sla, strategy), cond, args.repeats)
            p = d.prediction
            rows.append({"conditions": cname, "strategy": strategy, "decide_median_ms": stats["median_ms"],
                         "decide_p99_ms": stats["p99_ms"], "split": d.split, "threshold": d.threshold,
                         "feasible": d.feasible, "p_latency_ms": p.latency_ms, "accuracy": p.accuracy,
                         "fps": p.throughput_fps, "offload": p.offload_fraction, "kB": p.bytes_per_frame / 1e3,
                         "server_ms": p.server_ms_per_frame})
    plans = len(perf.thresholds) * (perf.num_stages + 1)
    print_table(rows, title=f"scheduler: {plans} plans per decision; {source}; SLA {sla.describe()}")
    slowest = max(rows, key=lambda r: r["decide_median_ms"])
    verdict = "PASS" if slowest["decide_median_ms"] < TARGET_MS else "FAIL"
    print(f"target: median decision < {TARGET_MS:g} ms under every condition and strategy: {verdict} "
          f"(slowest {slowest['decide_median_ms']:.2f} ms: {slowest['conditions']}, {slowest['strategy']})")
    write_json("scheduler", {"source": source, "sla": sla.describe(), "plans": plans, "rows": rows,
                             "target_ms": TARGET_MS, "target_met": verdict == "PASS"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
