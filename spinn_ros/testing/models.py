"""Stand-in models and the model run in pieces: what the codec and model tests and the codec
benchmark compare the wire against (a full-precision reference pass, tails, SPINN's exit rule
vectorised, the wire round trip)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core import codec
from ..core.codec import Codec, Dtype
from ..core.model import EarlyExitNet, build_model, decode_exit
from ..core.preprocess import to_model_input
from .frames import labelled_frames


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
    frames, labels = labelled_frames(calibration_frames, net.spec.input_size, seed=10_000 + seed)
    calibrate_random(net, model_input(frames, net), labels)
    return net, f"random-{size}-seed{seed}"


def load_model(size: str | None, seed: int, checkpoint: str | None) -> tuple[EarlyExitNet, str]:
    """(model, model id): the trained checkpoint when given, else :func:`stand_in_model`."""
    if checkpoint:
        from ..core.checkpoint import load_checkpoint

        net, meta = load_checkpoint(checkpoint)
        return net, meta["model_id"]
    return stand_in_model(size, seed)


def model_input(frames: np.ndarray, net: EarlyExitNet) -> torch.Tensor:
    return to_model_input(frames, net.spec.input_size)


def as_rgb8(x: torch.Tensor) -> np.ndarray:
    """Model input (B, 3, S, S) in [0, 1] -> the (B, S, S, 3) rgb8 frames a drone would
    send for the cloud-only baseline (exactly the frames, when they were S x S)."""
    return codec.input_as_frames(x)


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
