"""Offload path benchmark: round trip per split against its floor, and cloud
throughput against batch size, through a real cloud server process over Zenoh
on loopback (shared memory off, so bytes really cross TCP).

  round trip   head compute (this process, 1 thread) + encode + Zenoh query to the
               cloud + decode + tail (cloud, batch 1) + reply, per split point
  floor        head compute + bytes / loopback bandwidth + tail compute: what the
               same work costs with a perfect transport and codec
  throughput   requests per second the cloud completes when K concurrent senders
               keep it busy, for max batch 1, 2, 4, 8, 16

    .venv/bin/python bench/bench_offload.py [--checkpoint default] [--frames 60]
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np
import torch

from spinn_ros.core import codec
from spinn_ros.core.model_ref import load_model
from spinn_ros.core.preprocess import to_model_input
from spinn_ros.core.progressive import run_head
from spinn_ros.testing.bench_io import print_table, results_dir, summary_ms, write_json
from spinn_ros.testing.cloud import cloud_link, round_trip
from spinn_ros.testing.frames import scene_frames
from spinn_ros.transport.zenoh_link import DroneLink

LOOPBACK_BYTES_PER_S = 550e6   # pipelined Zenoh puts over loopback, measured here (shared notes)


def request_frame(model, model_id: str, split: int, x: torch.Tensor, rid: int) -> tuple[bytes, float]:
    """(wire frame, head seconds) for one frame at ``split``, as the drone node builds it."""
    head = run_head(model, x, split, 1.0, offload=True)   # threshold 1: never exit early, always offload
    dtype, payload = codec.wire_payload(head.activation, split, codec.Dtype.U8)
    return codec.encode_request(payload, request_id=rid, model_id=model_id, split=split, exit_threshold=1.0,
                                dtype=dtype), head.compute_s


def bench_round_trips(ref: str, n: int) -> list[dict]:
    model, model_id = load_model(ref)
    xs = [to_model_input(f, model.spec.input_size) for f in scene_frames(n)]
    rows = []
    with cloud_link(ref, max_batch=1, max_wait_ms=0.0) as link:
        for split in range(model.num_stages):
            head_s, enc_s, rtt_s, tail_ms, sizes = [], [], [], [], []
            for i, x in enumerate(xs):
                t0 = time.perf_counter()
                frame, h = request_frame(model, model_id, split, x, i + 1)
                enc_s.append(time.perf_counter() - t0 - h)
                rtt, reply = round_trip(link, frame)
                if i < 5:
                    continue   # warm-up: first tails allocate
                head_s.append(h)
                rtt_s.append(rtt)
                tail_ms.append(reply.compute_ms)
                sizes.append(len(frame))
            head = summary_ms(head_s)["median_ms"]
            e2e = [h + e + r for h, e, r in zip(head_s, enc_s[5:], rtt_s)]
            floor_ms = head + float(np.median(tail_ms)) + float(np.mean(sizes)) / LOOPBACK_BYTES_PER_S * 1e3
            med = summary_ms(e2e)["median_ms"]
            rows.append({"split": split, "shape": "x".join(map(str, model.split_shape(split))),
                         "bytes": int(np.mean(sizes)), "head_ms": head, "tail_ms": float(np.median(tail_ms)),
                         "e2e_p50_ms": med, "e2e_p95_ms": summary_ms(e2e)["p95_ms"], "floor_ms": floor_ms,
                         "overhead_ms": med - floor_ms, "e2e_over_floor": med / floor_ms})
            print(f"  split {split}: {rows[-1]['e2e_p50_ms']:.1f} ms (floor {floor_ms:.1f})", flush=True)
    return rows


def flood(link: DroneLink, payloads: list[bytes], requests: int, window: int) -> tuple[list, float]:
    """Send ``requests`` frames keeping ``window`` outstanding (like that many drones); (replies, seconds)."""
    replies: list = []
    slots = threading.Semaphore(window)
    done = threading.Event()

    def on_done(payload, why):
        replies.append(payload)
        slots.release()
        if len(replies) >= requests:
            done.set()

    t0 = time.perf_counter()
    for i in range(requests):
        slots.acquire()
        link.request(payloads[i % len(payloads)], 10.0, on_done)
    done.wait(120)
    return replies, time.perf_counter() - t0


def bench_throughput(ref: str, split: int, batches: list[int], requests: int, window: int) -> list[dict]:
    model, model_id = load_model(ref)
    xs = [to_model_input(f, model.spec.input_size) for f in scene_frames(16, seed=1)]
    payloads = [request_frame(model, model_id, split, x, i + 1)[0] for i, x in enumerate(xs)]
    rows = []
    for b in batches:
        with cloud_link(ref, max_batch=b, max_wait_ms=5.0) as link:
            replies, elapsed = flood(link, payloads, requests, window)
            decoded = [codec.decode_reply(p) for p in replies if p is not None]
            ok = [r for r in decoded if isinstance(r, codec.Reply)]
            rows.append({"max_batch": b, "requests": requests, "ok": len(ok), "throughput_fps": len(ok) / elapsed,
                         "mean_batch": float(np.mean([r.batch_size for r in ok])),
                         "server_ms_per_frame": float(np.mean([r.compute_ms for r in ok]))})
            print(f"  max batch {b}: {rows[-1]['throughput_fps']:.0f} frames/s", flush=True)
    return rows


def plot(rt: list[dict], tp: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    splits = [r["split"] for r in rt]
    a.plot(splits, [r["e2e_p50_ms"] for r in rt], "o-", label="round trip p50")
    a.plot(splits, [r["floor_ms"] for r in rt], "s--", label="floor (head + bytes/BW + tail)")
    a.set_xlabel("split point")
    a.set_ylabel("ms")
    a.legend()
    a.set_title("offload round trip on loopback")
    b.plot([r["max_batch"] for r in tp], [r["throughput_fps"] for r in tp], "o-")
    b.set_xscale("log", base=2)
    b.set_xlabel("max batch")
    b.set_ylabel("frames / s")
    b.set_title("cloud throughput")
    fig.tight_layout()
    fig.savefig(results_dir() / "offload.png", dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--frames", type=int, default=60, help="frames per split for round trips")
    ap.add_argument("--throughput-split", type=int, default=1)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--window", type=int, default=16, help="requests in flight during the throughput run")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    opts = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("round trip per split ...", flush=True)
    rt = bench_round_trips(opts.checkpoint, opts.frames)
    print_table(rt, ["split", "shape", "bytes", "head_ms", "tail_ms", "e2e_p50_ms", "e2e_p95_ms", "floor_ms",
                     "overhead_ms", "e2e_over_floor"], title=f"offload round trip, loopback ({opts.checkpoint})")
    print(f"cloud throughput at split {opts.throughput_split} ...", flush=True)
    tp = bench_throughput(opts.checkpoint, opts.throughput_split, opts.batches, opts.requests, opts.window)
    print_table(tp, ["max_batch", "requests", "ok", "throughput_fps", "mean_batch", "server_ms_per_frame"],
                title="cloud throughput versus batch size (one server thread)")
    write_json("offload", {"checkpoint": opts.checkpoint, "round_trip": rt, "throughput": tp,
                           "throughput_split": opts.throughput_split})
    plot(rt, tp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
