"""Shared by train / calibrate / evaluate: batches, every exit's outputs, metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.calibration import balanced_accuracy, build_calibration
from ..core.model import EarlyExitNet, decode_exit
from ..core.preprocess import to_model_input


def add_checkpoint_data_args(ap, split: str, split_help: str | None = None) -> None:
    """The options every command that runs a checkpoint over a dataset split shares."""
    from ..core.checkpoint import checkpoint_path

    ap.add_argument("--checkpoint", type=checkpoint_path, default="default",
                    help="model checkpoint: 'default' (the shipped model) or a path")
    ap.add_argument("--data", type=Path, default=Path("data"), help="dataset folder (or a .npz file)")
    ap.add_argument("--split", default=split, help=split_help)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true")


def split_path(data: Path, split: str) -> Path:
    """``data`` is a folder holding ``<split>.npz`` or a .npz file itself."""
    data = Path(data)
    return data if data.suffix == ".npz" else data / f"{split}.npz"


def load_split(data: Path, split: str):
    from ..sim.dataset import load_dataset

    return load_dataset(split_path(data, split))


def check_frames(model: EarlyExitNet, images: np.ndarray, source) -> None:
    """Refuse a dataset rendered at another size than the model's input (no silent resize)."""
    size = model.spec.input_size
    if images.shape[1:3] != (size, size):
        raise ValueError(f"{source}: frames are {images.shape[2]}x{images.shape[1]}, "
                         f"model '{model.spec.name}' was built for {size}x{size} (regenerate with --size {size})")


@torch.no_grad()
def exit_outputs(model: EarlyExitNet, images: np.ndarray, batch: int = 256, progress: bool = False) -> dict[str, np.ndarray]:
    """Every exit's decoded outputs for uint8 frames: arrays of shape (num_exits, N)."""
    from tqdm import tqdm

    model.eval()
    parts = {"collision_prob": [], "confidence": [], "steering": []}
    for i in tqdm(range(0, len(images), batch), desc="inference", unit="batch", disable=not progress):
        x = to_model_input(images[i: i + batch], model.spec.input_size)
        outs = [decode_exit(raw) for raw in model(x)]
        for key in parts:
            parts[key].append(torch.stack([getattr(o, key) for o in outs]).numpy())
    out = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
    out["prediction"] = (out["collision_prob"] > 0.5).astype(np.uint8)
    return out


def collision_metrics(pred, label) -> dict[str, float]:
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    tp, fp, fn = (pred & label).sum(), (pred & ~label).sum(), (~pred & label).sum()
    return {
        "accuracy": float((pred == label).mean()),
        "balanced_accuracy": balanced_accuracy(pred, label),
        "f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0,
    }


def calibration_from_outputs(model: EarlyExitNet, model_id: str, outputs: dict, dataset, extra: dict | None = None) -> dict:
    """Run the calibration builder on precomputed exit outputs for ``dataset``."""
    return build_calibration(
        confidences=outputs["confidence"],
        predictions=outputs["prediction"],
        labels=dataset.collision,
        steering_errors=np.abs(outputs["steering"] - dataset.steering[None]),
        exit_stages=model.exit_stages,
        stage_macs=model.stage_macs,
        exit_head_macs=model.exit_macs,
        model_id=model_id,
        model_name=model.spec.name,
        extra=extra,
    )


def dataset_summary(dataset) -> dict:
    m = dataset.manifest
    return {k: m[k] for k in ("split", "seeds", "count", "collision_fraction", "image_size")}
