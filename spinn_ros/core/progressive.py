"""Staged execution with SPINN's exit policy: the head on the drone, the tail in the cloud.

Policy: exits are tried in depth order; a frame leaves at the first exit whose
top-1 collision softmax reaches the threshold; the final exit always answers.
The head runs stages ``[0, split)``; if none of its exits is confident the frame
needs the tail ``[split, N)``, which applies the same policy to its own exits.
A threshold of :data:`PLAIN_NETWORK` (infinity) is the network without early exits:
the intermediate exit heads are not even run (a finite threshold above 1 runs them,
but none can answer).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .calibration import PLAIN_NETWORK
from .model import EarlyExitNet, decode_exit


@dataclass(frozen=True)
class ExitDecision:
    """One frame's answer from one exit."""

    exit_index: int
    collision_prob: float
    confidence: float
    steering: float
    steering_bin: int


@dataclass
class HeadResult:
    """What the drone knows after running the head on one frame.

    ``final`` is set when the answer needs no cloud (a confident device exit, the
    final exit, or ``offload`` was not allowed). Otherwise ``provisional`` holds the
    deepest device exit's answer (None when the head has no exit) and
    ``activation`` the tensor to offload.
    """

    final: ExitDecision | None
    provisional: ExitDecision | None
    activation: torch.Tensor | None
    compute_s: float
    stages_run: int = 0            # stages [0, stages_run) were computed (their exits too)


def _row(exit_index: int, out, row: int) -> ExitDecision:
    return ExitDecision(
        exit_index=exit_index,
        collision_prob=float(out.collision_prob[row]),
        confidence=float(out.confidence[row]),
        steering=float(out.steering[row]),
        steering_bin=int(out.steering_bin[row]),
    )


def _decision(model: EarlyExitNet, exit_index: int, activation: torch.Tensor) -> ExitDecision:
    return _row(exit_index, decode_exit(model.run_exit(exit_index, activation)), 0)


def _is_final_exit(model: EarlyExitNet, exit_index: int) -> bool:
    return exit_index == model.num_exits - 1


def exit_at(model: EarlyExitNet, stage: int, plain: bool) -> int | None:
    """The exit to evaluate after ``stage``: its exit, unless the plain network skips it."""
    e = model.exit_index_at(stage)
    return None if e is None or (plain and not _is_final_exit(model, e)) else e


@torch.inference_mode()
def run_head(model: EarlyExitNet, x: torch.Tensor, split: int, threshold: float, offload: bool = True) -> HeadResult:
    """Run stages ``[0, split)`` on one frame (batch of 1) with early exits.

    With ``offload=False`` the device must answer alone: the deepest device exit
    answers when no exit was confident, and a head without any exit keeps running
    stages locally until the first exit (so a frame is never left unanswered).
    """
    model.check_split(split)
    model.check_input(x)
    if x.shape[0] != 1:
        raise ValueError(f"run_head takes one frame, got a batch of {x.shape[0]}")
    t0 = time.perf_counter()
    deepest = None
    plain = threshold == PLAIN_NETWORK
    for stage in range(split):
        x = model.run_stage(stage, x)
        e = exit_at(model, stage, plain)
        if e is None:
            continue
        deepest = _decision(model, e, x)
        if deepest.confidence >= threshold or _is_final_exit(model, e):
            return HeadResult(deepest, None, None, time.perf_counter() - t0, stage + 1)
    if offload:
        return HeadResult(None, deepest, x, time.perf_counter() - t0, split)
    if deepest is None:
        deepest = _run_to_first_exit(model, x, split, plain)
    return HeadResult(deepest, None, None, time.perf_counter() - t0, max(split, model.exit_stages[deepest.exit_index] + 1))


@torch.inference_mode()
def run_stages(model: EarlyExitNet, x: torch.Tensor, start: int, stop: int,
               keep: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stages ``[start, stop)`` with no exit head (a plan that sends before its exits run);
    also the output of stage ``keep`` when it is among them (for an exit evaluated later)."""
    kept = None
    for stage in range(start, stop):
        x = model.run_stage(stage, x)
        if stage == keep:
            kept = x
    return x, kept


@torch.inference_mode()
def first_exit_answer(model: EarlyExitNet, x: torch.Tensor, start: int, kept: torch.Tensor | None) -> ExitDecision:
    """The first exit's answer: on ``kept`` (its stage's output, already computed), else from
    ``x``, the output of the stages before ``start``, running on to that exit."""
    if kept is None:
        kept, _ = run_stages(model, x, start, model.exit_stages[0] + 1)
    return _decision(model, 0, kept)


def _run_to_first_exit(model: EarlyExitNet, x: torch.Tensor, start: int, plain: bool) -> ExitDecision:
    for stage in range(start, model.num_stages):
        x = model.run_stage(stage, x)
        e = exit_at(model, stage, plain)
        if e is not None:
            return _decision(model, e, x)
    raise AssertionError("the last stage always has the final exit")


@torch.inference_mode()
def run_tail(model: EarlyExitNet, x: torch.Tensor, split: int, threshold) -> list[ExitDecision]:
    """Complete a batch of offloaded activations from ``split`` with early exits.

    ``threshold`` is one float or one per row (drones in a batch may ask for
    different ones). Each row leaves at its own first confident exit; confident rows
    are removed from the batch so later stages only run on the frames that still need them.
    """
    model.check_split(split)
    if split == model.num_stages:
        raise ValueError("split equals the number of stages: there is no tail to run")
    if split == 0:
        model.check_input(x)
    want = model.split_shape(split)
    if x.dim() != 4 or tuple(x.shape[1:]) != want:
        raise ValueError(f"tail from split {split} expects Bx{'x'.join(map(str, want))}, got {tuple(x.shape)}")
    answers: list[ExitDecision | None] = [None] * x.shape[0]
    pending = torch.arange(x.shape[0])
    thresholds = torch.as_tensor(threshold, dtype=torch.float64).expand(x.shape[0]).clone()  # as the head compares
    for stage in range(split, model.num_stages):
        x = model.run_stage(stage, x)
        e = exit_at(model, stage, plain=bool(torch.isinf(thresholds).all()))
        if e is None:
            continue
        out = decode_exit(model.run_exit(e, x))
        if _is_final_exit(model, e):
            leave = torch.ones_like(out.confidence, dtype=torch.bool)
        else:
            leave = out.confidence.double() >= thresholds
        for row in torch.nonzero(leave).flatten().tolist():
            answers[int(pending[row])] = _row(e, out, row)
        if bool(leave.all()):
            break
        keep = ~leave
        x, pending, thresholds = x[keep], pending[keep], thresholds[keep]
    return answers  # type: ignore[return-value]


def reference_decision(model: EarlyExitNet, x: torch.Tensor, threshold: float) -> ExitDecision:
    """The policy applied to a plain full forward pass: the ground truth for staged runs."""
    with torch.inference_mode():
        outs = model(x)
    for e, raw in enumerate(outs):
        d = decode_exit(raw)
        if float(d.confidence[0]) >= threshold or e == len(outs) - 1:
            return _row(e, d, 0)
    raise AssertionError("unreachable: the final exit always answers")
