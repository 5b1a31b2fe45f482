"""ONNX files of a model: one per stage and one per exit head, with a manifest (``spinn export``: spinn_ros/tools/export.py).

Why per stage and per exit, not one file per split-aware segment: the monitor moves the
split and the threshold at run time, and a frame leaves at whichever exit is confident
first, so the executor needs every stage and every exit separately anyway (segments
would need one file per (split, exit) pair, N x E of them, all holding the same weights).
One file per part is N + E small graphs that serve every split, every threshold and both
sides (drone head, cloud tail); the profiles already time exactly these parts.

Every file takes a dynamic batch axis (the cloud batches tails), is exported with the
classic TorchScript exporter at opset 17 (self-contained files: no ``.onnx.data`` beside
them, no onnxscript) and passes ``onnx.checker`` (full check, shape inference included).
The export is deterministic: the same checkpoint gives byte-identical files, whose
SHA-256 the manifest records with the model id; a directory whose manifest names another
model, or whose files do not hash to the manifest, is not used.

    spinn export [--checkpoint default] [--out DIR]

The default directory is the per-user cache, ``$SPINN_CACHE_DIR`` or
``$XDG_CACHE_HOME/spinn_ros`` (``~/.cache/spinn_ros``), under ``onnx/<model_id>/``: where
the ``onnxruntime`` backend looks, and exports to on first use.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

FORMAT = "spinn-onnx"
VERSION = 1
OPSET = 17
MANIFEST = "manifest.json"
INPUT, OUTPUT = "x", "y"


class ExportError(ValueError):
    """An export directory that cannot be used; the message names it and the problem."""


def cache_root() -> Path:
    """Per-user cache of derived files (never inside the package: it may be read-only)."""
    if os.environ.get("SPINN_CACHE_DIR"):
        return Path(os.environ["SPINN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spinn_ros"


def default_export_dir(model_id: str) -> Path:
    return cache_root() / "onnx" / model_id


def stage_file(stage: int) -> str:
    return f"stage{stage}.onnx"


def exit_file(exit_index: int) -> str:
    return f"exit{exit_index}.onnx"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export_part(module, in_shape, path: Path) -> None:
    import onnx
    import torch

    with warnings.catch_warnings():      # the classic exporter's deprecation notice: it is chosen on purpose
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *in_shape),), str(path), input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    onnx.checker.check_model(str(path), full_check=True)


def _parts(model) -> list[tuple[str, str, object, tuple]]:
    """(kind, file, module, input shape) of every stage and exit head."""
    stages = [("stage", stage_file(k), model.stages[k], model.stage_shape(k - 1)) for k in range(model.num_stages)]
    exits = [("exit", exit_file(e), model.exits[e], model.stage_shape(s)) for e, s in enumerate(model.exit_stages)]
    return stages + exits


def export_model(model, model_id: str, out_dir, progress: Callable[[str], None] | None = None) -> dict:
    """Write every part and, last, the manifest into ``out_dir`` (replaced as a whole); returns the manifest.

    The files are written into a temporary sibling directory that then takes the final
    name, so a reader never sees half an export (two processes exporting at once: the
    first to finish wins, the other's copy is dropped).
    """
    import onnx
    import torch

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o755)                     # mkdtemp makes it private; an export is meant to be read and copied
    try:
        entries = []
        model.eval()
        for i, (kind, name, module, shape) in enumerate(_parts(model)):
            if progress:
                progress(f"[{i + 1}/{model.num_stages + model.num_exits}] {kind} {name}")
            _export_part(module, shape, tmp / name)
            entries.append({"kind": kind, "file": name, "input_shape": list(shape), "sha256": _sha256(tmp / name)})
        manifest = {
            "format": FORMAT, "version": VERSION, "model_id": model_id, "model_name": model.spec.name,
            "spec": model.spec.to_dict(), "opset": OPSET, "input": INPUT, "output": OUTPUT,
            "num_stages": model.num_stages, "exit_stages": list(model.exit_stages),
            "stages": [e for e in entries if e["kind"] == "stage"], "exits": [e for e in entries if e["kind"] == "exit"],
            "exporter": {"torch": torch.__version__, "onnx": onnx.__version__, "dynamic_axes": {"0": "batch"}},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _publish(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():   # never delete someone else's files
            raise ExportError(f"{out_dir}: exists and is not an export (no {MANIFEST}); choose another --out")
        shutil.rmtree(out_dir)
    try:
        tmp.rename(out_dir)
    except OSError:
        if not (out_dir / MANIFEST).is_file():   # not another process's finished export: a real failure
            raise


def load_manifest(out_dir, expected_model_id: str) -> dict:
    """The manifest of a complete export of ``expected_model_id`` in ``out_dir``; ExportError otherwise."""
    out_dir = Path(out_dir)
    path = out_dir / MANIFEST
    if not path.is_file():
        raise ExportError(f"{out_dir}: no {MANIFEST} (run 'spinn export')")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: unreadable ({exc})") from exc
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ExportError(f"{path}: not a {FORMAT} manifest of version {VERSION}")
    if manifest.get("model_id") != expected_model_id:
        raise ExportError(f"{path}: exported from model {manifest.get('model_id')}, not {expected_model_id} "
                          "(run 'spinn export' for this checkpoint)")
    for entry in manifest["stages"] + manifest["exits"]:
        f = out_dir / entry["file"]
        if not f.is_file() or _sha256(f) != entry["sha256"]:
            raise ExportError(f"{f}: missing or not the file the manifest lists (re-run 'spinn export')")
    return manifest


def ensure_exported(model, model_id: str, out_dir=None, log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """(directory, manifest) of this model's ONNX files, exporting them first when missing or stale."""
    out_dir = Path(out_dir) if out_dir else default_export_dir(model_id)
    try:
        return out_dir, load_manifest(out_dir, model_id)
    except ExportError as exc:
        log(f"exporting model {model_id} to ONNX in {out_dir} ({exc})")
    return out_dir, export_model(model, model_id, out_dir)
