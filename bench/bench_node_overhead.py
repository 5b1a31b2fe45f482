"""What the drone node adds on top of the bare model.

A publisher process (this one) sends camera frames to a drone node process over
real DDS and times each frame from publish to the result's arrival. The node
reports its own model compute per frame (device_compute_ms), so

    overhead    = (result received - image published) - device_compute_ms

is everything else: DDS both ways, buffer-to-tensor conversion (and resizing when
the camera size differs from the model's), the policy, message building. Each image is
stamped with the ROS time it was published, so the node's own latency_ms (stamp ->
result published) gives the part before the result leaves the node:

    in-node     = latency_ms - device_compute_ms   (DDS in + the node's own work)

The node's own step times (core/step_times.py, from its /diagnostics over its last 300 frames)
split the in-node part: camera callback -> worker (slot wait), preprocess, head (the model),
command published, then the result; "callback -> command" is the whole span inside the node.

    .venv/bin/python bench/bench_node_overhead.py [--frames 300] [--rate 20] [--checkpoint default] [--backend torch]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from spinn_ros.core.backend import BACKENDS, staged_model
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.preprocess import to_model_input
from spinn_ros.core.progressive import run_head
from spinn_ros.core.step_times import STEPS, TOTAL
from spinn_ros.testing.bench_io import print_table, results_dir, summary_ms, write_json
from spinn_ros.testing.frames import noise_frames
from spinn_ros.tools.harness import RosHarness, domain_id_for_run
from spinn_ros.tools.hops import run_drone_node

STEP_COLUMNS = (*STEPS, TOTAL)


def camera_size(text: str) -> tuple[int, int]:
    """'640x480' (width x height) or '128' (square) -> (height, width)."""
    w, _, h = text.partition("x")
    try:
        return int(h or w), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"camera size must be WIDTHxHEIGHT or N, got {text!r}") from None


def bare_model_ms(ref: str, size: tuple[int, int], n: int = 100, backend: str = "torch") -> dict:
    """The model alone in this process: conversion excluded, same policy as the node."""
    torch.set_num_threads(1)
    model, model_id = load_model(ref)
    model = staged_model(model, model_id, backend, threads=1)
    xs = [to_model_input(f, model.spec.input_size) for f in noise_frames(20, size, seed=1)]
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        run_head(model, xs[i % len(xs)], model.num_stages, 0.8, offload=False)
        times.append(time.perf_counter() - t0)
    return summary_ms(times[10:])


def measure(ros: RosHarness, ref: str, size: tuple[int, int], n: int, rate: float, backend: str = "torch") -> dict:
    # the node alone: no cloud session (and no certificates) to measure around
    run = run_drone_node(ros, ref, noise_frames(20, size), n, rate, backend, steps=True)
    seconds = lambda values: [v / 1e3 for v in values]                          # noqa: E731
    return {"e2e": summary_ms(seconds(run.e2e_ms)), "device": summary_ms(seconds(run.device_ms)),
            "overhead": summary_ms(seconds([e - d for e, d in zip(run.e2e_ms, run.device_ms)])),
            "in_node": summary_ms(seconds([m - d for m, d in zip(run.node_ms, run.device_ms)])),
            "received": run.received, "sent": run.sent, "steps": run.steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rate", type=float, default=20.0, help="frames per second")
    ap.add_argument("--checkpoint", default="default", help="model reference (default: the shipped model)")
    ap.add_argument("--sizes", type=camera_size, nargs="+", default=[(128, 128), (224, 224), (480, 640)],
                    help="camera sizes, WIDTHxHEIGHT or N (square); default 128 224 640x480")
    ap.add_argument("--backend", default="torch", choices=BACKENDS, help="the drone node's (and the bare model's)")
    opts = ap.parse_args(argv)
    ros = RosHarness(domain_id_for_run())
    rows = []
    try:
        for size in opts.sizes:
            print(f"camera {size[1]}x{size[0]}: {opts.frames} frames at {opts.rate} Hz ...", flush=True)
            m = measure(ros, opts.checkpoint, size, opts.frames, opts.rate, opts.backend)
            bare = bare_model_ms(opts.checkpoint, size, backend=opts.backend)
            rows.append({
                "camera": f"{size[1]}x{size[0]}", "bare_model_p50_ms": bare["median_ms"],
                "node_model_p50_ms": m["device"]["median_ms"], "e2e_p50_ms": m["e2e"]["median_ms"],
                "e2e_p99_ms": m["e2e"]["p99_ms"], "overhead_p50_ms": m["overhead"]["median_ms"],
                "overhead_p99_ms": m["overhead"]["p99_ms"], "in_node_p50_ms": m["in_node"]["median_ms"],
                "in_node_p99_ms": m["in_node"]["p99_ms"], "received": f"{m['received']}/{m['sent']}",
                **{f"{k}_p50_ms": m["steps"].get(f"step_{k}_p50_ms", float("nan")) for k in STEP_COLUMNS},
                "detail": m,
            })
    finally:
        ros.close()
    print_table(rows, ["camera", "bare_model_p50_ms", "node_model_p50_ms", "e2e_p50_ms", "e2e_p99_ms",
                       "overhead_p50_ms", "overhead_p99_ms", "in_node_p50_ms", "in_node_p99_ms", "received"],
                title=f"drone node overhead over the bare model ({opts.checkpoint}, {opts.backend}); "
                      "target: overhead p50 <= 2 ms")
    print_table(rows, ["camera", *(f"{k}_p50_ms" for k in STEP_COLUMNS)],
                title="inside the node, per step (its /diagnostics, last 300 frames)")
    name = "node_overhead" if opts.backend == "torch" else f"node_overhead-{opts.backend}"
    write_json(name, {"checkpoint": opts.checkpoint, "backend": opts.backend, "rate_hz": opts.rate, "rows": rows})
    _plot(rows, name)
    return 0


def _plot(rows, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    labels = [r["camera"] for r in rows]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["node_model_p50_ms"] for r in rows], 0.4, label="model (p50)")
    ax.bar(x + 0.2, [r["overhead_p50_ms"] for r in rows], 0.4, label="node overhead (p50)")
    ax.errorbar(x + 0.2, [r["overhead_p50_ms"] for r in rows],
                yerr=[[0] * len(rows), [r["overhead_p99_ms"] - r["overhead_p50_ms"] for r in rows]], fmt="none", c="k",
                capsize=3, label="to p99")
    ax.set_xticks(x, labels)
    ax.set_ylabel("ms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(results_dir() / f"{name}.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
