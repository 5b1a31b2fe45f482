"""``spinn profile``: measure the times and wire bytes a profile holds (the format and its
reader are spinn_ros/core/profile.py).

A *device* profile is measured the way the drone runs the head: a fresh process,
one torch thread, batch 1. It holds per-stage and per-exit-head times, the whole
head per split (to check the sum of the parts), pixel preprocessing, and, per split
and wire encoding, the encode time and the bytes of real encoded requests.

A *cloud* profile holds per-stage and per-exit-head times at batch sizes {1, 2, 4, 8}
with the cloud's thread count, the whole tail from every split (the difference to
the sum of its parts is the per-batch fixed cost), and request decode times.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.backend import BACKENDS, DEFAULT_BACKEND, backend_of
from ..core.encodings import DEFAULT_WIRE_ENCODING, WIRE_ENCODINGS
from ..core.profile import (
    DEFAULT_BATCH_SIZES,
    FORMAT,
    HOPS,
    REFERENCE_HOST,
    ROLES,
    STATS,
    VERSION,
    Profile,
    default_profile_path,
    host_name,
    load_profile,
    save_profile,
)
from ..core.stats import percentile

#: --hops: measure the node pass-through after the compute, skip it, or only (re)measure it
HOP_CHOICES = ("measure", "skip", "only")
#: a threshold no softmax reaches: every exit is evaluated and none leaves early
NEVER_CONFIDENT = 2.0


# ---------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------


def stats_ms(samples_s: Sequence[float]) -> dict:
    """Durations in seconds -> a profile entry: {median, p90, mean} in ms."""
    ms = [s * 1e3 for s in samples_s]
    return {"median": round(statistics.median(ms), 5), "p90": round(percentile(ms, 90), 5),
            "mean": round(statistics.fmean(ms), 5)}


def _columns(rows: list[dict]) -> dict:
    """[{median, p90, mean}, ...] -> {median: [...], p90: [...], mean: [...]}."""
    return {k: [r[k] for r in rows] for k in rows[0]} if rows else {k: [] for k in STATS}


class _Timer:
    """Times callables: ``warmup`` untimed calls, then ``runs`` timed ones; ticks a progress bar."""

    def __init__(self, runs: int, warmup: int, bar):
        self.runs, self.warmup, self.bar = runs, warmup, bar

    def samples(self, fn: Callable[[int], object]) -> list[float]:
        """``fn(i)`` for i in 0..; returns the timed durations in seconds."""
        for i in range(self.warmup):
            fn(i)
        out = []
        for i in range(self.runs):
            t0 = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - t0)
        self.bar.update(1)
        return out

    def stats(self, fn: Callable[[int], object]) -> dict:
        return stats_ms(self.samples(fn))


def input_frames(n: int, size: int, dataset: Path | None) -> tuple[np.ndarray, str]:
    """(n frames, where they came from): evenly spaced simulator frames when the dataset
    exists (many worlds, not one), procedural ones otherwise."""
    if dataset is not None and Path(dataset).is_file():
        from ..sim.dataset import load_dataset

        images = load_dataset(dataset).images
        picked = images[np.linspace(0, len(images) - 1, n).astype(int)]
        return np.ascontiguousarray(picked), f"dataset {dataset}"
    from ..sim.procedural import procedural_frames

    return procedural_frames(n, size), "procedural"


def _activations(model, xs: list) -> list[list]:
    """acts[s][f]: the tensor crossing split s for frame f (s = 0 is the input)."""
    import torch

    acts = [xs]
    with torch.inference_mode():
        for stage in range(model.num_stages):
            acts.append([model.run_stage(stage, a) for a in acts[-1]])
    return acts


def _encode(model_id: str, act, split: int, encoding: str) -> bytes:
    from ..core import codec

    dtype, compression = codec.parse_encoding(encoding)
    dtype, payload = codec.wire_payload(act, split, dtype)
    return codec.encode_request(payload, request_id=1, model_id=model_id, split=split, exit_threshold=0.9,
                                dtype=dtype, codec=compression)


def measure_device(model, model_id: str, frames: np.ndarray, timer: _Timer, encodings: Sequence[str]) -> dict:
    """The drone's side at batch 1 (call with one torch thread)."""
    import torch

    from ..core.preprocess import to_model_input
    from ..core.progressive import _decision, run_head

    size, n = model.spec.input_size, len(frames)
    xs = [to_model_input(f, size) for f in frames]
    acts = _activations(model, xs)
    splits = range(model.num_stages)           # splits with a tail
    with torch.inference_mode():
        out = {
            "preprocess_ms": timer.stats(lambda i: to_model_input(frames[i % n], size)),
            "stage_ms": _columns([timer.stats(lambda i, k=k: model.run_stage(k, acts[k][i % n]))
                                  for k in range(model.num_stages)]),
            "exit_ms": _columns([timer.stats(lambda i, e=e, s=s: _decision(model, e, acts[s + 1][i % n]))
                                 for e, s in enumerate(model.exit_stages)]),
            # the whole head, no exit confident: every device exit evaluated (checks the parts add up)
            "head_ms": _columns([timer.stats(lambda i, s=s: run_head(model, xs[i % n], s, NEVER_CONFIDENT))
                                 for s in model.split_points()]),
        }
    out["encode_ms"] = {enc: _columns([timer.stats(lambda i, s=s, enc=enc: _encode(model_id, acts[s][i % n], s, enc))
                                       for s in splits]) for enc in encodings}
    out["bytes"] = {}
    for enc in encodings:
        sizes = [[len(_encode(model_id, acts[s][f], s, enc)) for f in range(n)] for s in splits]
        out["bytes"][enc] = {"median": [float(np.median(v)) for v in sizes],
                             "mean": [float(np.mean(v)) for v in sizes], "max": [float(max(v)) for v in sizes]}
    return out


def _measure_batch(model, batch: list, timer: _Timer) -> dict:
    """Stages, exit heads and whole tails (no early leave) on one batch per split point."""
    from ..core.model import decode_exit
    from ..core.progressive import run_tail

    n = model.num_stages
    stages = _columns([timer.stats(lambda i, k=k: model.run_stage(k, batch[k])) for k in range(n)])
    exits = _columns([timer.stats(lambda i, e=e, s=s: decode_exit(model.run_exit(e, batch[s + 1])))
                      for e, s in enumerate(model.exit_stages)])
    tails = _columns([timer.stats(lambda i, s=s: run_tail(model, batch[s], s, NEVER_CONFIDENT)) for s in range(n)])
    return {"stage_ms": stages, "exit_ms": exits, "tail_ms": tails,
            "batch_overhead_ms": _batch_overhead(model, stages, exits, tails)}


def _measure_decode(model, model_id: str, acts: list, timer: _Timer, encoding: str) -> dict:
    from ..core import codec

    shapes, n = codec.split_shapes(model), len(acts[0])
    wire = [[_encode(model_id, acts[s][f], s, encoding) for f in range(n)] for s in range(model.num_stages)]
    return _columns([timer.stats(lambda i, s=s: codec.decode_request(
        wire[s][i % n], expected_model_id=model_id, expected_shapes=shapes)) for s in range(model.num_stages)])


def measure_cloud(model, model_id: str, frames: np.ndarray, timer: _Timer, encodings: Sequence[str],
                  batch_sizes: Sequence[int]) -> dict:
    """The cloud's side: parts and whole tails at each batch size, and request decoding."""
    import torch

    from ..core.preprocess import to_model_input

    n = len(frames)
    acts = _activations(model, [to_model_input(f, model.spec.input_size) for f in frames])
    out = {"batch_sizes": list(batch_sizes), "stage_ms": {}, "exit_ms": {}, "tail_ms": {}, "batch_overhead_ms": {}}
    with torch.inference_mode():
        for b in batch_sizes:
            batch = [torch.cat([acts[s][i % n] for i in range(b)]) for s in range(model.num_stages + 1)]
            for key, value in _measure_batch(model, batch, timer).items():
                out[key][str(b)] = value
    out["decode_ms"] = {enc: _measure_decode(model, model_id, acts, timer, enc) for enc in encodings}
    return out


def _batch_overhead(model, stages: dict, exits: dict, tails: dict) -> dict:
    """Per split: whole tail - (its stages + its exit heads), clamped at 0 (timing noise)."""
    out = {}
    for stat in STATS:
        st, ex = np.asarray(stages[stat]), np.asarray(exits[stat])
        parts = [st[s:].sum() + ex[[e for e, es in enumerate(model.exit_stages) if es >= s]].sum()
                 for s in range(model.num_stages)]
        out[stat] = [round(max(0.0, t - p), 5) for t, p in zip(tails[stat], parts)]
    return out


# ---------------------------------------------------------------------------------
# The profile file
# ---------------------------------------------------------------------------------


def calibration_reference(ref: str, model_id: str, override: Path | None) -> dict | None:
    """{path, model_id} of the model's calibration; refuses one made for another model."""
    from ..core.calibration import load_calibration
    from ..core.checkpoint import calibration_path, checkpoint_path
    from ..core.model_ref import is_random_ref

    if override is not None:
        path = Path(override)
    elif is_random_ref(ref):
        return None
    else:
        path = calibration_path(checkpoint_path(ref))
    if not path.is_file():
        return {"path": str(path), "model_id": None}
    return {"path": str(path), "model_id": load_calibration(path, model_id).model_id}


def _machine(threads: int, model=None) -> dict:
    import torch

    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
               "torch_threads": threads}
    if getattr(model, "providers", None):         # the onnxruntime backend: which build and providers ran
        import onnxruntime

        machine.update(onnxruntime=onnxruntime.__version__, providers=list(model.providers))
    return machine


def build_profile(role: str, model, model_id: str, ref: str, *, host: str, settings: dict, calibration: dict | None,
                  measured: dict, threads: int) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "role": role,
        "model_id": model_id,
        "model_name": model.spec.name,
        "model_ref": ref,
        "host": host,
        "backend": backend_of(model),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": _machine(threads, model),
        "settings": settings,
        "num_stages": model.num_stages,
        "exit_stages": list(model.exit_stages),
        "input_size": model.spec.input_size,
        "split_shapes": [list(model.split_shape(s)) for s in model.split_points()],
        "calibration": calibration,
        role: measured,
    }


def _measurements(role: str, model, args) -> int:
    """Number of timed items (for the progress bar)."""
    n_enc, n, e = len(args.encodings), model.num_stages, model.num_exits
    if role == "device":
        return 1 + n + e + (n + 1) + n_enc * n
    return len(args.batch_sizes) * (n + e + n) + n_enc * n


def profile_role(role: str, args) -> dict:
    """Measure one role in this process (the worker side of ``spinn profile``)."""
    import torch
    from tqdm import tqdm

    from ..core.backend import staged_model
    from ..core.model_ref import load_model

    threads = 1 if role == "device" else args.cloud_threads
    torch.set_num_threads(threads)
    model, model_id = load_model(args.checkpoint)
    model = staged_model(model, model_id, args.backend, threads=threads, log=lambda msg: print(msg, file=sys.stderr))
    frames, source = input_frames(args.frames, model.spec.input_size, args.dataset)
    settings = {"runs": args.runs, "warmup": args.warmup, "frames": len(frames), "inputs": source,
                "torch_threads": threads, "encodings": list(args.encodings),
                # device times are scaled by the reader; see docs/scheduler.md for why not a CPU quota
                "time_scale": args.slowdown if role == "device" else 1.0}
    with tqdm(total=_measurements(role, model, args), desc=f"profile {role}", unit="item",
              disable=args.quiet, file=sys.stderr) as bar:
        timer = _Timer(args.runs, args.warmup, bar)
        if role == "device":
            measured = measure_device(model, model_id, frames, timer, args.encodings)
        else:
            measured = measure_cloud(model, model_id, frames, timer, args.encodings, args.batch_sizes)
    return build_profile(role, model, model_id, args.checkpoint, host=args.host, settings=settings,
                         calibration=calibration_reference(args.checkpoint, model_id, args.calibration),
                         measured=measured, threads=threads)


def add_hops(path: Path, model_id: str, args) -> None:
    """Measure the drone node's pass-through (tools/hops.py) and store it in the device profile at ``path``."""
    from .hops import measure_hops

    profile = load_profile(path, model_id, "device", args.backend)
    frames, source = input_frames(16, profile.data["input_size"], args.dataset)
    raw_preprocess_ms = profile.data["device"]["preprocess_ms"]["median"]      # as measured: no time_scale
    if not args.quiet:
        print(f"profile hops: {args.hop_frames} {source} frames through a drone node over ROS 2 ...", file=sys.stderr)
    profile.data["device"][HOPS] = measure_hops(args.checkpoint, frames, raw_preprocess_ms, n=args.hop_frames,
                                                backend=args.backend)
    save_profile(path, profile.data)


# ---------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spinn profile",
        description="Measure the head on the drone side (a fresh one-thread process, batch 1) and the tail on the "
                    "cloud side (batch sizes), bytes on the wire per split and encoding; write one versioned "
                    "profile per model, host and role for the scheduler.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--checkpoint", default="default", help="'default', a checkpoint path, or random:<size>:<seed>")
    ap.add_argument("--role", choices=(*ROLES, "both"), default="both", help="which side(s) to profile on this host")
    ap.add_argument("--runs", type=int, default=50, help="timed runs per measurement")
    ap.add_argument("--warmup", type=int, default=10, help="untimed runs before each measurement")
    ap.add_argument("--frames", type=int, default=16, help="input frames (bytes are their median)")
    ap.add_argument("--dataset", type=Path, default=Path("data/val.npz"),
                    help="simulator frames for realistic activations (procedural frames when missing)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES), help="cloud batch sizes")
    ap.add_argument("--encodings", nargs="+", default=list(WIRE_ENCODINGS), choices=WIRE_ENCODINGS, help="wire encodings")
    ap.add_argument("--cloud-threads", type=int, default=1, help="torch threads of the cloud (its torch_threads)")
    ap.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                    help="inference engine profiled (the drone's/cloud's 'backend'); recorded in the profile")
    ap.add_argument("--slowdown", type=float, default=1.0,
                    help="emulate a slower drone: device times are multiplied by this (recorded as time_scale)")
    ap.add_argument("--calibration", type=Path, default=None, help="calibration file (default: beside the checkpoint)")
    ap.add_argument("--host", default=host_name(), help=f"host name in the file name ('{REFERENCE_HOST}' for the "
                    "committed default)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where profiles go (default: the package's profiles/)")
    ap.add_argument("--hops", choices=HOP_CHOICES, default="measure",
                    help="the device profile's node pass-through (DDS in and out, hand-offs: a real drone node over "
                         "ROS 2): measure it after the compute, skip it, or only (re)measure it into the existing "
                         "device profile")
    ap.add_argument("--hop-frames", type=int, default=100, help="camera frames sent to the drone node for the hops")
    ap.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    ap.add_argument("--worker", choices=ROLES, help=argparse.SUPPRESS)      # internal: measure in this process
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return ap


def _check_args(args) -> str | None:
    if args.runs < 1 or args.warmup < 0 or args.frames < 1:
        return "--runs and --frames must be >= 1 and --warmup >= 0"
    if any(b < 1 for b in args.batch_sizes) or not 0.01 <= args.slowdown <= 1000:
        return "--batch-sizes must be >= 1 and --slowdown in [0.01, 1000]"
    if args.cloud_threads < 1:
        return "--cloud-threads must be >= 1"
    if args.hop_frames < 10:
        return "--hop-frames must be >= 10"
    if args.hops == "only" and args.role != "device":
        return "--hops only needs --role device (the hops belong to the device profile)"
    args.batch_sizes = sorted(set(args.batch_sizes))
    return None


def _worker_command(role: str, out: Path, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "spinn_ros.tools.profile", *argv, "--worker", role, "--worker-out", str(out)]


def _worker_env(role: str) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if role == "device":        # the drone's head runs on one thread: so do BLAS/OpenMP pools
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def _summary(path: Path, p: Profile) -> None:
    splits = range(p.num_stages)
    if p.role == "device":
        head = p.data["device"]["head_ms"]["median"]
        print(f"{path}: device, stages {np.round(p.stage_ms(), 3).tolist()} ms, exits "
              f"{np.round(p.exit_ms(), 3).tolist()} ms, whole head per split {np.round(head, 3).tolist()} ms")
        profiled = p.data["device"]["bytes"]
        enc = DEFAULT_WIRE_ENCODING if DEFAULT_WIRE_ENCODING in profiled else next(iter(profiled))
        print(f"  {enc} bytes per split {[int(b) for b in p.wire_bytes(enc)]}")
        if p.has_hops:
            hop_in, hop_out = p.hop_ms()
            print(f"  node pass-through per frame: in {hop_in:.2f} ms, out {hop_out:.2f} ms (median)")
    else:
        for b in p.batch_sizes:
            tails = np.asarray(p.data["cloud"]["tail_ms"][str(b)]["median"])
            print(f"{path}: cloud batch {b}: tail per split {[round(float(tails[s]), 3) for s in splits]} ms")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    problem = _check_args(args)
    if problem:
        print(f"spinn profile: {problem}", file=sys.stderr)
        return 2
    try:
        if args.worker:
            save_profile(args.worker_out, profile_role(args.worker, args))
            return 0
        from ..core.model_ref import load_model

        _, model_id = load_model(args.checkpoint)         # fail here, not in a worker, on a bad reference
        calibration_reference(args.checkpoint, model_id, args.calibration)
    except (OSError, ValueError) as e:
        print(f"spinn profile: {e}", file=sys.stderr)
        return 2
    roles = ROLES if args.role == "both" else (args.role,)
    for role in roles:
        out = default_profile_path(model_id, role, args.host, args.out_dir, args.backend)
        if args.hops != "only":
            # a fresh process per role: the device side runs as the drone does, unaffected by this one's threads
            done = subprocess.run(_worker_command(role, out, argv), env=_worker_env(role))
            if done.returncode != 0:
                print(f"spinn profile: the {role} worker failed (exit {done.returncode})", file=sys.stderr)
                return 1
        if role == "device" and args.hops != "skip":
            try:
                add_hops(out, model_id, args)
            except (OSError, ValueError, RuntimeError, TimeoutError) as e:
                print(f"spinn profile: measuring the hops into {out} failed: {e}", file=sys.stderr)
                return 1
        if not args.quiet:
            _summary(out, load_profile(out, model_id, role, args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
