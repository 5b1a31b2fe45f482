"""Model checkpoints: spec + weights + metadata, readable with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of strings, numbers, lists and tensors (nothing to
unpickle but data). ``model_id`` is a stable hash of the spec and every weight: the
offload wire format carries it, so a cloud holding a different model rejects frames.

The shipped default lives inside the package (``spinn_ros/models/``), so it is found
the same way from a checkout and after ``pip install .``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .model import SPECS, EarlyExitNet, ModelSpec, build_model

FORMAT = "spinn-checkpoint"
VERSION = 1
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = "small"
CALIBRATION_SUFFIX = ".calib.json"
TEMPERATURE_KEY = ".temperature"     # exit heads' calibration buffer (core/model.py ExitHead)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    pass


def default_checkpoint_path(name: str = DEFAULT_MODEL) -> Path:
    """The shipped checkpoint for a model size (only "small" is shipped)."""
    return MODELS_DIR / f"{name}.pt"


def checkpoint_path(ref) -> Path:
    """A command's ``--checkpoint``: ``default`` is the shipped model, anything else a path."""
    return default_checkpoint_path() if str(ref) == "default" else Path(ref)


def calibration_path(checkpoint_path) -> Path:
    """Where a checkpoint's calibration lives: beside it, ``<stem>.calib.json``."""
    p = Path(checkpoint_path)
    return p.with_name(p.stem + CALIBRATION_SUFFIX)


def model_id(model: EarlyExitNet) -> str:
    """16 hex digits of SHA-256 over the spec (canonical JSON) and every state tensor."""
    h = hashlib.sha256(json.dumps(model.spec.to_dict(), sort_keys=True).encode())
    for key, t in sorted(model.state_dict().items()):
        if _uncalibrated(key, t):
            continue     # a checkpoint from before exit temperatures keeps its id
        t = t.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _uncalibrated(key: str, t) -> bool:
    return key.endswith(TEMPERATURE_KEY) and float(t) == 1.0


def with_default_temperatures(model: EarlyExitNet, state: dict) -> dict:
    """``state`` plus temperature 1 (uncalibrated) for exits saved before temperatures existed."""
    missing = {k: torch.ones(()) for k in model.state_dict() if k.endswith(TEMPERATURE_KEY) and k not in state}
    return {**state, **missing}


def save_checkpoint(path, model: EarlyExitNet, meta: dict | None = None) -> str:
    """Write ``model`` (and JSON-able ``meta``) atomically; returns its model id."""
    path = Path(path)
    mid = model_id(model)
    # plain JSON types only: torch.load(weights_only=True) refuses anything else (e.g. TorchVersion)
    meta = json.loads(json.dumps(meta or {}))
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_id": mid,
        "spec": model.spec.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return mid


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointNotFound(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip, pickle or unsafe-content errors: not something we can use
        if "Unsupported global" in str(e):
            reason = "holds objects other than tensors and plain data (refused, not a spinn checkpoint)"
        else:
            reason = f"corrupt or not a torch file ({type(e).__name__})"
        raise CheckpointError(f"checkpoint {path}: {reason}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a spinn checkpoint (no format={FORMAT!r} marker)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: version {payload.get('version')!r}, this code reads version {VERSION}")
    missing = [k for k in ("model_id", "spec", "state_dict", "meta") if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing {', '.join(missing)}")
    return payload


def _resolve_spec(spec: ModelSpec | str | None) -> ModelSpec | None:
    if isinstance(spec, str):
        if spec not in SPECS:
            raise ValueError(f"unknown model size {spec!r}; choose one of {sorted(SPECS)}")
        return SPECS[spec]
    return spec


def load_checkpoint(path=None, expected_spec: ModelSpec | str | None = None) -> tuple[EarlyExitNet, dict]:
    """Load ``path`` (default: the shipped model) -> (model in eval mode, meta).

    ``meta`` holds the saved metadata plus ``model_id``, ``spec`` and ``path``.
    ``expected_spec`` (a spec or a size name) makes a different architecture an error.
    """
    path = Path(path) if path is not None else default_checkpoint_path()
    payload = _read(path)
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: invalid model spec ({e})") from e
    want = _resolve_spec(expected_spec)
    if want is not None and want != spec:
        raise CheckpointError(f"checkpoint {path}: holds model spec {spec.name!r} that differs from the expected {want.name!r}")
    model = build_model(spec)
    try:
        model.load_state_dict(with_default_temperatures(model, payload["state_dict"]), strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path}: weights do not match its spec {spec.name!r} ({str(e)[:300]})") from e
    mid = model_id(model)
    if mid != payload["model_id"]:
        raise CheckpointError(f"checkpoint {path}: weights hash to {mid}, file says {payload['model_id']} (corrupt or edited)")
    meta = dict(payload["meta"], model_id=mid, spec=spec.to_dict(), path=str(path))
    return model.eval(), meta
