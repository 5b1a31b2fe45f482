"""Calibrate a checkpoint's exits on the held-out calibration split (``spinn calibrate``).

Writes ``<checkpoint stem>.calib.json`` beside the checkpoint (see
:mod:`spinn_ros.core.calibration` for the schema and the exit policy).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..core.calibration import save_calibration
from ..core.checkpoint import CheckpointError, calibration_path, load_checkpoint
from .common import add_checkpoint_data_args, calibration_from_outputs, check_frames, dataset_summary, exit_outputs, load_split


def calibrate_checkpoint(checkpoint: Path, data: Path, out: Path | None = None, split: str = "calib",
                         progress: bool = True) -> dict:
    """Calibrate ``checkpoint`` on ``data``'s ``split``; writes and returns the calibration dict."""
    model, meta = load_checkpoint(checkpoint)
    dataset = load_split(data, split)
    check_frames(model, dataset.images, f"{split} split")
    outputs = exit_outputs(model, dataset.images, progress=progress)
    calib = calibration_from_outputs(model, meta["model_id"], outputs, dataset,
                                     extra={"calibration_data": dataset_summary(dataset)})
    out = Path(out) if out is not None else calibration_path(checkpoint)
    save_calibration(out, calib)
    final = calib["exits"][-1]
    print(f"wrote {out}: {calib['num_frames']} {split} frames, final-exit accuracy {final['standalone_accuracy']:.4f}")
    return calib


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spinn calibrate",
        description="Measure, for every exit and a grid of confidence thresholds, how many frames leave there and how "
                    "accurate they are; write the versioned calibration file the scheduler reads.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_checkpoint_data_args(ap, "calib", "split to calibrate on (never the test split)")
    ap.add_argument("--out", type=Path, default=None, help="output file (default: beside the checkpoint)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        calibrate_checkpoint(args.checkpoint, args.data, args.out, args.split, progress=not args.quiet)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"spinn calibrate: {e}", file=sys.stderr)
        return 2
    return 0
