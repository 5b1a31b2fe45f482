"""Progressive joint training of the early-exit network (``spinn train``).

Phase 1 trains the backbone with the final exit only, so the backbone learns the
task undisturbed. Phase 2 attaches every exit and trains them jointly with the
backbone, exit ``e`` weighted by ``EXIT_WEIGHT_FLOOR + (1 - floor) * f_e`` where ``f_e``
is the share of backbone MACs before it (the final exit gets 1): deeper exits carry
more of the loss so the early ones, which see weak features, cannot pull the shared
backbone away from what the final exit needs (the "overthinking"/SDN weighting),
while the floor keeps the shallow exits trained well enough to answer easy frames.

Each exit's loss = collision cross-entropy + ``STEER_BIN_WEIGHT`` x steering-bin
cross-entropy + ``STEER_WEIGHT`` x L1 steering error. Collision dominates because it
is SPINN's confidence signal; steering bins regularise the head.

Everything random (init, shuffling, augmentation) derives from ``--seed`` and the
epoch number, so a run resumed from its per-epoch state ends identical to an
uninterrupted one.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..core.checkpoint import calibration_path, save_checkpoint
from ..core.model import SPECS, EarlyExitNet, build_model
from ..core.preprocess import to_model_input
from .common import check_frames, collision_metrics, dataset_summary, exit_outputs, load_split

STEER_BIN_WEIGHT = 0.25
STEER_WEIGHT = 1.0
EXIT_WEIGHT_FLOOR = 0.3
STATE_FILE = "train_state.pt"


def exit_weights(model: EarlyExitNet) -> list[float]:
    total = sum(model.stage_macs)
    fracs = [sum(model.stage_macs[: s + 1]) / total for s in model.exit_stages]
    return [EXIT_WEIGHT_FLOOR + (1 - EXIT_WEIGHT_FLOOR) * f for f in fracs[:-1]] + [1.0]


def steering_bin(steering: torch.Tensor, bins: int) -> torch.Tensor:
    """Uniform bins over [-1, 1]; symmetric, so a mirrored frame lands in the mirrored bin."""
    return ((steering + 1) / 2 * bins).floor().clamp_(0, bins - 1).long()


def exit_loss(raw: torch.Tensor, collision: torch.Tensor, steering: torch.Tensor, bins: int) -> torch.Tensor:
    return (
        F.cross_entropy(raw[:, :2], collision)
        + STEER_BIN_WEIGHT * F.cross_entropy(raw[:, 2:-1], steering_bin(steering, bins))
        + STEER_WEIGHT * F.l1_loss(raw[:, -1], steering)
    )


def augment(x: torch.Tensor, steering: torch.Tensor, gen: torch.Generator):
    """Random horizontal flip (steering negated) and mild brightness/contrast/colour jitter."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    steering = torch.where(flip, -steering, steering)
    gain = 1 + 0.25 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    colour = 1 + 0.1 * (torch.rand(b, 3, 1, 1, generator=gen) - 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + 0.3 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    x = ((x - mean) * contrast + mean) * gain * colour
    return x.clamp_(0, 1), steering


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 (stateless, so resuming needs no scheduler state)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def phase_of(epoch: int, epochs1: int) -> int:
    return 1 if epoch < epochs1 else 2


def train_epoch(model, opt, data, epoch: int, args, weights: list[float]) -> dict:
    from tqdm import tqdm

    phase = phase_of(epoch, args.epochs1)
    first, length = (0, args.epochs1) if phase == 1 else (args.epochs1, args.epochs2)
    steps_per_epoch = math.ceil(len(data) / args.batch)
    peak = args.lr if phase == 1 else args.lr * args.phase2_lr_scale
    gen = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
    order = torch.randperm(len(data), generator=gen).numpy()
    collision_all = torch.from_numpy(data.collision.astype(np.int64))
    steering_all = torch.from_numpy(data.steering.astype(np.float32))
    bins = model.spec.steering_bins
    model.train()
    sums = {"loss": 0.0, "acc": 0.0, "n": 0}
    bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs1 + args.epochs2} (phase {phase})",
               unit="batch", disable=args.quiet, leave=False)
    for i in bar:
        step = (epoch - first) * steps_per_epoch + i
        for g in opt.param_groups:
            g["lr"] = lr_at(step, length * steps_per_epoch, peak, warmup=steps_per_epoch // 2)
        idx = np.sort(order[i * args.batch: (i + 1) * args.batch])   # sorted: contiguous-ish memory reads
        x, steer = augment(to_model_input(data.images[idx], model.spec.input_size), steering_all[idx], gen)
        coll = collision_all[idx]
        outs = model(x)
        if phase == 1:
            loss = exit_loss(outs[-1], coll, steer, bins)
        else:
            loss = sum(w * exit_loss(o, coll, steer, bins) for w, o in zip(weights, outs)) / sum(weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n = len(idx)
        sums["loss"] += loss.item() * n
        sums["acc"] += (outs[-1][:, :2].argmax(1) == coll).float().sum().item()
        sums["n"] += n
        bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.3f}", acc=f"{sums['acc'] / sums['n']:.3f}")
    return {"epoch": epoch + 1, "phase": phase, "loss": sums["loss"] / sums["n"], "train_acc": sums["acc"] / sums["n"]}


def validate(model, val) -> dict:
    out = exit_outputs(model, val.images)
    metrics = [collision_metrics(p, val.collision) for p in out["prediction"]]
    return {
        "val_balanced_accuracy": [round(m["balanced_accuracy"], 4) for m in metrics],
        "val_steering_error": [round(float(v), 4) for v in np.abs(out["steering"] - val.steering[None]).mean(1)],
    }


def save_state(path: Path, model, opt, epoch: int, history: list, args) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                "history": history, "args": vars(args) | {"data": str(args.data), "out": str(args.out)}}, tmp)
    tmp.replace(path)


def load_state(path: Path, model, opt, args) -> tuple[int, list]:
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no training state at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = {k: state["args"].get(k) for k in ("model", "seed", "epochs1", "epochs2", "batch", "lr", "limit",
                                                "exclude_family")}
    now = {k: getattr(args, k) for k in saved}
    if saved != now:
        raise ValueError(f"--resume: {path} was written with {saved}, this run asks for {now}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return state["epoch"], state["history"]


def subset(data, limit: int | None = None, exclude_families: tuple[str, ...] = ()):
    """The first ``limit`` frames, without the frames of ``exclude_families`` (leave-one-family-out)."""
    import dataclasses

    from ..sim.dataset import ARRAYS

    keep = np.ones(len(data), bool)
    if exclude_families:
        names = data.manifest["family_names"]
        unknown = set(exclude_families) - set(names)
        if unknown:
            raise ValueError(f"--exclude-family: unknown {sorted(unknown)}; families are {', '.join(names)}")
        keep &= ~np.isin(data.family, [names.index(f) for f in exclude_families])
    if limit:
        keep &= np.cumsum(keep) <= limit
    if keep.all():
        return data
    return dataclasses.replace(data, **{k: getattr(data, k)[keep] for k in ARRAYS})


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spinn train",
        description="Train the early-exit network on a dataset from 'spinn gen-data': phase 1 backbone + final exit, "
                    "phase 2 all exits jointly (weighted losses). Writes <out>/model.pt, resumable state "
                    f"<out>/{STATE_FILE}, and (unless --no-calibrate) <out>/model.calib.json from the calib split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--data", type=Path, default=Path("data"), help="folder with train.npz, val.npz, calib.npz")
    ap.add_argument("--out", type=Path, default=Path("runs/small"), help="output folder")
    ap.add_argument("--model", choices=sorted(SPECS), default="small", help="model size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs1", type=int, default=5, help="phase-1 epochs (backbone + final exit)")
    ap.add_argument("--epochs2", type=int, default=5, help="phase-2 epochs (all exits jointly)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate of phase 1")
    ap.add_argument("--phase2-lr-scale", type=float, default=0.5, help="phase-2 peak lr = lr x this")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for this run")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training frames (smoke tests)")
    ap.add_argument("--exclude-family", action="append", default=[], metavar="FAMILY",
                    help="leave this scene family's frames out of training and validation (repeatable; "
                         "leave-one-family-out runs, docs/model.md)")
    ap.add_argument("--resume", action="store_true", help=f"continue from <out>/{STATE_FILE}")
    ap.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                    help="stop once this many epochs are done in total (continue later with --resume)")
    ap.add_argument("--no-calibrate", action="store_true", help="skip calibration on the calib split")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if min(args.epochs1, args.epochs2) < 0 or args.epochs1 + args.epochs2 == 0 or args.batch < 1:
        print("spinn train: epochs must be >= 0 (not both 0) and --batch >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    model = build_model(args.model, seed=args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    state_path = args.out / STATE_FILE
    try:
        excluded = tuple(args.exclude_family)
        train_set = subset(load_split(args.data, "train"), args.limit, excluded)
        val = subset(load_split(args.data, "val"), None, excluded)
        for name, d in (("train", train_set), ("val", val)):
            check_frames(model, d.images, f"{name} split")
        start_epoch, history = load_state(state_path, model, opt, args) if args.resume else (0, [])
    except (FileNotFoundError, ValueError) as e:
        print(f"spinn train: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    weights = exit_weights(model)
    print(f"model {args.model}: {model.total_macs() / 1e6:.1f} MMACs, exits after stages {model.exit_stages}, "
          f"phase-2 exit weights {[round(w, 2) for w in weights]}; {len(train_set)} training frames")
    t0 = time.time()
    stop = args.epochs1 + args.epochs2 if args.stop_after is None else min(args.stop_after, args.epochs1 + args.epochs2)
    for epoch in range(start_epoch, stop):
        record = train_epoch(model, opt, train_set, epoch, args, weights) | validate(model, val)
        record["seconds"] = round(time.time() - t0, 1)
        history.append(record)
        print(json.dumps(record))
        save_state(state_path, model, opt, epoch + 1, history, args)
    if stop < args.epochs1 + args.epochs2:
        print(f"stopped after epoch {stop}; continue with --resume")
        return 0
    meta = {
        "command": "spinn train " + shlex.join(argv),
        "seed": args.seed,
        "epochs": [args.epochs1, args.epochs2],
        "train_data": dataset_summary(train_set) | {"frames_used": len(train_set),
                                                    "excluded_families": list(args.exclude_family)},
        "history": history,
        "torch": torch.__version__,
    }
    ckpt = args.out / "model.pt"
    mid = save_checkpoint(ckpt, model, meta)
    print(f"wrote {ckpt} (model id {mid}) after {time.time() - t0:.0f} s")
    if not args.no_calibrate:
        from .calibrate import calibrate_checkpoint

        calibrate_checkpoint(ckpt, args.data, calibration_path(ckpt), progress=not args.quiet)
    return 0
