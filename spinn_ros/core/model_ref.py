"""Resolve a model reference (the nodes' ``checkpoint`` parameter) to a model.

``default``            the shipped trained checkpoint
``<path>``             a checkpoint file
``random:<size>:<seed>`` an untrained, seeded model (node-mechanics tests, benchmarks)
"""
from __future__ import annotations

import hashlib

from .model import SPECS, EarlyExitNet, build_model


def is_random_ref(ref: str) -> bool:
    return ref.startswith("random:")


def _random_model(ref: str) -> tuple[EarlyExitNet, str]:
    parts = ref.split(":")
    if len(parts) != 3 or parts[1] not in SPECS or not parts[2].isdigit():
        raise ValueError(f"bad model reference {ref!r}: expected random:<{'|'.join(SPECS)}>:<seed>")
    model = build_model(parts[1], seed=int(parts[2]))
    return model, "random-" + hashlib.sha256(ref.encode()).hexdigest()[:12]


def load_model(ref: str) -> tuple[EarlyExitNet, str]:
    """(model in eval mode, model id) for a reference; ValueError/FileNotFoundError naming the problem."""
    if is_random_ref(ref):
        return _random_model(ref)
    from .checkpoint import checkpoint_path, load_checkpoint

    model, meta = load_checkpoint(checkpoint_path(ref))
    return model, meta["model_id"]
