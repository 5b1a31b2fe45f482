"""How long a camera frame waits in the drone's one-frame mailbox, under a periodic camera.

The drone node keeps only the newest frame (KEEP_LAST 1, core/frame_slot.py) and takes it as
soon as it is free. With a camera of period ``T``, a frame taken ``phase`` ms after it arrived
and keeping the drone busy ``b`` ms leaves the drone free ``phase + b`` ms after that arrival:

* before the next frame arrives (``phase + b < T``): the drone idles, the next frame waits 0;
* else the newest frame arrived ``(phase + b) mod T`` ago: that is its wait (older ones were
  replaced), and ``floor((phase + b) / T)`` camera periods went by per answered frame.

So the wait is a Markov chain over the phase, driven by which path (device exit, offload)
each frame takes. The wait is *not* the previous frame's overrun ``b mod T`` alone: the phase
carries over. A drone that always overruns rotates its phase by ``b mod T`` per frame and its
waits spread evenly over ``[0, T)`` (mean ``T/2``, p95 ``0.95 T``) whatever ``b``; one that
never overruns never waits; mixed paths need the chain, solved on a grid of phases here.
Pure numpy; docs/scheduler.md has the derivation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the camera period is cut into this many phase steps (9 phases, 0 and T included)
PHASE_STEPS = 8


@dataclass(frozen=True)
class MailboxWaits:
    """``values`` (P,) ms; ``weights`` (..., P) the stationary share of frames waiting each value;
    ``periods_per_frame`` (...,) camera periods per processed frame (>= 1: the rest are replaced);
    ``interval_cv2`` (...,) the squared coefficient of variation of the time between processed
    frames (0: as regular as the camera)."""
    values: np.ndarray
    weights: np.ndarray
    periods_per_frame: np.ndarray
    interval_cv2: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.weights @ self.values


def mailbox_waits(frame_rate_hz: float, busy_ms: np.ndarray, shares: np.ndarray,
                  steps: int = PHASE_STEPS) -> MailboxWaits:
    """The wait's stationary distribution per plan: ``busy_ms`` (..., J) how long each path keeps
    the drone busy, ``shares`` (..., J) how often frames take it (normalised per plan; a plan
    with no share never waits)."""
    period = 1e3 / frame_rate_hz
    busy_ms, shares = np.broadcast_arrays(np.asarray(busy_ms, float), np.asarray(shares, float))
    lead = busy_ms.shape[:-1]
    b, w = busy_ms.reshape(-1, busy_ms.shape[-1]), shares.reshape(-1, shares.shape[-1])
    total = w.sum(-1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)

    grid = np.arange(steps + 1) * (period / steps)
    live, short = w > 0, b < period
    never = ~(live & ~short).any(-1)                 # no path overruns: the phase stays 0
    always = ~(live & short).any(-1) & ~never        # every path overruns: the phase rotates, evenly spread
    mixed = ~(never | always)
    probs = np.zeros((len(b), steps + 1))
    probs[never, 0] = 1.0
    probs[always] = _even(steps)
    # camera periods per processed frame, first and second moments; with the phase U ~ U[0, 1) and
    # c = b/T = n + f: floor(U + c) = n + [U >= 1 - f], so E = c and E[^2] = n^2 + 2nf + f
    periods, periods_sq = np.ones(len(b)), np.ones(len(b))
    c = b[always] / period
    n, f = np.floor(c), c - np.floor(c)
    periods[always] = (w[always] * c).sum(-1)
    periods_sq[always] = (w[always] * (n * n + 2 * n * f + f)).sum(-1)
    if mixed.any():
        probs[mixed], periods[mixed], periods_sq[mixed] = _solve_mixed(period, grid, b[mixed], w[mixed])
    cv2 = np.maximum(periods_sq / periods**2 - 1.0, 0.0)
    return MailboxWaits(grid, probs.reshape(*lead, steps + 1), periods.reshape(lead), cv2.reshape(lead))


def _even(steps: int) -> np.ndarray:
    """A phase spread evenly over [0, T) on the grid (linear shares: the mean stays T/2)."""
    p = np.full(steps + 1, 1.0 / steps)
    p[[0, -1]] = 0.5 / steps
    return p


def _solve_mixed(period: float, grid: np.ndarray, b: np.ndarray, w: np.ndarray):
    """For plans with paths on both sides of the period: (stationary phase distribution (n, P),
    camera periods per frame (n,), their square's mean (n,)), from the transition matrix on the
    grid (a phase landing between two grid points splits between them, which keeps its mean)."""
    n, size, h = len(b), len(grid), grid[1]
    x = grid[None, :, None] + b[:, None, :]                               # (n, P, J): free again at
    wraps, laps = x >= period, np.floor(x / period)                       # camera periods gone by
    y = np.where(wraps, x - period * laps, 0.0) / h                     # the next frame's phase, in steps
    lo = np.minimum(np.floor(y).astype(np.int64), size - 1)
    frac = y - lo
    hi = np.minimum(lo + 1, size - 1)
    row = (np.arange(n)[:, None, None] * size + np.arange(size)[None, :, None]) * size
    ww = np.broadcast_to(w[:, None, :], x.shape)
    trans = (np.bincount((row + lo).ravel(), (ww * (1 - frac)).ravel(), minlength=n * size * size)
             + np.bincount((row + hi).ravel(), (ww * frac).ravel(), minlength=n * size * size)).reshape(n, size, size)

    # the stationary distribution: trans^T p = p, sum p = 1. Unique: a path shorter than the period
    # lowers any phase (or idles to 0), so every phase reaches 0 (power iteration would crawl on
    # chains where it is rare: the phase then drifts a step per frame)
    a = np.swapaxes(trans, 1, 2) - np.eye(size)
    a[:, -1, :] = 1.0
    rhs = np.zeros((n, size, 1))
    rhs[:, -1] = 1.0
    p = np.clip(np.linalg.solve(a, rhs)[..., 0], 0.0, None)
    advance = np.where(wraps, laps, 1.0)
    return p, np.einsum("np,npj,nj->n", p, advance, w), np.einsum("np,npj,nj->n", p, advance**2, w)
