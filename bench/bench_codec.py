"""Wire-format benchmark: bytes on the wire and codec time per split point, and the
decision cost of 8-bit quantisation.

For every split a cloud tail can serve, the activation crossing it (from real frames
through the model's head) is framed as f32, f16, u8+lz4 and u8+zstd (and the raw
rgb8 frame at split 0, the cloud-only baseline); each frame is timed through
``encode_request`` and ``decode_request``. Quantisation cost: the tail runs on the
decoded u8 activations and the policy's decision (collision class at the exit that
answers) is compared with full precision, and with labels when ``--data`` has them.

    python bench/bench_codec.py                       # seeded random models
    python bench/bench_codec.py --checkpoint spinn_ros/models/small.pt --data data/test.npz

The helpers above ``main`` (frames, reference pass, tail, policy, wire round trip)
are also what ``test/unit/test_codec.py`` checks the codec with.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from spinn_ros.core import codec
from spinn_ros.core.codec import Codec, Dtype
from spinn_ros.core.model import EarlyExitNet
from spinn_ros.testing.bench_io import print_table, results_dir, summary_ms, write_json
from spinn_ros.testing.frames import labelled_frames, load_dataset
from spinn_ros.testing.models import (
    as_rgb8,
    load_model,
    model_input,
    policy_decisions,
    reference_pass,
    run_tail,
    split_exits,
    wire_roundtrip,
)

#: label -> (dtype, codec) of the configurations compared at every split
CONFIGS: dict[str, tuple[Dtype, Codec]] = {
    "f32": (Dtype.F32, Codec.NONE),
    "f16": (Dtype.F16, Codec.NONE),
    "u8+lz4": (Dtype.U8, Codec.LZ4),
    "u8+zstd": (Dtype.U8, Codec.ZSTD),
}
#: split 0 only: the cloud-only baseline ships the camera frame itself
FRAME_CONFIGS: dict[str, tuple[Dtype, Codec]] = {
    "frame": (Dtype.FRAME, Codec.NONE), "frame+lz4": (Dtype.FRAME, Codec.LZ4), "frame+zstd": (Dtype.FRAME, Codec.ZSTD),
}


# -- benchmark ------------------------------------------------------------------------
def bench_model(net: EarlyExitNet, model_id: str, frames: np.ndarray, labels, threshold: float,
                repeats: int) -> tuple[list[dict], list[dict]]:
    x = model_input(frames, net)
    ref = reference_pass(net, x)
    _, ref_class = policy_decisions(ref.exits, threshold)
    shapes = codec.split_shapes(net)
    wire_rows, acc_rows = [], []
    for split, shape in shapes.items():
        configs = {**(FRAME_CONFIGS if split == 0 else {}), **CONFIGS}
        for label, (dtype, cdc) in configs.items():
            source = as_rgb8(x) if dtype is Dtype.FRAME else ref.crossing[split]
            sizes, enc_s, dec_s = [], [], []
            for _ in range(repeats):
                decoded, sizes, e, d = wire_roundtrip(source, split, dtype, cdc, model_id, shapes)
                enc_s += e
                dec_s += d
            enc, dec = summary_ms(enc_s), summary_ms(dec_s)
            wire_rows.append({
                "model": net.spec.name, "split": split, "shape": "x".join(map(str, shape)), "config": label,
                "bytes": float(np.mean(sizes)), "ratio_vs_f32": float(np.mean(sizes)) / (4 * np.prod(shape)),
                "enc_med_ms": enc["median_ms"], "enc_p99_ms": enc["p99_ms"],
                "dec_med_ms": dec["median_ms"], "dec_p99_ms": dec["p99_ms"],
            })
            if (dtype, cdc) == CONFIGS["u8+lz4"]:
                _, q_class = policy_decisions(split_exits(net, ref, run_tail(net, decoded, split), split), threshold)
                acc_rows.append(accuracy_row(net.spec.name, split, ref_class, q_class, labels))
    return wire_rows, acc_rows


def accuracy_row(model: str, split: int, ref_class, q_class, labels) -> dict:
    row = {"model": model, "split": split, "agreement_pct": 100.0 * (ref_class == q_class).float().mean().item()}
    if labels is not None:
        y = torch.as_tensor(labels).long()
        row["acc_f32_pct"] = 100.0 * (ref_class == y).float().mean().item()
        row["acc_u8_pct"] = 100.0 * (q_class == y).float().mean().item()
        row["acc_cost_points"] = row["acc_f32_pct"] - row["acc_u8_pct"]
    return row


def plot_bytes(rows: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only the benchmark needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        for config in dict.fromkeys(r["config"] for r in rows if r["model"] == model):
            pts = [(r["split"], r["bytes"]) for r in rows if r["model"] == model and r["config"] == config]
            single = len(pts) == 1          # the frame configs exist at split 0 only
            ax.plot(*zip(*pts), marker="*" if single else "o", markersize=12 if single else 6, label=config)
        ax.set(title=f"{model}: bytes on the wire per request", xlabel="split point", ylabel="bytes", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["small", "large"], help="model sizes (seeded random models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="trained checkpoint (replaces --sizes)")
    p.add_argument("--data", help="a dataset split (spinn gen-data) to measure on, with its labels")
    p.add_argument("--frames", type=int, default=200, help="frames per split")
    p.add_argument("--repeats", type=int, default=2, help="timing passes over the frames")
    p.add_argument("--threshold", type=float, default=0.8, help="exit confidence threshold of the policy")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    wire_rows, acc_rows = [], []
    for size in [None] if args.checkpoint else args.sizes:
        net, model_id = load_model(size, args.seed, args.checkpoint)
        if args.data:
            frames, labels = load_dataset(args.data, args.frames)
        else:
            frames, labels = labelled_frames(args.frames, net.spec.input_size, args.seed)
        w, a = bench_model(net, model_id, frames, labels, args.threshold, args.repeats)
        wire_rows += w
        acc_rows += a
    print_table(wire_rows, title="bytes on the wire and codec time per request (one frame)")
    print_table(acc_rows, title=f"8-bit quantisation (u8+lz4) vs f32: policy decisions at threshold {args.threshold}")
    write_json("codec", {"args": vars(args), "wire": wire_rows, "quantisation": acc_rows})
    plot_bytes(wire_rows, results_dir() / "codec_bytes.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
