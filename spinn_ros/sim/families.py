"""Scene families beyond the legacy four: thin and thick poles, overhangs, clutter, large
surfaces, and the two held out of training (composite shapes, gates with openings).

Every family puts obstacles *on the straight line to the goal*, so a course cannot be
flown without seeing and avoiding them. Everything derives from the course seed.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from .world import Course, CourseParams, Obstacle, _fits, _random_color

Parts = list[Obstacle]


def _pillar(x, y, r, h, color, base=0.0, group=-1) -> Obstacle:
    return Obstacle("pillar", (float(x), float(y)), (float(r), float(r), float(h)), 0.0, color, float(base), group)


def _box(x, y, sx, sy, h, yaw, color, base=0.0, group=-1) -> Obstacle:
    return Obstacle("box", (float(x), float(y)), (float(sx), float(sy), float(h)), float(yaw), color, float(base), group)


def _along(x, y, yaw, d) -> tuple[float, float]:
    """The point ``d`` metres from (x, y) along the local y axis of a thing turned by ``yaw``."""
    return x - math.sin(yaw) * d, y + math.cos(yaw) * d


# ---------------------------------------------------------------------------------
# Obstacles of each family: make(rng, x, y, group) -> parts
# ---------------------------------------------------------------------------------


def _pole(rng, x, y, group) -> Parts:
    u = rng.random()
    r = rng.uniform(0.02, 0.07) if u < 0.45 else rng.uniform(0.07, 0.25) if u < 0.8 else rng.uniform(0.4, 0.9)
    return [_pillar(x, y, r, rng.uniform(1.8, 4.0), _random_color(rng))]


def _beam_on_posts(rng, x, y, group, base=None) -> Parts:
    yaw, length = rng.uniform(0, math.pi), rng.uniform(1.5, 5.0)
    base = rng.uniform(0.3, 2.6) if base is None else base
    thick, post_r, color = rng.uniform(0.1, 0.4), rng.uniform(0.04, 0.12), _random_color(rng)
    parts = [_box(x, y, rng.uniform(0.1, 0.3), length, thick, yaw, color, base, group)]
    for end in (-length / 2, length / 2):
        px, py = _along(x, y, yaw, end)
        parts.append(_pillar(px, py, post_r, base, color, 0.0, group))
    return parts


def _overhang(rng, x, y, group) -> Parts:
    u = rng.random()
    if u < 0.45:
        return _beam_on_posts(rng, x, y, group)
    color = _random_color(rng)
    if u < 0.75:   # a slab hanging from above (a sign, an awning): nothing holds it up in view
        base = rng.uniform(0.7, 2.2)
        return [_box(x, y, rng.uniform(0.1, 0.5), rng.uniform(1.0, 3.0), 4.0 - base, rng.uniform(0, math.pi),
                     color, base, group)]
    # a table: a top on four thin legs
    top, sx, sy, yaw = rng.uniform(0.6, 1.4), rng.uniform(0.8, 2.0), rng.uniform(0.6, 1.5), rng.uniform(0, math.pi)
    parts = [_box(x, y, sx, sy, 0.06, yaw, color, top, group)]
    c, s = math.cos(yaw), math.sin(yaw)
    for lx, ly in ((sx, sy), (sx, -sy), (-sx, sy), (-sx, -sy)):
        lx, ly = 0.42 * lx, 0.42 * ly
        parts.append(_pillar(x + c * lx - s * ly, y + s * lx + c * ly, 0.03, top, color, 0.0, group))
    return parts


def _clutter(rng, x, y, group) -> Parts:
    color = _random_color(rng)
    if rng.random() < 0.4:
        return [_pillar(x, y, rng.uniform(0.05, 0.3), rng.uniform(0.1, 2.2), color)]
    sx, sy, h = rng.uniform(0.1, 0.7), rng.uniform(0.1, 0.7), rng.uniform(0.1, 1.3)
    parts = [_box(x, y, sx, sy, h, rng.uniform(0, math.pi), color, 0.0, group)]
    if rng.random() < 0.4:   # a stack: another box on top
        parts.append(_box(x, y, sx * rng.uniform(0.5, 1.0), sy * rng.uniform(0.5, 1.0), rng.uniform(0.2, 1.0),
                          rng.uniform(0, math.pi), _random_color(rng), h, group))
    return parts


def _slab(rng, x, y, group) -> Parts:
    color = _random_color(rng)
    if rng.random() < 0.4:   # a fence: long, thin, not always tall
        return [_box(x, y, 0.05, rng.uniform(3.0, 8.0), rng.uniform(1.0, 2.5), rng.uniform(0, math.pi), color)]
    return [_box(x, y, rng.uniform(0.2, 1.5), rng.uniform(2.0, 6.0), rng.uniform(2.0, 5.0), rng.uniform(0, math.pi), color)]


def _composite(rng, x, y, group) -> Parts:
    color, yaw = _random_color(rng), rng.uniform(0, math.pi)
    u = rng.random()
    if u < 0.3:   # a mushroom: a stem with a wide cap at or above flight height
        base = rng.uniform(0.8, 2.2)
        cap = rng.uniform(0.4, 1.0)
        return [_pillar(x, y, rng.uniform(0.08, 0.3), base, color, 0.0, group),
                (_pillar(x, y, cap, rng.uniform(0.2, 0.6), color, base, group) if rng.random() < 0.5 else
                 _box(x, y, 2 * cap, 2 * cap, rng.uniform(0.2, 0.6), yaw, color, base, group))]
    h, t, a, b = rng.uniform(1.8, 3.5), rng.uniform(0.2, 0.5), rng.uniform(1.0, 2.5), rng.uniform(1.0, 2.5)
    c, s = math.cos(yaw), math.sin(yaw)

    def part(lx, ly, sx, sy):
        return _box(x + c * lx - s * ly, y + s * lx + c * ly, sx, sy, h, yaw, color, 0.0, group)

    if u < 0.55:   # L
        return [part(0, 0, t, a), part(b / 2 - t / 2, -a / 2 + t / 2, b, t)]
    if u < 0.8:    # T
        return [part(0, 0, t, a), part(b / 2, 0, b, t)]
    return [part(0, -a / 2, b, t), part(0, a / 2, b, t), part(-b / 2 + t / 2, 0, t, a)]   # U


def _gate(rng, x, y, group) -> Parts:
    color, yaw = _random_color(rng), rng.uniform(-0.6, 0.6)   # gates roughly face the course
    u = rng.random()
    if u < 0.4:   # an arch: two posts and a lintel; the opening below it is passable if high enough
        width, top, t = rng.uniform(1.0, 3.0), rng.uniform(1.2, 2.8), rng.uniform(0.15, 0.4)
        parts = [_box(x, y, t, width + 2 * t, rng.uniform(0.2, 0.5), yaw, color, top, group)]
        for side in (-1, 1):
            px, py = _along(x, y, yaw, side * (width / 2 + t / 2))
            parts.append(_box(px, py, t, t, top, yaw, color, 0.0, group))
        return parts
    if u < 0.75:  # a wall with a window: passable only through the hole
        half, hole_w, hole_h = rng.uniform(1.5, 3.5), rng.uniform(0.8, 2.0), rng.uniform(0.8, 1.6)
        bottom, off, t, h = rng.uniform(0.2, 1.2), rng.uniform(-1.0, 1.0), rng.uniform(0.1, 0.3), rng.uniform(2.8, 4.0)
        off *= max(0.0, half - hole_w / 2 - 0.3)     # the hole stays inside the wall
        lo, hi = off - hole_w / 2, off + hole_w / 2
        parts = []
        for a, b in ((-half, lo), (hi, half)):
            px, py = _along(x, y, yaw, (a + b) / 2)
            parts.append(_box(px, py, t, b - a, h, yaw, color, 0.0, group))
        px, py = _along(x, y, yaw, off)
        parts.append(_box(px, py, t, hole_w, bottom, yaw, color, 0.0, group))
        parts.append(_box(px, py, t, hole_w, h - bottom - hole_h, yaw, color, bottom + hole_h, group))
        return parts
    return _beam_on_posts(rng, x, y, group, base=rng.uniform(0.2, 1.3))   # a hurdle


FAMILIES: dict[str, tuple[Callable, tuple[float, float], float]] = {
    # name: (obstacle maker, density per m^2, min gap between parts of different obstacles)
    "poles": (_pole, (0.05, 0.18), 0.35),
    "overhang": (_overhang, (0.05, 0.1), 0.4),
    "clutter": (_clutter, (0.15, 0.45), 0.25),
    "slabs": (_slab, (0.02, 0.04), 0.6),
    "composite": (_composite, (0.04, 0.08), 0.5),
    "gates": (_gate, (0.02, 0.05), 0.5),
}


def _make(make, rng, x: float, y: float, group: int) -> Parts:
    """One obstacle's parts, all in ``group`` (so they share a texture and count once)."""
    return [dataclasses.replace(part, group=group) for part in make(rng, x, y, group)]


def _try_place(parts: Parts, placed: list[Obstacle], gap: float) -> bool:
    if min(min(part.size) for part in parts) <= 0:
        raise ValueError(f"degenerate obstacle part among {parts}")
    if all(_fits(part, placed, gap) for part in parts):
        placed.extend(parts)
        return True
    return False


def _blockers(rng, p: CourseParams, make, placed: list[Obstacle], gap: float, next_group) -> None:
    """1-3 obstacles straddling the straight line y = 0 between start and goal."""
    n = int(rng.integers(1, 4))
    xs = np.sort(rng.uniform(p.margin + 1.5, p.length - p.margin - 1.5, size=n))
    for x in xs:
        for _ in range(50):
            parts = _make(make, rng, float(x + rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.3, 0.3)), next_group())
            if blocks_line(parts, p.flight_altitude) and _try_place(parts, placed, gap):
                break


def blocks_line(parts: Parts, altitude: float) -> bool:
    """Some part crosses the straight line y = 0 at flight altitude (sampled every 2 cm)."""
    for part in parts:
        r = part.footprint_radius
        for x in np.arange(part.center[0] - r, part.center[0] + r + 0.02, 0.02):
            if part.distance((float(x), 0.0, altitude)) == 0.0:
                return True
    return False


def generate_family(seed: int, kind: str, rng, params: CourseParams) -> Course:
    make, density, gap = FAMILIES[kind]
    p = params
    counter = iter(range(1_000_000))
    placed: list[Obstacle] = []
    _blockers(rng, p, make, placed, gap, lambda: next(counter))
    xmin, xmax, ymin, ymax = p.margin, p.length - p.margin, -p.width / 2, p.width / 2
    target = int(round(rng.uniform(*density) * (xmax - xmin) * (ymax - ymin)))
    groups = len({o.group for o in placed})
    for _ in range(target * 20):
        if groups >= target:
            break
        parts = _make(make, rng, float(rng.uniform(xmin, xmax)), float(rng.uniform(ymin, ymax)), next(counter))
        if _try_place(parts, placed, gap):
            groups += 1
    return Course(seed=int(seed), kind=kind, obstacles=tuple(placed), start=(0.0, 0.0, p.flight_altitude),
                  goal=(p.length, 0.0, p.flight_altitude), bounds=(xmin, xmax, ymin, ymax))
