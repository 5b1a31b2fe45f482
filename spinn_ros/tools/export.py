"""``spinn export``: every stage and exit head of a model to ONNX, with a manifest tied to the
model id (the format and the export itself: spinn_ros/core/onnx_export.py, which the
onnxruntime backend also runs when it finds no export)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..core.model_ref import load_model
from ..core.onnx_export import MANIFEST, OPSET, ExportError, default_export_dir, export_model


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spinn export",
        description="Export every stage and exit head of a model to ONNX (dynamic batch, opset "
                    f"{OPSET}, checked with onnx.checker) with a manifest tied to the model id.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--checkpoint", default="default", help="'default', a checkpoint path, or random:<size>:<seed>")
    ap.add_argument("--out", type=Path, default=None,
                    help="output directory (default: <cache>/onnx/<model_id>, where the onnxruntime backend looks)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    try:
        model, model_id = load_model(args.checkpoint)
    except (OSError, ValueError) as exc:
        print(f"spinn export: {exc}", file=sys.stderr)
        return 2
    out = args.out or default_export_dir(model_id)
    say(f"exporting model {model_id} ({model.spec.name}: {model.num_stages} stages, {model.num_exits} exits) to {out}")
    t0 = time.perf_counter()
    try:
        manifest = export_model(model, model_id, out, progress=say)
    except (OSError, ExportError) as exc:
        print(f"spinn export: {exc}", file=sys.stderr)
        return 1
    say(f"wrote {len(manifest['stages']) + len(manifest['exits'])} ONNX files + {MANIFEST} in "
        f"{time.perf_counter() - t0:.1f} s (opset {OPSET}, dynamic batch, onnx.checker passed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
