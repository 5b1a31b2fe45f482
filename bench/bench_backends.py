"""torch vs onnxruntime for the staged executor, side by side in one process.

1. Device head per split (stages [0, s) and every exit among them, none leaving early,
   as the drone runs it when no exit is confident) and the whole model, at batch 1 and 8,
   one thread per backend; each repetition times torch and then onnxruntime on the same
   input, so load on the machine hits both alike. Ratios are torch / onnxruntime.
2. Equivalence on the same frames: decisions at every calibrated threshold (whole model on
   the device), largest exit-probability difference.
3. Planner: what the SPINN scheduler picks per link condition with each backend's profiles
   (the committed reference profiles): a faster drone changes where offloading pays.

    .venv/bin/python bench/bench_backends.py [--runs 200] [--checkpoint default] [--dataset data/val.npz]

Target (issue 11): head >= 3x faster than torch at batch 1 with identical decisions.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from spinn_ros.core.backend import staged_model
from spinn_ros.core.calibration import load_calibration
from spinn_ros.core.checkpoint import calibration_path, default_checkpoint_path
from spinn_ros.core.model import decode_exit
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.performance import PerformanceModel
from spinn_ros.core.preprocess import to_model_input
from spinn_ros.core.profile import REFERENCE_HOST, find_profile, load_profile, profiles_root
from spinn_ros.core.progressive import run_head
from spinn_ros.core.scheduler import Scheduler
from spinn_ros.core.sla import default_sla_path, load_sla
from spinn_ros.testing.bench_io import print_table, summary_ms, write_json
from spinn_ros.testing.conditions import CONDITIONS
from spinn_ros.tools.profile import NEVER_CONFIDENT, input_frames

BATCHES = (1, 8)
SLOWDOWNS = (1.0, 4.0, 16.0)  # this VM, the 4x slower drone the flight tests emulate, a much slower one
CROSSOVER = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 100)   # drone slowdowns searched for the first offload


def head(model, x, split: int, decode: bool = True) -> None:
    """Stages [0, split) and their exits, decoded, none leaving: run_head's work at any batch size
    (``decode=False``: only what the backend runs, the exits' outputs left raw)."""
    for stage in range(split):
        x = model.run_stage(stage, x)
        e = model.exit_index_at(stage)
        if e is not None:
            out = model.run_exit(e, x)
            if decode:
                decode_exit(out)


def side_by_side(models: dict, fn, runs: int, warmup: int) -> dict:
    """{name: summary} of ``fn(model)`` for each model, timed alternately in the same repetitions."""
    for _ in range(warmup):
        for m in models.values():
            fn(m)
    samples = {name: [] for name in models}
    for _ in range(runs):
        for name, m in models.items():
            t0 = time.perf_counter()
            fn(m)
            samples[name].append(time.perf_counter() - t0)
    return {name: summary_ms(s) for name, s in samples.items()}


def speed_rows(model, ort, xs: list, runs: int, warmup: int) -> list[dict]:
    rows, models = [], {"torch": model, "ort": ort}
    with torch.inference_mode():
        for split in range(1, model.num_stages + 1):
            row = {"head": f"split {split}" + (" (whole model)" if split == model.num_stages else "")}
            for b in BATCHES:
                x = torch.cat([xs[i % len(xs)] for i in range(b)])
                t = side_by_side(models, lambda m, x=x, s=split: head(m, x, s), runs, warmup)
                row.update({f"torch_b{b}_ms": t["torch"]["median_ms"], f"ort_b{b}_ms": t["ort"]["median_ms"],
                            f"speedup_b{b}": t["torch"]["median_ms"] / t["ort"]["median_ms"]})
            rows.append(row)
        # the backend's share alone: the same, exit outputs not decoded (decoding is torch on both)
        x, whole = xs[0], model.num_stages
        t = side_by_side(models, lambda m: head(m, x, whole, decode=False), runs, warmup)
        rows.append({"head": "whole model, backend only", "torch_b1_ms": t["torch"]["median_ms"],
                     "ort_b1_ms": t["ort"]["median_ms"], "speedup_b1": t["torch"]["median_ms"] / t["ort"]["median_ms"]})
        # the real call on the drone, policy included, whole model, no exit confident
        t = side_by_side(models, lambda m: run_head(m, x, model.num_stages, NEVER_CONFIDENT), runs, warmup)
        rows.append({"head": "run_head, whole model", "torch_b1_ms": t["torch"]["median_ms"],
                     "ort_b1_ms": t["ort"]["median_ms"], "speedup_b1": t["torch"]["median_ms"] / t["ort"]["median_ms"]})
    return rows


def equivalence(model, ort, xs: list, thresholds: list[float]) -> dict:
    """Whole model on the device at every threshold: decisions compared, largest probability gap."""
    same, total, gap = 0, 0, 0.0
    for x in xs:
        for t in thresholds:
            a = run_head(model, x, model.num_stages, t).final
            b = run_head(ort, x, model.num_stages, t).final
            total += 1
            same += (a.exit_index, a.steering_bin) == (b.exit_index, b.steering_bin)
            gap = max(gap, abs(a.collision_prob - b.collision_prob), abs(a.confidence - b.confidence))
    return {"decisions_identical": same, "decisions": total, "max_prob_diff": gap}


def _decide(pm: PerformanceModel, sla, cond, slowdown: float):
    return Scheduler(pm, sla, "spinn").decide(dataclasses.replace(cond, device_slowdown=slowdown, frame_rate_hz=15.0))


def plan_rows(model_id: str, sla_path, host: str = REFERENCE_HOST, root=None) -> list[dict]:
    """SPINN's plan per condition and drone speed with torch's and onnxruntime's reference profiles
    (both sides on the same backend), and the drone slowdown from which it offloads at all."""
    cal = load_calibration(calibration_path(default_checkpoint_path()), model_id)
    sla = load_sla(sla_path)
    perf = {b: PerformanceModel(*(load_profile(find_profile(model_id, role, host, root, b), model_id, role, b)
                                  for role in ("device", "cloud")), cal) for b in ("torch", "onnxruntime")}
    rows = []
    for cname, cond in CONDITIONS.items():
        for slowdown in SLOWDOWNS:
            row = {"conditions": cname, "drone": f"{slowdown:g}x slower"}
            for b, pm in perf.items():
                p = _decide(pm, sla, cond, slowdown).prediction
                tag = "torch" if b == "torch" else "ort"
                row.update({f"{tag}_plan": f"split {p.split}, t {p.threshold:g}", f"{tag}_offload": p.offload_fraction,
                            f"{tag}_p_latency_ms": p.latency_ms})
            rows.append(row)
        first = {b: next((f"{k:g}x" for k in CROSSOVER if _decide(pm, sla, cond, k).prediction.offload_fraction > 0),
                         f"> {CROSSOVER[-1]}x") for b, pm in perf.items()}
        rows.append({"conditions": cname, "drone": "offloads from", "torch_plan": first["torch"],
                     "ort_plan": first["onnxruntime"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--dataset", default="data/val.npz", help="frames (procedural ones when missing)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--sla", default=str(default_sla_path()))
    ap.add_argument("--profiles-dir", default=str(profiles_root()), help="profiles for the planner comparison")
    ap.add_argument("--host", default=REFERENCE_HOST, help="whose profiles (both backends) the planner compares")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, model_id = load_model(args.checkpoint)
    ort = staged_model(model, model_id, "onnxruntime", threads=1)
    pixels, source = input_frames(args.frames, model.spec.input_size, args.dataset)
    xs = [to_model_input(p, model.spec.input_size) for p in pixels]

    speed = speed_rows(model, ort, xs, args.runs, args.warmup)
    print_table(speed, title=f"head per split, torch vs onnxruntime ({', '.join(ort.providers)}), 1 thread each, "
                             f"median of {args.runs} alternating runs; speedup = torch / ort")
    thresholds = load_calibration(calibration_path(default_checkpoint_path()), model_id).thresholds \
        if args.checkpoint == "default" else [0.5, 0.8, 0.9, 0.99, 0.999]
    eq = equivalence(model, ort, xs, thresholds)
    print(f"equivalence on {len(xs)} frames ({source}) x {len(thresholds)} thresholds: "
          f"{eq['decisions_identical']}/{eq['decisions']} decisions identical, "
          f"largest probability difference {eq['max_prob_diff']:.2g}", flush=True)
    plans = plan_rows(model_id, args.sla, args.host, args.profiles_dir) if args.checkpoint == "default" else []
    if plans:
        print_table(plans, title=f"SPINN plans from the '{args.host}' profiles of each backend (15 Hz camera)")
    write_json("backends", {"checkpoint": args.checkpoint, "model_id": model_id, "frames": source,
                            "providers": ort.providers, "runs": args.runs, "speed": speed, "equivalence": eq,
                            "plans": plans})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
