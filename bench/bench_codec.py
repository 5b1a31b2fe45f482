"""Wire-format benchmark: bytes on the wire and codec time per split point, and the
decision cost of 8-bit quantisation.

For every split a cloud tail can serve, the activation crossing it (from real frames
through the model's head) is framed as f32, f16, u8+lz4 and u8+zstd (and the raw
rgb8 frame at split 0, the cloud-only baseline); each frame is timed through
``encode_request`` and ``decode_request``. Quantisation cost: the tail runs on the
decoded u8 activations and the policy's decision (collision class at the exit that
answers) is compared with full precision, and with labels when ``--data`` has them.

    python -m bench.bench_codec                       # seeded random models
    python -m bench.bench_codec --checkpoint spinn_ros/models/small.pt --data data/test.npz

The helpers above ``main`` (frames, reference pass, tail, policy, wire round trip)
are also what ``test/test_codec.py`` checks the codec with.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.common import print_table, results_dir, summary_ms, write_json
from spinn_ros.core import codec
from spinn_ros.core.codec import Codec, Dtype
from spinn_ros.core.model import EarlyExitNet, build_model, decode_exit
from spinn_ros.core.preprocess import to_model_input

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


# -- inputs ---------------------------------------------------------------------------
def procedural_frames(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(frames, collision labels): (n, size, size, 3) uint8 rgb8 scenes with natural-image
    statistics, a stand-in until the simulator's dataset exists. A sky/ground split at a
    random horizon, 1/f ("pink") texture, 0..3 flat-shaded box obstacles (near = large)
    and sensor noise; the label is 1 when boxes cover over a third of the central window
    the drone flies into."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    falloff = 1.0 / torch.clamp(torch.hypot(fy, fx), min=1.0 / size)
    texture = torch.fft.irfft2(torch.fft.rfft2(torch.randn(n, size, size, generator=gen)) * falloff, s=(size, size))
    texture = (texture / texture.std(dim=(1, 2), keepdim=True)).numpy()[..., None]

    rows = np.arange(size, dtype=np.float32)[None, :, None, None]
    horizon = rng.uniform(0.3, 0.7, (n, 1, 1, 1)).astype(np.float32) * size
    sky = rng.uniform(0.4, 0.9, (n, 1, 1, 3)).astype(np.float32)
    ground = rng.uniform(0.1, 0.5, (n, 1, 1, 3)).astype(np.float32)
    img = np.where(rows < horizon, sky, ground) + 0.08 * texture
    covered = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(0, 4)):
            h, w = (rng.uniform(0.1, 0.8, 2) * size).astype(int) + 1
            top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
            box = (slice(top, top + h), slice(left, left + w))
            img[i][box] = rng.uniform(0.0, 1.0, 3).astype(np.float32) * (1 + 0.1 * texture[i][box])
            covered[i][box] = True
    img += 0.02 * torch.randn(img.shape, generator=gen).numpy()
    centre = covered[:, size // 4 : 3 * size // 4, size // 3 : 2 * size // 3]
    labels = (centre.mean(axis=(1, 2)) > 1 / 3).astype(np.int64)
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8), labels


def load_dataset(path: str | Path, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 NxSxSx3, collision labels) of a split written by ``spinn gen-data``."""
    from spinn_ros.sim.dataset import load_dataset as load  # noqa: PLC0415 - only with --data

    data = load(path)
    return data.images[:n], data.collision[:n].astype(np.int64)


def calibrate_random(net: EarlyExitNet, x: torch.Tensor, labels) -> EarlyExitNet:
    """Make a seeded random model a statistical stand-in for a trained one: BatchNorm
    statistics measured on ``x`` (realistic activation scales) and each exit's collision
    readout fitted to ``labels`` by ridge regression on its hidden layer (random
    features, trained readout), so decisions depend on the scene with trained-like
    margins rather than all agreeing trivially."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None           # cumulative average over the calibration pass
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()
    for m in bns:
        m.momentum = 0.1
    hidden = []
    hooks = [head.fc1.register_forward_hook(lambda m, i, o: hidden.append(torch.relu(o))) for head in net.exits]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    target = torch.as_tensor(labels, dtype=torch.float32) * 8.0 - 4.0      # +-4 logits of margin
    with torch.no_grad():
        for head, h in zip(net.exits, hidden):
            h1 = torch.cat([h, torch.ones(len(h), 1)], dim=1)
            gram = h1.T @ h1
            ridge = 1e-2 * gram.diagonal().mean() * torch.eye(len(gram))
            w = torch.linalg.solve(gram + ridge, h1.T @ target)
            head.fc2.weight[:2] = torch.stack([-w[:-1], w[:-1]]) / 2    # margin = logit1 - logit0
            head.fc2.bias[:2] = torch.stack([-w[-1], w[-1]]) / 2
    return net


def stand_in_model(size: str, seed: int = 0, calibration_frames: int = 256) -> tuple[EarlyExitNet, str]:
    """A seeded random model calibrated on its own procedural frames (disjoint from any
    evaluation frames), and its model id."""
    net = build_model(size, seed=seed)
    frames, labels = procedural_frames(calibration_frames, net.spec.input_size, seed=10_000 + seed)
    calibrate_random(net, model_input(frames, net), labels)
    return net, f"random-{size}-seed{seed}"


def load_model(size: str | None, seed: int, checkpoint: str | None) -> tuple[EarlyExitNet, str]:
    """(model, model id): the trained checkpoint when given, else :func:`stand_in_model`."""
    if checkpoint:
        from spinn_ros.core.checkpoint import load_checkpoint  # noqa: PLC0415 - only with --checkpoint

        net, meta = load_checkpoint(checkpoint)
        return net, meta["model_id"]
    return stand_in_model(size, seed)


def model_input(frames: np.ndarray, net: EarlyExitNet) -> torch.Tensor:
    return to_model_input(frames, net.spec.input_size)


def as_rgb8(x: torch.Tensor) -> np.ndarray:
    """Model input (B, 3, S, S) in [0, 1] -> the (B, S, S, 3) rgb8 frames a drone would
    send for the cloud-only baseline (exactly the frames, when they were S x S)."""
    return x.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# -- running the model in pieces -----------------------------------------------------
@dataclass
class Reference:
    """One full-precision pass: the tensor crossing every split and every exit's output."""

    crossing: list[torch.Tensor]   # crossing[s]: input of stage s (crossing[0] is the model input)
    exits: list[torch.Tensor]      # raw output of every exit


def reference_pass(net: EarlyExitNet, x: torch.Tensor) -> Reference:
    crossing, exits = [x], []
    with torch.no_grad():
        for stage in range(net.num_stages):
            x = net.run_stage(stage, x)
            crossing.append(x)
            e = net.exit_index_at(stage)
            if e is not None:
                exits.append(net.run_exit(e, x))
    return Reference(crossing, exits)


def run_tail(net: EarlyExitNet, x: torch.Tensor, split: int) -> list[torch.Tensor]:
    """Raw outputs of the exits after ``split``, running stages ``[split, N)`` on ``x``."""
    outs = []
    with torch.no_grad():
        for stage in range(split, net.num_stages):
            x = net.run_stage(stage, x)
            e = net.exit_index_at(stage)
            if e is not None:
                outs.append(net.run_exit(e, x))
    return outs


def split_exits(net: EarlyExitNet, ref: Reference, tail: list[torch.Tensor], split: int) -> list[torch.Tensor]:
    """Every exit's output when the head runs on the device and ``tail`` in the cloud."""
    return ref.exits[: len(net.exits_in(0, split))] + tail


def policy_decisions(exits: list[torch.Tensor], threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(answering exit, collision class) per frame: SPINN's rule as
    ``spinn_ros.core.progressive`` applies it (the first exit whose confidence reaches
    ``threshold``, else the final exit), vectorised over a batch of all exits' outputs."""
    decoded = [decode_exit(o) for o in exits]
    conf = torch.stack([d.confidence for d in decoded], dim=1)
    reached = conf.double() >= threshold
    reached[:, -1] = True
    answer = reached.float().argmax(dim=1)     # first True
    prob = torch.stack([d.collision_prob for d in decoded], dim=1)
    return answer, (prob.gather(1, answer[:, None])[:, 0] > 0.5).long()


def wire_roundtrip(activations, split: int, dtype: Dtype, cdc: Codec, model_id: str,
                   shapes: dict) -> tuple[torch.Tensor, list[int], list[float], list[float]]:
    """Send each sample of ``activations`` (a batch, or uint8 frames for FRAME) through
    encode -> decode; return the decoded batch, frame sizes and per-call seconds."""
    out, sizes, enc_s, dec_s = [], [], [], []
    for i, a in enumerate(activations):
        t0 = time.perf_counter()
        frame = codec.encode_request(a, request_id=i, model_id=model_id, split=split, exit_threshold=0.9,
                                     dtype=dtype, codec=cdc)
        t1 = time.perf_counter()
        req = codec.decode_request(frame, expected_model_id=model_id, expected_shapes=shapes)
        t2 = time.perf_counter()
        out.append(req.tensor)
        sizes.append(len(frame))
        enc_s.append(t1 - t0)
        dec_s.append(t2 - t1)
    return torch.stack(out), sizes, enc_s, dec_s


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
            frames, labels = procedural_frames(args.frames, net.spec.input_size, args.seed)
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
